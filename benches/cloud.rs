//! `cargo bench --bench cloud`: the cold path against the physical floor of the same raw parts
//! (ARCHITECTURE.md §8).
//!
//! | row | subject | baseline | goal |
//! |---|---|---|---|
//! | `cold_push_20k_vs_raw` | the cold consumer pushing 20k engine messages to the local PostgREST: read the log, seal each message, one upsert per 50, advance the cursor | raw `reqwest` upserts of rows of the same shape and size, 50 per request, nothing sealed, no cursor | 1.25 |
//! | `seal_vs_raw_aead` | sealing one 200-byte message as the cold path does: its associated data, a nonce from the default nonce source (a new one per 50 messages), XChaCha20-Poly1305 | one raw XChaCha20-Poly1305 seal of the same bytes into a new buffer from its raw parts: the HChaCha20 subkey of a fixed nonce and `ring`'s ChaCha20-Poly1305 under it, no associated data | 1.5 |
//!
//! `cold_push_20k_vs_raw` needs PostgreSQL and PostgREST: it uses the ones named by
//! `TANDEM_POSTGREST_URL` and `TANDEM_POSTGREST_JWT_SECRET` (as `scripts/test.sh` exports
//! them), or starts its own with `scripts/services.sh start` and stops them at the end; when
//! neither works the row is skipped with the reason printed. Both sides run in worker
//! processes (see `support`), as one user, each round into a fresh session so both sides
//! insert. The subject's session row is uploaded before the timed part; its timed part
//! includes creating and distributing the new session's key (two requests per 400).
//!
//! `TANDEM_BENCH_QUICK=1` pushes 2k messages per round instead of 20k under the same row name
//! (the JSON records the real `n`). `TANDEM_BENCH_ONLY=<substring>[,..]` runs some rows.

mod support;

use std::cell::RefCell;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use rand_core::{OsRng, RngCore};
use reqwest::header::CONTENT_RANGE;
use serde::Serialize;
use tandem::adapters::sqlite::{SqliteOptions, SqliteStore};
use tandem::adapters::supabase::{SupabaseCloudSync, SupabaseConfig};
use tandem::app::cold::{ColdConsumer, EngineMetadata, TickOutcome};
use tandem::app::default_nonce_rng;
use tandem::app::Engine;
use tandem::domain::crypto::{seal_message, KeyEpoch, MessageAad, SessionKey, NONCE_LEN, TAG_LEN};
use tandem::domain::{DeviceId, MessageId, NewMessage, RepositoryId, Role, Seq, SessionId, UserId};
use tandem::ports::{
    AccessToken, AuthContext, AuthError, CloudMessageRow, CloudRepositoryRow, CloudSessionRow,
    CloudSessionStatus, CloudSync, RefreshToken, TokenPair, TokenRefresher,
};
use uuid::Uuid;

use support::{interleaved, time_per_op, Row, Side, Suite, Unit, Worker, WorkerRole};

/// Message content: exactly 200 bytes of prose.
const CONTENT: &str = "The build failed in the linker step: undefined reference to \
`sqlite3_wal_checkpoint_v2`. I rebuilt with the bundled feature, cleared target/, and the \
error is gone; next: rerun all integration suites.";

const PUSH_ROW: &str = "cold_push_20k_vs_raw";
const SEAL_ROW: &str = "seal_vs_raw_aead";
/// Rows per upsert on both sides (the cold path's batch size).
const BATCH: usize = 50;
/// Messages appended per engine commit while preparing a round (untimed).
const APPEND_CHUNK: usize = 1000;

/// Sizes of one run (the parent and its workers derive the same values).
struct Params {
    push_messages: usize,
    push_rounds: usize,
    push_warmup: usize,
    seal_ops: usize,
    seal_rounds: usize,
}

impl Params {
    fn get() -> Self {
        if support::quick() {
            Self {
                push_messages: 2_000,
                push_rounds: 3,
                push_warmup: 500,
                seal_ops: 5_000,
                seal_rounds: 10,
            }
        } else {
            Self {
                push_messages: 20_000,
                push_rounds: 5,
                push_warmup: 2_000,
                seal_ops: 20_000,
                seal_rounds: 30,
            }
        }
    }
}

