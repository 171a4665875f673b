//! A loopback HTTP/1.1 forwarder between a client and PostgREST that injects seeded faults
//! and records every exchange.
//!
//! One request per client connection: every response (real or injected) says
//! `connection: close`, so each attempt the client makes arrives on its own connection and
//! shows up here exactly once (the client never re-sends silently on a reused connection).
//! Requests are forwarded on a fresh upstream connection with `connection: close`; the
//! upstream answer is read to its end before the client sees anything, so "forward then
//! fail" means PostgREST has committed and answered before the client is let down.
//!
//! What can happen to a request ([`Action`]):
//!
//! | action              | upstream         | the client sees                           |
//! |---------------------|------------------|-------------------------------------------|
//! | `Forward`           | forwarded        | PostgREST's answer                        |
//! | `FailBefore`        | not contacted    | an injected 5xx or 429 (maybe `Retry-After`) |
//! | `Hold`              | not contacted    | nothing until it gives up (its timeout)   |
//! | `ForwardThenDrop`   | applied          | the connection closed without an answer   |
//! | `ForwardThenFail`   | applied          | an injected 5xx                           |
//! | `ForwardThenHold`   | applied          | nothing until it gives up                 |
//! | `Poison`            | forwarded with one message row made invalid | PostgREST's 400 |
//!
//! Faults are drawn from a `StdRng` seeded by the caller, one draw per request in arrival
//! order, so a sequential client sees the same fault sequence for the same seed.

// A shared helper: not every test uses every function.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::http_wire::{forward, hold, injected, read_request, Upstream};

/// What the proxy did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Forwarded untouched; the client got PostgREST's answer.
    Forward,
    /// Answered with `status` without contacting PostgREST.
    FailBefore {
        /// The injected status (5xx or 429).
        status: u16,
        /// The `Retry-After` seconds sent with it.
        retry_after: Option<u64>,
    },
    /// Never answered nor forwarded: held until the client gave up.
    Hold,
    /// Forwarded and applied; the client's connection was closed without an answer.
    ForwardThenDrop,
    /// Forwarded and applied; the client got an injected `status`.
    ForwardThenFail {
        /// The injected status (5xx).
        status: u16,
    },
    /// Forwarded and applied; the client got nothing until it gave up.
    ForwardThenHold,
    /// Forwarded with the poisoned message row made invalid (`sequence_number = 0`).
    Poison,
}

impl Action {
    /// Whether PostgREST saw the request.
    pub fn forwarded(self) -> bool {
        !matches!(self, Self::FailBefore { .. } | Self::Hold)
    }

    /// Whether this is an injected fault (not a plain or poisoned forward).
    pub fn is_fault(self) -> bool {
        !matches!(self, Self::Forward | Self::Poison)
    }
}

/// One request as the proxy saw it.
#[derive(Clone)]
pub struct Exchange {
    /// Arrival order, from 0.
    pub index: usize,
    /// When the whole request had arrived.
    pub at: Instant,
    /// The method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The body as the client sent it (sealed rows only: no secrets).
    pub body: Vec<u8>,
    /// SHA-256 of the bearer token, if one was sent (the token itself is not kept).
    pub token_digest: Option<[u8; 32]>,
    /// What was done with it.
    pub action: Action,
    /// PostgREST's status, when it was forwarded and answered.
    pub upstream_status: Option<u16>,
    /// PostgREST's error `code`, when it answered with one.
    pub upstream_code: Option<String>,
    /// The status the client received (`None`: dropped or held).
    pub client_status: Option<u16>,
    /// The `Retry-After` seconds the client received.
    pub retry_after: Option<u64>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("index", &self.index)
            .field("method", &self.method)
            .field("target", &self.target)
            .field("body_len", &self.body.len())
            .field("action", &self.action)
            .field("upstream_status", &self.upstream_status)
            .field("upstream_code", &self.upstream_code)
            .field("client_status", &self.client_status)
            .field("retry_after", &self.retry_after)
            .finish_non_exhaustive()
    }
}

impl Exchange {
    /// The table (first path segment) addressed.
    pub fn table(&self) -> &str {
        let path = self.target.split('?').next().unwrap_or("");
        path.trim_start_matches('/').split('/').next().unwrap_or("")
    }

    /// Whether this is a message upsert.
    pub fn is_message_upsert(&self) -> bool {
        self.method == "POST" && self.table() == "messages"
    }

    /// The `id`s of the rows of a JSON array body (message ids for a message upsert).
    pub fn row_ids(&self) -> Vec<String> {
        row_ids(&self.body)
    }

    /// Whether the client received a success status.
    pub fn client_ok(&self) -> bool {
        self.client_status.is_some_and(|s| (200..300).contains(&s))
    }

    /// Whether the request carried `token` as its bearer token.
    pub fn carried(&self, token: &str) -> bool {
        self.token_digest == Some(digest(token))
    }
}

/// SHA-256 of a token, as recorded in [`Exchange::token_digest`].
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn row_ids(body: &[u8]) -> Vec<String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(rows)) => rows
            .iter()
            .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Which faults are injected, and how often.
#[derive(Debug)]
struct Policy {
    rng: StdRng,
    /// Probability that a request is faulted (0 = pass-through).
    rate: f64,
    /// A message id whose upsert is made invalid (and never faulted otherwise).
    poison: Option<String>,
}

