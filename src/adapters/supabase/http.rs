//! The HTTP layer shared by the PostgREST client and the token refresher: one `reqwest`
//! client, request execution, and the one place where failures are classified.
//!
//! # Classification
//!
//! Every failed call becomes one private [`Failure`], which maps into the port errors:
//!
//! | what happened                                   | `CloudError`      | `AuthError`   |
//! |-------------------------------------------------|-------------------|---------------|
//! | 401, or code `PGRST301`/`PGRST302`/`PGRST303`    | `Unauthenticated` | `Rejected`    |
//! | 408, 429, 5xx (with `Retry-After` seconds)       | `Transient`       | `Unavailable` |
//! | timeout                                          | `Transient` (0)   | `Unavailable` |
//! | connection refused or reset, DNS failure         | `Network`         | `Unavailable` |
//! | 400, 403                                         | `Permanent`       | `Rejected`    |
//! | any other non-success status                     | `Permanent`       | `Backend`     |
//! | undecodable success body, bad request building   | `Backend`         | `Backend`     |
//!
//! # What an error may say
//!
//! Only the status, the server's error `code`, its `message` (and `hint`), cut to a bounded
//! length, and with every token the request carried blanked out. PostgREST's `details` is
//! dropped on purpose: for some constraint errors it quotes the failing row, which would put
//! request content (ciphertext, key material) into logs. Non-JSON error bodies (a proxy's
//! HTML page) are reported by size only. Transport errors lose their URL.

use std::error::Error as StdError;
use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_RANGE, RETRY_AFTER};
use reqwest::{Client, Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::config::{SupabaseConfig, SupabaseConfigError};
use crate::ports::auth::AuthError;
use crate::ports::cloud::CloudError;

/// Longest server message kept in an error, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// PostgREST codes that mean "the JWT was refused": refresh once, then retry.
const JWT_CODES: [&str; 3] = ["PGRST301", "PGRST302", "PGRST303"];

/// Why one HTTP call failed, before it is mapped into a port error.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    /// The server answered with a non-success status.
    #[error("HTTP {status}, code {code:?}: {message}", code = body.code, message = body.message)]
    Status {
        /// The HTTP status.
        status: u16,
        /// `Retry-After`, in whole seconds, when the server sent one.
        retry_after: Option<Duration>,
        /// The parsed (and redacted) error body.
        body: ErrorBody,
    },
    /// The connect or request timeout elapsed.
    #[error("the request timed out")]
    Timeout,
    /// No answer: connection refused or reset, DNS failure.
    #[error("{0}")]
    Network(String),
    /// A success response whose body did not decode.
    #[error("undecodable response body: {0}")]
    Decode(String),
    /// The request could not be built or encoded.
    #[error("could not build the request: {0}")]
    Build(String),
    /// The configuration cannot serve this call.
    #[error(transparent)]
    Config(#[from] SupabaseConfigError),
}

/// The useful part of an error body: PostgREST's `{code, details, hint, message}` or Supabase
/// Auth's `{error, error_description}` / `{error_code, msg}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ErrorBody {
    /// The machine-readable code (`PGRST301`, `42501`, `invalid_grant`, ...).
    pub code: Option<String>,
    /// A human-readable message, bounded and redacted.
    pub message: String,
}

impl ErrorBody {
    /// Parses an error body; anything not JSON is described by its size only.
    pub fn parse(status: u16, bytes: &[u8]) -> Self {
        let fallback = || {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("unknown status");
            format!("{reason} (no JSON error body, {} bytes)", bytes.len())
        };
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(bytes) else {
            return Self {
                code: None,
                message: fallback(),
            };
        };
        let text = |key: &str| match map.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        let code = text("code")
            .or_else(|| text("error_code"))
            .or_else(|| text("error"));
        let mut message = text("message")
            .or_else(|| text("msg"))
            .or_else(|| text("error_description"))
            .or_else(|| text("error"))
            .unwrap_or_else(fallback);
        if let Some(hint) = text("hint") {
            message = format!("{message} (hint: {hint})");
        }
        Self { code, message }
    }