fn main() {
    assert_eq!(CONTENT.len(), 200, "the content is 200 bytes");
    if let Some(role) = support::worker_role() {
        worker(&role);
        return;
    }
    let mut suite = Suite::new("cloud");
    let p = Params::get();
    if suite.wants(PUSH_ROW) {
        match Services::find_or_start(&suite) {
            Ok(services) => cold_push(&mut suite, &p, &services),
            Err(why) => suite.progress(&format!("{PUSH_ROW}: skipped: {why}")),
        }
    }
    if suite.wants(SEAL_ROW) {
        seal(&mut suite, &p);
    }
    suite.finish();
}

fn worker(role: &WorkerRole) {
    let p = Params::get();
    match role.row.as_str() {
        PUSH_ROW => push_worker(role, &p),
        other => panic!("no worker for row {other:?}"),
    }
}

// ----- services -------------------------------------------------------------------------------

/// The PostgREST to push to, and the run this bench started (stopped on drop), if any.
struct Services {
    url: String,
    jwt_secret: String,
    started: Option<PathBuf>,
}

impl Drop for Services {
    fn drop(&mut self) {
        if let Some(run_dir) = self.started.take() {
            let status = Command::new(script())
                .arg("stop")
                .arg(&run_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status();
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("could not stop the services of {}", run_dir.display());
            }
        }
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services.sh")
}

impl Services {
    /// The services named by the environment, or ones started by `scripts/services.sh`.
    fn find_or_start(suite: &Suite) -> Result<Self, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let (Some(url), Some(jwt_secret)) = (
            var("TANDEM_POSTGREST_URL"),
            var("TANDEM_POSTGREST_JWT_SECRET"),
        ) {
            suite.progress(&format!("using the PostgREST at {url}"));
            return Ok(Self {
                url,
                jwt_secret,
                started: None,
            });
        }
        suite.progress(
            "TANDEM_POSTGREST_URL is not set: starting services with scripts/services.sh",
        );
        let output = Command::new(script())
            .arg("start")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run scripts/services.sh: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "scripts/services.sh start failed ({})",
                output.status
            ));
        }
        let exports = String::from_utf8_lossy(&output.stdout);
        let get = |name: &str| {
            exports.lines().find_map(|line| {
                let value = line
                    .strip_prefix("export ")?
                    .strip_prefix(name)?
                    .strip_prefix('=')?;
                Some(value.trim().trim_matches('\'').to_owned())
            })
        };
        let started = get("TANDEM_SERVICES_RUN_DIR").map(PathBuf::from);
        let services = Self {
            url: get("TANDEM_POSTGREST_URL").unwrap_or_default(),
            jwt_secret: get("TANDEM_POSTGREST_JWT_SECRET").unwrap_or_default(),
            started,
        };
        if services.url.is_empty() || services.jwt_secret.is_empty() {
            return Err("scripts/services.sh start printed no coordinates".into());
        }
        Ok(services)
    }

    /// An HS256 token for `user`, valid for two hours.
    fn token(&self, user: UserId) -> String {
        #[derive(Serialize)]
        struct Claims {
            sub: String,
            role: &'static str,
            aud: &'static str,
            exp: u64,
        }
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 7200;
        let claims = Claims {
            sub: user.to_string(),
            role: "authenticated",
            aud: "authenticated",
            exp,
        };
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.jwt_secret.as_bytes()),
        )
        .expect("HS256 signing")
    }
}

// ----- cold_push_20k_vs_raw -------------------------------------------------------------------

/// What both push workers are given: where to push, as whom.
struct PushArg {
    url: String,
    user: UserId,
    token: String,
}

impl PushArg {
    fn encode(&self) -> String {
        format!("{} {} {}", self.url, self.user, self.token)
    }

    fn decode(arg: &str) -> Self {
        let mut parts = arg.split(' ');
        let (Some(url), Some(user), Some(token)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("the push worker needs `<url> <user> <token>`");
        };
        Self {
            url: url.to_owned(),
            user: UserId::parse(user).expect("a user id"),
            token: token.to_owned(),
        }
    }
}