impl Policy {
    fn decide(&mut self, method: &str, target: &str, body: &[u8]) -> Action {
        if let Some(poison) = &self.poison {
            let is_upsert = method == "POST" && target.starts_with("/messages");
            if is_upsert && row_ids(body).iter().any(|id| id == poison) {
                return Action::Poison;
            }
        }
        if self.rate <= 0.0 || !self.rng.gen_bool(self.rate.min(1.0)) {
            return Action::Forward;
        }
        let pick = self.rng.gen_range(0..100u32);
        match pick {
            0..=19 => Action::FailBefore {
                status: [500, 502, 503, 504][self.rng.gen_range(0..4)],
                retry_after: None,
            },
            20..=29 => Action::FailBefore {
                status: 503,
                retry_after: Some(1),
            },
            30..=49 => Action::FailBefore {
                status: 429,
                retry_after: Some(1),
            },
            50..=64 => Action::Hold,
            65..=79 => Action::ForwardThenDrop,
            80..=89 => Action::ForwardThenFail {
                status: [500, 502, 503][self.rng.gen_range(0..3)],
            },
            _ => Action::ForwardThenHold,
        }
    }
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    policy: Mutex<Policy>,
    log: Mutex<Vec<Exchange>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running proxy; stops (with every connection it serves) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FaultProxy {
    /// A proxy in front of `upstream_url` (`http://127.0.0.1:<port>`) that forwards
    /// everything until [`set_rate`](Self::set_rate) says otherwise.
    pub async fn start(upstream_url: &str, seed: u64) -> Self {
        let upstream = loopback_addr(upstream_url);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            policy: Mutex::new(Policy {
                rng: StdRng::seed_from_u64(seed),
                rate: 0.0,
                poison: None,
            }),
            log: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Self {
            addr,
            shared,
            accept,
        }
    }

    /// The proxy's root URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Faults this share of the requests from now on (0 = pass-through).
    pub fn set_rate(&self, rate: f64) {
        lock(&self.shared.policy).rate = rate;
    }

    /// Makes every upsert carrying message `id` invalid (PostgREST answers 400), and never
    /// faults it otherwise; `None` stops poisoning.
    pub fn set_poison(&self, id: Option<String>) {
        lock(&self.shared.policy).poison = id;
    }

    /// Every exchange so far, in arrival order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        lock(&self.shared.log).clone()
    }

    /// Exchanges from index `from` on.
    pub fn exchanges_since(&self, from: usize) -> Vec<Exchange> {
        lock(&self.shared.log).iter().skip(from).cloned().collect()
    }

    /// How many requests have arrived.
    pub fn len(&self) -> usize {
        lock(&self.shared.log).len()
    }
}

/// `http://127.0.0.1:<port>[/]` → the socket address (loopback only).
fn loopback_addr(url: &str) -> SocketAddr {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("the upstream must be plain http: {url}"));
    let authority = rest.split('/').next().unwrap_or(rest);
    let addr: SocketAddr = authority
        .parse()
        .unwrap_or_else(|_| panic!("the upstream must be an IP:port: {url}"));
    assert!(addr.ip().is_loopback(), "the upstream must be on loopback");
    addr
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Dropping the set (when this task is aborted) aborts every connection task.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream, Arc::clone(&shared)));
                }
                Err(_) => continue,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Rewrites a message upsert so that the row with `id` breaks `sequence_number > 0`.
fn poisoned(body: &[u8], id: &str) -> Vec<u8> {
    let Ok(Value::Array(mut rows)) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    for row in &mut rows {
        if row.get("id").and_then(Value::as_str) == Some(id) {
            row["sequence_number"] = Value::from(0);
        }
    }
    serde_json::to_vec(&rows).unwrap_or_else(|_| body.to_vec())
}

async fn serve(mut client: TcpStream, shared: Arc<Shared>) {
    let Some(request) = read_request(&mut client).await else {
        return;
    };
    let token_digest = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(digest);
    let (index, action, poison) = {
        let mut policy = lock(&shared.policy);
        let action = policy.decide(&request.method, &request.target, &request.body);
        let poison = policy.poison.clone();
        let mut log = lock(&shared.log);
        let index = log.len();
        log.push(Exchange {
            index,
            at: Instant::now(),
            method: request.method.clone(),
            target: request.target.clone(),
            body: request.body.clone(),
            token_digest,
            action,
            upstream_status: None,
            upstream_code: None,
            client_status: None,
            retry_after: None,
        });
        (index, action, poison)
    };
    let record = |upstream: Option<&Upstream>, client_status: Option<u16>, retry: Option<u64>| {
        let mut log = lock(&shared.log);
        let entry = &mut log[index];
        entry.upstream_status = upstream.map(|u| u.status);
        entry.upstream_code = upstream.and_then(|u| u.code.clone());
        entry.client_status = client_status;
        entry.retry_after = retry;
    };

    match action {
        Action::FailBefore {
            status,
            retry_after,
        } => {
            record(None, Some(status), retry_after);
            let _ = client.write_all(&injected(status, retry_after)).await;
        }
        Action::Hold => {
            hold(&mut client).await;
        }
        Action::Forward | Action::Poison => {
            let body = match (&action, &poison) {
                (Action::Poison, Some(id)) => poisoned(&request.body, id),
                _ => request.body.clone(),
            };
            let Some(answer) = forward(shared.upstream, &request.to_upstream(&body)).await else {
                return; // upstream unreachable: the client sees a closed connection
            };
            record(Some(&answer), Some(answer.status), answer.retry_after);
            let _ = client.write_all(&answer.bytes).await;
        }
        Action::ForwardThenDrop | Action::ForwardThenFail { .. } | Action::ForwardThenHold => {
            let answer = forward(shared.upstream, &request.to_upstream(&request.body)).await;
            match action {
                Action::ForwardThenFail { status } => {
                    record(answer.as_ref(), Some(status), None);
                    let _ = client.write_all(&injected(status, None)).await;
                }
                Action::ForwardThenHold => {
                    record(answer.as_ref(), None, None);
                    hold(&mut client).await;
                }
                _ => record(answer.as_ref(), None, None),
            }
        }
    }
    let _ = client.shutdown().await;
}