    /// Blanks out every secret (and every dot-separated part of it, for JWTs) and bounds the
    /// message length.
    fn redact(mut self, secrets: &[&str]) -> Self {
        for secret in secrets {
            self.message = redact_text(&self.message, secret);
            self.code = self.code.map(|c| redact_text(&c, secret));
        }
        if self.message.chars().count() > MAX_MESSAGE_CHARS {
            self.message = self.message.chars().take(MAX_MESSAGE_CHARS).collect();
            self.message.push('…');
        }
        self
    }
}

fn redact_text(text: &str, secret: &str) -> String {
    let mut out = text.to_owned();
    if secret.is_empty() {
        return out;
    }
    out = out.replace(secret, "<redacted>");
    for part in secret.split('.').filter(|p| p.len() >= 8) {
        out = out.replace(part, "<redacted>");
    }
    out
}

/// Parses `Retry-After` given in seconds; the HTTP-date form is ignored.
pub(super) fn parse_retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let seconds: u64 = value?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

/// Classifies a transport-level `reqwest` failure, dropping the URL.
fn transport_failure(error: reqwest::Error) -> Failure {
    let error = error.without_url();
    if error.is_timeout() {
        Failure::Timeout
    } else if error.is_builder() {
        Failure::Build(chain(&error))
    } else if error.is_decode() {
        Failure::Decode(chain(&error))
    } else {
        Failure::Network(chain(&error))
    }
}

/// An error and its sources, joined with `: `.
fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

impl From<Failure> for CloudError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Status {
                status,
                retry_after,
                body,
            } => {
                let jwt_code = body
                    .code
                    .as_deref()
                    .is_some_and(|code| JWT_CODES.contains(&code));
                if status == 401 || jwt_code {
                    CloudError::Unauthenticated {
                        code: body.code,
                        message: body.message,
                    }
                } else if is_transient_status(status) {
                    CloudError::Transient {
                        status,
                        code: body.code,
                        message: body.message,
                        retry_after,
                    }
                } else {
                    CloudError::Permanent {
                        status,
                        code: body.code,
                        message: body.message,
                    }
                }
            }
            Failure::Timeout => CloudError::Transient {
                status: 0,
                code: None,
                message: "the request timed out".into(),
                retry_after: None,
            },
            Failure::Network(message) => CloudError::Network(message),
            other @ (Failure::Decode(_) | Failure::Build(_) | Failure::Config(_)) => {
                CloudError::Backend(Box::new(other))
            }
        }
    }
}

impl From<Failure> for AuthError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Status { status, body, .. } => match status {
                400 | 401 | 403 => AuthError::Rejected(describe(status, &body)),
                s if is_transient_status(s) => AuthError::Unavailable(describe(status, &body)),
                _ => AuthError::Backend(Box::new(Failure::Status {
                    status,
                    retry_after: None,
                    body,
                })),
            },
            Failure::Timeout => AuthError::Unavailable("the request timed out".into()),
            Failure::Network(message) => AuthError::Unavailable(message),
            other @ (Failure::Decode(_) | Failure::Build(_) | Failure::Config(_)) => {
                AuthError::Backend(Box::new(other))
            }
        }
    }
}

fn describe(status: u16, body: &ErrorBody) -> String {
    match &body.code {
        Some(code) => format!("HTTP {status} ({code}): {}", body.message),
        None => format!("HTTP {status}: {}", body.message),
    }
}

fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// One configured `reqwest` client (rustls, timeouts) plus the project key.
#[derive(Clone)]
pub(super) struct HttpClient {
    client: Client,
    config: SupabaseConfig,
    /// The `apikey` header value, marked sensitive.
    api_key: Option<HeaderValue>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Builds the client. A key that is not a valid header value is refused here, not
    /// silently left out of requests later.
    pub fn new(config: SupabaseConfig) -> Result<Self, Failure> {
        let api_key = match &config.api_key {
            Some(key) => {
                let mut value = HeaderValue::from_str(key.expose_secret()).map_err(|_| {
                    Failure::Build("the API key is not a valid header value".into())
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let client = Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.timeouts.connect)
            .timeout(config.timeouts.request)
            .build()
            .map_err(|e| Failure::Build(chain(&e.without_url())))?;
        Ok(Self {
            client,
            config,
            api_key,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SupabaseConfig {
        &self.config
    }

    /// A request to `url` with the `apikey` header (when configured) and, when given, the
    /// bearer token. Both headers are marked sensitive.
    pub fn request(&self, method: Method, url: Url, bearer: Option<&str>) -> RequestBuilder {
        let mut builder = self.client.request(method, url);
        if let Some(key) = &self.api_key {
            builder = builder.header("apikey", key.clone());
        }
        if let Some(token) = bearer {
            builder = builder.bearer_auth(token);
        }
        builder
    }

    /// Sends `request` and returns the body of a success response; any other outcome is
    /// a classified [`Failure`] in which none of `secrets` appears.
    pub async fn execute(
        &self,
        request: RequestBuilder,
        secrets: &[&str],
    ) -> Result<Answer, Failure> {
        let response = request.send().await.map_err(transport_failure)?;
        let status = response.status();
        let retry_after = parse_retry_after(response.headers().get(RETRY_AFTER));
        let content_range = response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.map_err(transport_failure)?;
        if status.is_success() {
            return Ok(Answer {
                body: body.to_vec(),
                content_range,
            });
        }
        let mut secrets = secrets.to_vec();
        if let Some(key) = &self.config.api_key {
            secrets.push(key.expose_secret());
        }
        Err(Failure::Status {
            status: status.as_u16(),
            retry_after,
            body: ErrorBody::parse(status.as_u16(), &body).redact(&secrets),
        })
    }
}

/// A success response.
#[derive(Debug)]
pub(super) struct Answer {
    /// The body.
    pub body: Vec<u8>,
    /// The `Content-Range` header, if any.
    pub content_range: Option<String>,
}

impl Answer {
    /// The total of a `Content-Range` such as `0-0/1` or `*/0`: with `Prefer: count=exact`,
    /// the number of rows the request matched (for a PATCH, the rows it changed).
    pub fn total_count(&self) -> Result<u64, Failure> {
        self.content_range
            .as_deref()
            .and_then(|range| range.rsplit_once('/'))
            .and_then(|(_, total)| total.trim().parse().ok())
            .ok_or_else(|| Failure::Decode("no row count in Content-Range".into()))
    }
}

/// Decodes a success body as JSON; the error never quotes the body.
pub(super) fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        // serde_json's own message may quote the offending value (a row's content).
        Failure::Decode(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// Serialises a request body; the error never quotes the value.
pub(super) fn encode_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Failure> {
    serde_json::to_vec(value)
        .map_err(|e| Failure::Build(format!("cannot encode the body ({:?})", e.classify())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::backoff::RetryClass;

    fn status(status: u16, body: &str) -> Failure {
        Failure::Status {
            status,
            retry_after: None,
            body: ErrorBody::parse(status, body.as_bytes()),
        }
    }

    #[test]
    fn postgrest_bodies_keep_code_message_and_hint_but_not_details() {
        let body = ErrorBody::parse(
            409,
            br#"{"code":"23505","details":"Failing row contains (secret-row)","hint":"try again","message":"duplicate key"}"#,
        );
        assert_eq!(body.code.as_deref(), Some("23505"));
        assert_eq!(body.message, "duplicate key (hint: try again)");
    }

    #[test]
    fn non_json_bodies_are_described_by_size_only() {
        let body = ErrorBody::parse(502, b"<html>upstream said SECRET</html>");
        assert_eq!(body.code, None);
        assert!(body.message.starts_with("Bad Gateway"), "{}", body.message);
        assert!(!body.message.contains("SECRET"));
    }

    #[test]
    fn auth_server_bodies_are_understood() {
        let body = ErrorBody::parse(
            400,
            br#"{"error":"invalid_grant","error_description":"Invalid Refresh Token"}"#,
        );
        assert_eq!(body.code.as_deref(), Some("invalid_grant"));
        assert_eq!(body.message, "Invalid Refresh Token");
        let body = ErrorBody::parse(
            400,
            br#"{"code":400,"error_code":"refresh_token_not_found","msg":"not found"}"#,
        );
        assert_eq!(body.code.as_deref(), Some("refresh_token_not_found"));
        assert_eq!(body.message, "not found");
    }

    #[test]
    fn redaction_removes_tokens_and_their_parts_and_bounds_length() {
        let token = "aaaaaaaaaa.bbbbbbbbbb.cccccccccc";
        let body = ErrorBody {
            code: None,
            message: format!(
                "bad token {token}; payload bbbbbbbbbb; {}",
                "x".repeat(1000)
            ),
        }
        .redact(&[token]);
        assert!(!body.message.contains("bbbbbbbbbb"), "{}", body.message);
        assert!(body.message.chars().count() <= MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn an_api_key_that_cannot_be_a_header_is_refused_at_construction() {
        let config = SupabaseConfig::postgrest("http://127.0.0.1:1/")
            .expect("url")
            .with_api_key(crate::adapters::supabase::ApiKey::new("bad\nkey"));
        let err = HttpClient::new(config).expect_err("newline in the key");
        assert!(matches!(err, Failure::Build(_)), "{err:?}");
        assert!(!err.to_string().contains("bad"), "{err}");
    }

    #[test]
    fn content_range_totals_are_parsed() {
        let answer = |range: Option<&str>| Answer {
            body: Vec::new(),
            content_range: range.map(str::to_owned),
        };
        assert_eq!(answer(Some("0-0/1")).total_count().ok(), Some(1));
        assert_eq!(answer(Some("*/0")).total_count().ok(), Some(0));
        assert_eq!(answer(Some("0-24/3573")).total_count().ok(), Some(3573));
        for bad in [None, Some("*/*"), Some("0-0"), Some("")] {
            assert!(
                matches!(answer(bad).total_count(), Err(Failure::Decode(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_parsed_in_seconds_only() {
        let v = |s: &str| HeaderValue::from_str(s).expect("header");
        assert_eq!(
            parse_retry_after(Some(&v(" 7 "))),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(Some(&v("Wed, 21 Oct 2015 07:28:00 GMT"))),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn the_classification_table_holds() {
        let cases: [(Failure, RetryClass); 10] = [
            (
                status(401, r#"{"code":"PGRST301"}"#),
                RetryClass::Unauthenticated,
            ),
            (
                status(401, r#"{"code":"PGRST303"}"#),
                RetryClass::Unauthenticated,
            ),
            (
                status(400, r#"{"code":"PGRST302"}"#),
                RetryClass::Unauthenticated,
            ),
            (status(403, r#"{"code":"42501"}"#), RetryClass::Permanent),
            (status(409, r#"{"code":"23505"}"#), RetryClass::Permanent),
            (status(400, r#"{"code":"22P02"}"#), RetryClass::Permanent),
            (
                status(503, r#"{"code":"PGRST000"}"#),
                RetryClass::Transient { retry_after: None },
            ),
            (status(408, ""), RetryClass::Transient { retry_after: None }),
            (
                Failure::Timeout,
                RetryClass::Transient { retry_after: None },
            ),
            (Failure::Network("refused".into()), RetryClass::Network),
        ];
        for (failure, expected) in cases {
            let shown = failure.to_string();
            assert_eq!(CloudError::from(failure).retry_class(), expected, "{shown}");
        }
        assert_eq!(
            CloudError::from(Failure::Decode("x".into())).retry_class(),
            RetryClass::Permanent
        );
        assert!(matches!(
            CloudError::from(Failure::Decode("x".into())),
            CloudError::Backend(_)
        ));
    }

    #[test]
    fn auth_failures_map_to_rejected_unavailable_or_backend() {
        assert!(matches!(
            AuthError::from(status(400, r#"{"error":"invalid_grant"}"#)),
            AuthError::Rejected(_)
        ));
        assert!(matches!(
            AuthError::from(status(401, "")),
            AuthError::Rejected(_)
        ));
        assert!(matches!(
            AuthError::from(status(429, "")),
            AuthError::Unavailable(_)
        ));
        assert!(matches!(
            AuthError::from(status(500, "")),
            AuthError::Unavailable(_)
        ));
        assert!(matches!(
            AuthError::from(Failure::Network("reset".into())),
            AuthError::Unavailable(_)
        ));
        assert!(matches!(
            AuthError::from(status(404, "")),
            AuthError::Backend(_)
        ));
    }
}