fn cold_push(suite: &mut Suite, p: &Params, services: &Services) {
    let user = UserId::from_uuid(Uuid::new_v4()).expect("v4 is never nil");
    let arg = PushArg {
        url: services.url.clone(),
        user,
        token: services.token(user),
    };
    let (n, rounds) = (p.push_messages, p.push_rounds);
    suite.progress(&format!(
        "{PUSH_ROW}: {n} messages per round, {rounds} rounds per side"
    ));
    let (mut s, mut b) = Worker::pair(PUSH_ROW, &arg.encode());
    let (subject, baseline) = interleaved(rounds, || s.sample(), || b.sample());
    let (done_s, done_b) = (s.finish(), b.finish());
    let expected = format!("rows={}", n * rounds);
    assert_eq!(
        done_s, expected,
        "{PUSH_ROW}: the cold path did not land every message"
    );
    assert_eq!(
        done_b, expected,
        "{PUSH_ROW}: the raw upserts did not land every row"
    );
    suite.push(Row::new(
        PUSH_ROW,
        subject,
        baseline,
        1.25,
        Unit::Micros.label(),
        (n * rounds) as u64,
        format!(
            "per message, {n} per round in upserts of {BATCH}; median of {rounds} rounds; \
             local PostgREST 12, one user; subject incl. log reads, sealing, key setup, cursor"
        ),
    ));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A refresher for a token that outlives the run.
#[derive(Debug)]
struct NoRefresh;

#[async_trait]
impl TokenRefresher for NoRefresh {
    async fn refresh(&self, _: &RefreshToken) -> Result<TokenPair, AuthError> {
        Err(AuthError::Rejected("the bench token never expires".into()))
    }
}

fn cloud(url: &str) -> SupabaseCloudSync {
    SupabaseCloudSync::new(SupabaseConfig::postgrest(url).expect("PostgREST URL")).expect("cloud")
}

/// Counts the rows of `sessions` in the cloud (PostgREST's exact count).
async fn count_rows(http: &reqwest::Client, arg: &PushArg, sessions: &[SessionId]) -> usize {
    let mut total = 0;
    for chunk in sessions.chunks(20) {
        let list: Vec<String> = chunk.iter().map(ToString::to_string).collect();
        let response = http
            .get(format!("{}/messages", arg.url.trim_end_matches('/')))
            .query(&[
                ("select", "id".to_owned()),
                ("session_id", format!("in.({})", list.join(","))),
                ("limit", "0".to_owned()),
            ])
            .bearer_auth(&arg.token)
            .header("Prefer", "count=exact")
            .send()
            .await
            .expect("count request");
        let range = response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        total += range
            .rsplit_once('/')
            .and_then(|(_, n)| n.parse::<usize>().ok())
            .expect("a row count");
    }
    total
}

fn push_worker(role: &WorkerRole, p: &Params) {
    let arg = PushArg::decode(&role.arg);
    match role.side {
        Side::Subject => push_subject(&arg, p),
        Side::Baseline => push_baseline(&arg, p),
    }
}

/// Steps the consumer until nothing is left after its cursor; any failure aborts the bench.
async fn drain(consumer: &ColdConsumer) -> usize {
    let mut delivered = 0;
    loop {
        match consumer.tick().await {
            TickOutcome::Idle => return delivered,
            TickOutcome::Delivered { items, .. } => delivered += items,
            TickOutcome::Skipped { .. } => {}
            TickOutcome::Batching { until } => tokio::time::sleep_until(until).await,
            other => panic!("the cold path failed during the bench: {other:?}"),
        }
    }
}

fn push_subject(arg: &PushArg, p: &Params) {
    let rt = runtime();
    let dir = tempfile::Builder::new()
        .prefix("tandem-bench-")
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join("tandem.db");
    let device = DeviceId::from_uuid(Uuid::new_v4()).expect("v4");
    let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).expect("store"));
    let engine = Arc::new(
        Engine::builder(store)
            .device(device)
            .open()
            .expect("engine"),
    );
    let consumer = ColdConsumer::builder(
        Arc::new(cloud(&arg.url)),
        Arc::new(NoRefresh),
        &path,
        engine.effect_log(),
    )
    .metadata(Arc::new(EngineMetadata::new(Arc::clone(&engine))))
    .open()
    .expect("consumer");
    consumer.auth().set(AuthContext {
        access_token: AccessToken::new(arg.token.clone()),
        refresh_token: RefreshToken::new("unused"),
        user_id: arg.user,
        device_id: device,
    });
    rt.block_on(consumer.devices().register("bench", "linux"))
        .expect("register the device");
    let repo = engine.create_repository("bench", None).expect("repository");
    let timed_sessions = RefCell::new(Vec::new());
    // One round: a fresh session whose row is uploaded first, then `n` messages, timed.
    let round = |n: usize, timed: bool| -> f64 {
        let session = engine.create_session(repo.id, "bench").expect("session");
        rt.block_on(drain(&consumer));
        let mut left = n;
        while left > 0 {
            let k = left.min(APPEND_CHUNK);
            let batch = (0..k)
                .map(|_| NewMessage::new(Role::Assistant, CONTENT))
                .collect();
            engine.append_messages(session.id, batch).expect("append");
            left -= k;
        }
        let start = Instant::now();
        let delivered = rt.block_on(drain(&consumer));
        let elapsed = start.elapsed();
        assert_eq!(delivered, n, "every message delivered");
        if timed {
            timed_sessions.borrow_mut().push(session.id);
        }
        Unit::Micros.per_op(elapsed, n)
    };
    round(p.push_warmup, false);
    support::serve(
        || vec![round(p.push_messages, true)],
        || {
            let http = reqwest::Client::new();
            let rows = rt.block_on(count_rows(&http, arg, &timed_sessions.borrow()));
            format!("rows={rows}")
        },
    );
}

