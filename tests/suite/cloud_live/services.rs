//! The real PostgreSQL + PostgREST that `scripts/services.sh start` runs, as seen by tests.
//!
//! `scripts/test.sh` starts the services and exports their coordinates; a test asks
//! [`LiveServices::from_env`] for them and returns early when it gets `None`:
//!
//! ```ignore
//! let Some(live) = LiveServices::from_env() else { return };
//! let user = live.new_user();
//! live.cloud().upsert_repository(&user.token, &row).await?;
//! ```
//!
//! Without the environment a test prints why it skips, except under `CI=true`, where a
//! missing service is a failure. Tests share one database and isolate by user: every
//! [`TestUser`] is a fresh random uuid, and row-level security keeps users apart.

// A shared helper: not every test module uses every function.
#![allow(dead_code)]

use std::fmt;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;
use tandem::adapters::supabase::{SupabaseCloudSync, SupabaseConfig};
use tandem::domain::ids::UserId;
use tandem::ports::{AccessToken, CloudRepositoryRow, CloudSessionRow, CloudSync};
use uuid::Uuid;

use super::rows;

/// PostgreSQL URL of the run's database (superuser, bypasses row-level security).
pub const ENV_PG_URL: &str = "TANDEM_PG_URL";
/// Name of the run's database.
pub const ENV_PG_DB: &str = "TANDEM_PG_DB";
/// Root URL of the run's PostgREST.
pub const ENV_POSTGREST_URL: &str = "TANDEM_POSTGREST_URL";
/// The HS256 secret PostgREST verifies JWTs with.
pub const ENV_JWT_SECRET: &str = "TANDEM_POSTGREST_JWT_SECRET";

/// How long a raw test request may take.
const RAW_TIMEOUT: Duration = Duration::from_secs(20);

/// Coordinates of the running services.
pub struct LiveServices {
    /// PostgreSQL URL of the run's database.
    pub pg_url: String,
    /// The database name, if exported.
    pub pg_db: Option<String>,
    /// PostgREST root URL.
    pub postgrest_url: String,
    jwt_secret: String,
}

impl fmt::Debug for LiveServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveServices")
            .field("pg_url", &self.pg_url)
            .field("postgrest_url", &self.postgrest_url)
            .field("jwt_secret", &"<redacted>")
            .finish()
    }
}

/// A fresh user with a valid token.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// The user id (the JWT's `sub`).
    pub id: UserId,
    /// A token valid for an hour.
    pub token: AccessToken,
}

/// A user who owns one repository with one active session, created through the adapter.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// The owner.
    pub user: TestUser,
    /// The repository row as uploaded.
    pub repository: CloudRepositoryRow,
    /// The session row as uploaded.
    pub session: CloudSessionRow,
}

/// A raw PostgREST answer.
#[derive(Debug)]
pub struct RawResponse {
    /// HTTP status.
    pub status: u16,
    /// The JSON body (`Value::Null` when empty or not JSON).
    pub body: Value,
}

impl RawResponse {
    /// The `code` field of an error body.
    pub fn code(&self) -> Option<&str> {
        self.body.get("code").and_then(Value::as_str)
    }

