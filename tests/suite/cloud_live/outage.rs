//! PostgREST behaviour that needs a server of its own: an RPC raising `PT409`, and the
//! database going away under a running PostgREST (503 with `Retry-After`).
//!
//! The test creates a throwaway database, starts a second PostgREST (the cached binary
//! `scripts/services.sh` installed) on it, and drops the database while PostgREST runs. The
//! guard below stops that PostgREST (by its own pid) and drops the database on every exit.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tandem::adapters::supabase::{SupabaseCloudSync, SupabaseConfig, SupabaseTimeouts};
use tandem::domain::backoff::RetryClass;
use tandem::ports::{CloudError, CloudSync};

use super::services::LiveServices;

/// How long the second PostgREST may take to serve its schema.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// The PostgREST binary `scripts/services.sh install` caches.
fn postgrest_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/postgrest/postgrest")
}

/// A PostgREST process on a database of its own; both go away on drop.
struct StandalonePostgrest<'a> {
    live: &'a LiveServices,
    database: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
    url: String,
}

impl<'a> StandalonePostgrest<'a> {
    /// Creates `database`, runs `setup_sql` in it, and starts PostgREST on it.
    fn start(live: &'a LiveServices, setup_sql: &str) -> Self {
        let database = format!("tandem_outage_{}", uuid::Uuid::new_v4().simple());
        live.psql(&format!("create database \"{database}\""));
        let mut guard = Self {
            live,
            database,
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            url: String::new(),
        };
        live.psql_in(&guard.database, setup_sql);

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let db_uri = live.database_url(&guard.database).replacen(
            "postgres://postgres@",
            "postgres://authenticator@",
            1,
        );
        let config = format!(
            "db-uri = \"{db_uri}\"\ndb-schemas = \"public\"\ndb-anon-role = \"anon\"\n\
             jwt-secret = \"{}\"\nserver-host = \"127.0.0.1\"\nserver-port = {port}\n\
             log-level = \"crit\"\n",
            live.jwt_secret()
        );
        let config_path = guard.dir.path().join("postgrest.conf");
        std::fs::write(&config_path, config).expect("write config");
        let binary = postgrest_binary();
        assert!(
            binary.exists(),
            "{} is missing: run scripts/services.sh install",
            binary.display()
        );
        guard.child = Some(
            Command::new(binary)
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn PostgREST"),
        );
        guard.url = format!("http://127.0.0.1:{port}");
        guard
    }

    /// Waits (bounded) until `path` answers with something other than 503 or a timeout,
    /// i.e. until the schema cache is loaded.
    async fn wait_ready(&mut self, path: &str) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("the second PostgREST exited early: {status}");
                }
            }
            let answer = client
                .get(format!("{}/{path}", self.url))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if matches!(&answer, Ok(r) if r.status().as_u16() != 503) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the second PostgREST was not ready within {READY_WITHIN:?}");
    }

    fn cloud(&self) -> SupabaseCloudSync {
        let config = SupabaseConfig::postgrest(&self.url)
            .expect("url")
            .with_timeouts(SupabaseTimeouts {
                connect: Duration::from_secs(5),
                request: Duration::from_secs(10),
            });
        SupabaseCloudSync::new(config).expect("client")
    }

    fn drop_database(&self) {
        self.live.psql(&format!(
            "drop database if exists \"{}\" with (force)",
            self.database
        ));
    }
}

impl Drop for StandalonePostgrest<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Not `drop_database`: psql's assertion must not panic while unwinding.
        let _ = Command::new("psql")
            .args(["-X", "-q", "-d", &self.live.pg_url, "-c"])
            .arg(format!(
                "drop database if exists \"{}\" with (force)",
                self.database
            ))
            .env("PGCONNECT_TIMEOUT", "10")
            .output();
    }
}

#[tokio::test]
async fn an_rpc_raising_pt409_is_409_and_a_lost_database_is_503_with_retry_after() {
    let Some(live) = LiveServices::from_env() else {
        return;
    };
    let mut server = StandalonePostgrest::start(
        &live,
        "create function public.always_conflicts() returns void language plpgsql as $$ \
         begin raise sqlstate 'PT409' using message = 'already taken'; end $$",
    );
    server.wait_ready("devices").await;
    let user = live.new_user();

    let raw = reqwest::Client::new()
        .request(Method::POST, format!("{}/rpc/always_conflicts", server.url))
        .bearer_auth(user.token.expose_secret())
        .json(&json!({}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("rpc");
    assert_eq!(raw.status().as_u16(), 409);
    let body: serde_json::Value = raw.json().await.expect("json error body");
    assert_eq!(body["message"], "already taken");
    for key in ["code", "details", "hint", "message"] {
        assert!(body.get(key).is_some(), "error bodies carry {key}: {body}");
    }

    server.drop_database();
    let err = server
        .cloud()
        .list_devices(&user.token)
        .await
        .expect_err("the database is gone");
    match &err {
        CloudError::Transient {
            status: 503,
            code: Some(code),
            retry_after: Some(_),
            ..
        } => {
            // Which error a request meets depends on timing: a pooled connection killed by
            // the drop answers with PostgreSQL's 57P01 (admin shutdown), later requests with
            // PostgREST's own connection errors (PGRST00x). Both are a lost database.
            assert!(code.starts_with("PGRST00") || code == "57P01", "{err:?}");
        }
        other => panic!("expected 503 with Retry-After, got {other:?}"),
    }
    assert!(matches!(
        err.retry_class(),
        RetryClass::Transient {
            retry_after: Some(_)
        }
    ));
}