/// Rows shaped like the cold path's: a 200-byte message sealed is 216 bytes of ciphertext.
fn raw_rows(session: SessionId, device: DeviceId, n: usize) -> Vec<CloudMessageRow> {
    (1..=n as u64)
        .map(|seq| {
            let mut ciphertext = vec![0u8; CONTENT.len() + TAG_LEN];
            OsRng.fill_bytes(&mut ciphertext);
            let mut nonce = [0u8; NONCE_LEN];
            OsRng.fill_bytes(&mut nonce);
            CloudMessageRow {
                id: MessageId::from_uuid(Uuid::now_v7()).expect("v7"),
                session_id: session,
                sequence_number: seq,
                role: "assistant".into(),
                content_ciphertext: B64.encode(&ciphertext),
                content_nonce: B64.encode(nonce),
                key_epoch: KeyEpoch::FIRST,
                encryption_alg: "xchacha20poly1305".into(),
                sender_device_id: device,
                created_at_ms: 1_700_000_000_000 + seq as i64,
            }
        })
        .collect()
}

fn push_baseline(arg: &PushArg, p: &Params) {
    let rt = runtime();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .build()
        .expect("http client");
    let token = AccessToken::new(arg.token.clone());
    let setup = cloud(&arg.url);
    let device = DeviceId::from_uuid(Uuid::new_v4()).expect("v4");
    let repo = CloudRepositoryRow {
        id: RepositoryId::from_uuid(Uuid::new_v4()).expect("v4"),
        name: "bench raw".into(),
        remote_url: None,
        created_at_ms: 1_700_000_000_000,
        updated_at_ms: 1_700_000_000_000,
    };
    rt.block_on(setup.upsert_repository(&token, &repo))
        .expect("repository");
    let url = format!(
        "{}/messages?on_conflict=session_id,sequence_number",
        arg.url.trim_end_matches('/')
    );
    let timed_sessions = RefCell::new(Vec::new());
    let round = |n: usize, timed: bool| -> f64 {
        let session = CloudSessionRow {
            id: SessionId::from_uuid(Uuid::new_v4()).expect("v4"),
            repository_id: repo.id,
            title: "bench raw".into(),
            status: CloudSessionStatus::Active,
            created_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_000_000,
            ended_at_ms: None,
        };
        rt.block_on(setup.upsert_session(&token, &session))
            .expect("session");
        let rows = raw_rows(session.id, device, n);
        let start = Instant::now();
        rt.block_on(async {
            for chunk in rows.chunks(BATCH) {
                let body = serde_json::to_vec(chunk).expect("encode rows");
                let response = http
                    .post(&url)
                    .bearer_auth(&arg.token)
                    .header("Prefer", "resolution=merge-duplicates,return=minimal")
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("upsert");
                assert_eq!(response.status().as_u16(), 201, "raw upsert");
            }
        });
        let elapsed = start.elapsed();
        if timed {
            timed_sessions.borrow_mut().push(session.id);
        }
        Unit::Micros.per_op(elapsed, n)
    };
    round(p.push_warmup, false);
    support::serve(
        || vec![round(p.push_messages, true)],
        || {
            let rows = rt.block_on(count_rows(&http, arg, &timed_sessions.borrow()));
            format!("rows={rows}")
        },
    );
}