    /// The number of rows in an array body.
    pub fn rows(&self) -> usize {
        self.body.as_array().map_or(0, Vec::len)
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: String,
    role: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl LiveServices {
    /// The running services, or `None` (after saying why) when the environment does not
    /// name them. Panics instead under `CI=true`.
    pub fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let missing: Vec<&str> = [ENV_PG_URL, ENV_POSTGREST_URL, ENV_JWT_SECRET]
            .into_iter()
            .filter(|name| var(name).is_none())
            .collect();
        if !missing.is_empty() {
            let why = format!(
                "live cloud services not configured ({} not set); run scripts/test.sh, or \
                 eval \"$(scripts/services.sh start)\" before cargo test",
                missing.join(", ")
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true requires the live services: {why}");
            }
            eprintln!("skipping: {why}");
            return None;
        }
        Some(Self {
            pg_url: var(ENV_PG_URL)?,
            pg_db: var(ENV_PG_DB),
            postgrest_url: var(ENV_POSTGREST_URL)?,
            jwt_secret: var(ENV_JWT_SECRET)?,
        })
    }

    /// A configuration for the plain PostgREST.
    pub fn config(&self) -> SupabaseConfig {
        SupabaseConfig::postgrest(&self.postgrest_url).expect("TANDEM_POSTGREST_URL is a URL")
    }

    /// The adapter under test, configured for the running PostgREST.
    pub fn cloud(&self) -> SupabaseCloudSync {
        SupabaseCloudSync::new(self.config()).expect("build SupabaseCloudSync")
    }

    /// A fresh random user with a token valid for an hour.
    pub fn new_user(&self) -> TestUser {
        let id = UserId::from_uuid(Uuid::new_v4()).expect("v4 is never nil");
        TestUser {
            id,
            token: self.mint_token(id),
        }
    }

    /// An HS256 token for `user`, valid for an hour.
    pub fn mint_token(&self, user: UserId) -> AccessToken {
        self.mint_token_expiring_at(user, unix_now() + 3600)
    }

    /// An HS256 token for `user` that expired an hour ago (beyond any clock-skew leeway).
    pub fn mint_expired_token(&self, user: UserId) -> AccessToken {
        self.mint_token_expiring_at(user, unix_now() - 3600)
    }

    /// An HS256 token for `user` expiring at `exp` (Unix seconds).
    pub fn mint_token_expiring_at(&self, user: UserId, exp: i64) -> AccessToken {
        AccessToken::new(mint_jwt(&self.jwt_secret, user, exp))
    }

    /// A token-minting function with this run's secret, for fake token endpoints.
    pub fn minter(&self) -> impl Fn(UserId, i64) -> String + Send + Sync + 'static {
        let secret = self.jwt_secret.clone();
        move |user, exp| mint_jwt(&secret, user, exp)
    }

    /// A fresh user owning one repository and one active session.
    pub async fn seeded(&self, cloud: &SupabaseCloudSync) -> Seeded {
        let user = self.new_user();
        let repository = rows::repository("seeded repository");
        let session = rows::session(repository.id, "seeded session");
        cloud
            .upsert_repository(&user.token, &repository)
            .await
            .expect("seed repository");
        cloud
            .upsert_session(&user.token, &session)
            .await
            .expect("seed session");
        Seeded {
            user,
            repository,
            session,
        }
    }

    /// Runs one SQL statement as the superuser (row-level security does not apply) and
    /// returns its unaligned, trimmed output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_url(&self.pg_url, sql)
    }

    /// Like [`psql`](Self::psql), in another database of the same server.
    pub fn psql_in(&self, database: &str, sql: &str) -> String {
        self.psql_url(&self.database_url(database), sql)
    }

    /// The URL of another database on the run's server.
    pub fn database_url(&self, database: &str) -> String {
        let server = self
            .pg_url
            .rsplit_once('/')
            .map_or(self.pg_url.as_str(), |(server, _)| server);
        format!("{server}/{database}")
    }

    fn psql_url(&self, url: &str, sql: &str) -> String {
        let output = Command::new("psql")
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(url)
            .args(["-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGOPTIONS", "-c statement_timeout=10000")
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql failed for {sql:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The JWT secret, for configuring another PostgREST of this run.
    pub fn jwt_secret(&self) -> &str {
        &self.jwt_secret
    }

    /// `select count(*) from <from_where>` as the superuser.
    pub fn count(&self, from_where: &str) -> u64 {
        let text = self.psql(&format!("select count(*) from {from_where}"));
        text.parse()
            .unwrap_or_else(|_| panic!("count(*) printed {text:?}"))
    }

    /// A raw PostgREST call: `path_and_query` is appended to the root URL (`/messages?…`).
    pub async fn raw(
        &self,
        method: Method,
        path_and_query: &str,
        token: Option<&AccessToken>,
        prefer: Option<&str>,
        body: Option<Value>,
    ) -> RawResponse {
        let url = format!(
            "{}/{}",
            self.postgrest_url.trim_end_matches('/'),
            path_and_query.trim_start_matches('/')
        );
        let mut request = reqwest::Client::new()
            .request(method, url)
            .timeout(RAW_TIMEOUT);
        if let Some(token) = token {
            request = request.bearer_auth(token.expose_secret());
        }
        if let Some(prefer) = prefer {
            request = request.header("Prefer", prefer);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("raw PostgREST request");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("raw PostgREST body");
        RawResponse {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// `GET path_and_query` as `token`.
    pub async fn get(&self, path_and_query: &str, token: &AccessToken) -> RawResponse {
        self.raw(Method::GET, path_and_query, Some(token), None, None)
            .await
    }
}

fn mint_jwt(secret: &str, user: UserId, exp: i64) -> String {
    let claims = Claims {
        sub: user.to_string(),
        role: "authenticated",
        aud: "authenticated",
        iat: unix_now().min(exp),
        exp,
    };
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}
