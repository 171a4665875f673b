//! Where the Supabase (or plain PostgREST) endpoints live, the project key and the timeouts.

use std::fmt;
use std::time::Duration;

use reqwest::Url;

/// A Supabase project API key (the `anon` key, sent as the `apikey` header). Redacted in
/// `Debug`; it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key text, for the `apikey` header only.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// How long a call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupabaseTimeouts {
    /// Establishing the TCP (and TLS) connection.
    pub connect: Duration,
    /// The whole request, from sending to the last byte of the response.
    pub request: Duration,
}

impl Default for SupabaseTimeouts {
    /// 10 s to connect, 30 s per request.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(30),
        }
    }
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupabaseConfigError {
    /// A URL did not parse, or is not an `http`/`https` URL with a host.
    #[error("invalid {what} URL: {reason}")]
    InvalidUrl {
        /// Which URL (`base`, `auth`, `project`).
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A call needs a URL that was not configured.
    #[error("no {what} URL is configured")]
    Missing {
        /// Which URL.
        what: &'static str,
    },
}

/// Endpoints, key and timeouts of one Supabase project or one plain PostgREST server.
///
/// - `base_url` is the PostgREST root: `https://<project>.supabase.co/rest/v1` on hosted
///   Supabase, `http://127.0.0.1:<port>/` for a plain PostgREST. Table names are appended as
///   path segments, so a trailing slash does not matter.
/// - `api_key`, when set, is sent as the `apikey` header on every call (hosted Supabase's
///   gateway requires it; a plain PostgREST ignores it).
/// - `auth_url` is the project root the token endpoint hangs off
///   (`{auth_url}/auth/v1/token`); only the token refresher needs it.
///
/// `Debug` never shows the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupabaseConfig {
    /// The PostgREST root URL.
    pub base_url: Url,
    /// The project API key, if the deployment needs one.
    pub api_key: Option<ApiKey>,
    /// The project root for Supabase Auth, if tokens are refreshed through it.
    pub auth_url: Option<Url>,
    /// Connect and request timeouts.
    pub timeouts: SupabaseTimeouts,
}

impl SupabaseConfig {
    /// A plain PostgREST server at `base_url`, without key or auth URL.
    pub fn postgrest(base_url: &str) -> Result<Self, SupabaseConfigError> {
        Ok(Self {
            base_url: parse_http_url("base", base_url)?,
            api_key: None,
            auth_url: None,
            timeouts: SupabaseTimeouts::default(),
        })
    }

    /// A hosted Supabase project: `project_url` is `https://<project>.supabase.co`; the REST
    /// root becomes `{project_url}/rest/v1` and the auth URL the project URL itself.
    pub fn hosted(project_url: &str, api_key: ApiKey) -> Result<Self, SupabaseConfigError> {
        let project = parse_http_url("project", project_url)?;
        let mut base_url = project.clone();
        base_url
            .path_segments_mut()
            .map_err(|()| SupabaseConfigError::InvalidUrl {
                what: "project",
                reason: "cannot carry a path".into(),
            })?
            .pop_if_empty()
            .extend(["rest", "v1"]);
        Ok(Self {
            base_url,
            api_key: Some(api_key),
            auth_url: Some(project),
            timeouts: SupabaseTimeouts::default(),
        })
    }

    /// Sets the `apikey` header value.
    pub fn with_api_key(mut self, api_key: ApiKey) -> Self {
        self.api_key = Some(api_key);
        self
    }

    /// Sets the auth URL (the project root that serves `/auth/v1/token`).
    pub fn with_auth_url(mut self, auth_url: &str) -> Result<Self, SupabaseConfigError> {
        self.auth_url = Some(parse_http_url("auth", auth_url)?);
        Ok(self)
    }

    /// Sets the timeouts.
    pub fn with_timeouts(mut self, timeouts: SupabaseTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// `{base_url}/{table}`.
    pub(super) fn table_url(&self, table: &str) -> Result<Url, SupabaseConfigError> {
        append_segments("base", &self.base_url, &[table])
    }

    /// `{auth_url}/auth/v1/token`.
    pub(super) fn token_url(&self) -> Result<Url, SupabaseConfigError> {
        let auth = self
            .auth_url
            .as_ref()
            .ok_or(SupabaseConfigError::Missing { what: "auth" })?;
        append_segments("auth", auth, &["auth", "v1", "token"])
    }
}

fn parse_http_url(what: &'static str, text: &str) -> Result<Url, SupabaseConfigError> {
    let url = Url::parse(text).map_err(|e| SupabaseConfigError::InvalidUrl {
        what,
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(SupabaseConfigError::InvalidUrl {
            what,
            reason: "expected an http or https URL with a host".into(),
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(SupabaseConfigError::InvalidUrl {
            what,
            reason: "must not carry a query or a fragment".into(),
        });
    }
    Ok(url)
}

fn append_segments(
    what: &'static str,
    base: &Url,
    segments: &[&str],
) -> Result<Url, SupabaseConfigError> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| SupabaseConfigError::InvalidUrl {
            what,
            reason: "cannot carry a path".into(),
        })?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_urls_ignore_a_trailing_slash() {
        for base in ["http://127.0.0.1:3000", "http://127.0.0.1:3000/"] {
            let config = SupabaseConfig::postgrest(base).expect("valid");
            assert_eq!(
                config.table_url("messages").expect("url").as_str(),
                "http://127.0.0.1:3000/messages"
            );
        }
    }

    #[test]
    fn hosted_projects_serve_rest_under_rest_v1_and_auth_at_the_root() {
        let config =
            SupabaseConfig::hosted("https://abc.supabase.co", ApiKey::new("k")).expect("valid");
        assert_eq!(
            config.table_url("sessions").expect("url").as_str(),
            "https://abc.supabase.co/rest/v1/sessions"
        );
        assert_eq!(
            config.token_url().expect("url").as_str(),
            "https://abc.supabase.co/auth/v1/token"
        );
    }

    #[test]
    fn token_url_requires_an_auth_url() {
        let config = SupabaseConfig::postgrest("http://127.0.0.1:1/").expect("valid");
        assert_eq!(
            config.token_url(),
            Err(SupabaseConfigError::Missing { what: "auth" })
        );
    }

    #[test]
    fn non_http_urls_are_refused() {
        for bad in [
            "not a url",
            "file:///tmp/x",
            "http://h/?q=1",
            "mailto:a@b.c",
        ] {
            assert!(
                matches!(
                    SupabaseConfig::postgrest(bad),
                    Err(SupabaseConfigError::InvalidUrl { what: "base", .. })
                ),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn debug_hides_the_api_key() {
        let config = SupabaseConfig::hosted("https://abc.supabase.co", ApiKey::new("sekrit-key"))
            .expect("valid");
        let text = format!("{config:?}");
        assert!(!text.contains("sekrit-key"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}