// ----- seal_vs_raw_aead -----------------------------------------------------------------------

fn seal(suite: &mut Suite, p: &Params) {
    let (ops, rounds) = (p.seal_ops, p.seal_rounds);
    suite.progress(&format!(
        "{SEAL_ROW}: {ops} seals per round, {rounds} rounds per side"
    ));
    let key = SessionKey::generate(&mut OsRng);
    let session = SessionId::from_uuid(Uuid::new_v4()).expect("v4");
    let sender = DeviceId::from_uuid(Uuid::new_v4()).expect("v4");
    let messages: Vec<MessageId> = (0..ops)
        .map(|_| MessageId::from_uuid(Uuid::now_v7()).expect("v7"))
        .collect();
    // The raw parts of one XChaCha20-Poly1305 seal, as one call performs them: the subkey of
    // the (fixed) nonce, then ring's ChaCha20-Poly1305 under it.
    let nonce = [7u8; NONCE_LEN];
    let mut short = [0u8; 12];
    short[4..].copy_from_slice(&nonce[16..]);
    let plaintext = CONTENT.as_bytes();

    let mut seq = 0u64;
    let mut subject_round = || {
        let start = Instant::now();
        // As the cold path seals: a new default nonce source per batch of BATCH messages.
        for batch in messages.chunks(BATCH) {
            let mut source = default_nonce_rng();
            let mut rng: &mut (dyn rand_core::CryptoRngCore + Send + Sync) = &mut *source;
            for message in batch {
                seq += 1;
                let aad =
                    MessageAad::new(session, *message, Seq::new(seq), sender, KeyEpoch::FIRST);
                black_box(seal_message(&key, &aad, black_box(plaintext), &mut rng).expect("seal"));
            }
        }
        Unit::Micros.per_op(start.elapsed(), ops)
    };
    let baseline_round = || {
        time_per_op(Unit::Micros, ops, || {
            let subkey = chacha20::hchacha::<chacha20::cipher::consts::U10>(
                key.expose_secret().into(),
                nonce[..16].into(),
            );
            let cipher = ring::aead::LessSafeKey::new(
                ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &subkey).expect("key"),
            );
            let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
            out.extend_from_slice(black_box(plaintext));
            let tag = cipher
                .seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(short),
                    ring::aead::Aad::empty(),
                    &mut out,
                )
                .expect("seal");
            out.extend_from_slice(tag.as_ref());
            black_box(out);
        })
    };
    // Warm-up (caches, CPU frequency).
    subject_round();
    baseline_round();
    let (subject, baseline) = interleaved(rounds, subject_round, baseline_round);
    suite.push(Row::new(
        SEAL_ROW,
        subject,
        baseline,
        1.5,
        Unit::Micros.label(),
        (ops * rounds) as u64,
        format!(
            "per 200-byte message; median of {rounds} rounds x {ops}; subject = associated \
             data + nonce from the default source + XChaCha20-Poly1305, baseline = HChaCha20 \
             subkey of a fixed nonce + ring's ChaCha20-Poly1305, no associated data"
        ),
    ));
}
