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
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{timeout, Instant};

/// Longest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Longest request body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// How long a held connection is kept at most (well past any client timeout used here).
const HOLD_CAP: Duration = Duration::from_secs(60);
/// How long reading a request or an upstream answer may take.
const IO_LIMIT: Duration = Duration::from_secs(30);

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

/// A parsed request.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The request as sent upstream: same method, target and headers, the given body, and
    /// `connection: close`.
    fn to_upstream(&self, body: &[u8]) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for (k, v) in &self.headers {
            let hop = [
                "connection",
                "keep-alive",
                "content-length",
                "transfer-encoding",
            ]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h));
            if !hop {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str(&format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        ));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Reads one request (head and `content-length` body); `None` if the client went away or
/// sent something this proxy does not speak.
async fn read_request(client: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let n = timeout(IO_LIMIT, client.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut request = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if request.header("transfer-encoding").is_some() {
        return None; // the client under test always sends a content-length
    }
    let length: usize = request
        .header("content-length")
        .map_or(Some(0), |v| v.parse().ok())?;
    if length > MAX_BODY {
        return None;
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = timeout(IO_LIMIT, client.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    request.body = body;
    Some(request)
}

/// PostgREST's answer, read to the end of its connection.
struct Upstream {
    status: u16,
    code: Option<String>,
    retry_after: Option<u64>,
    /// The response with its connection header replaced by `connection: close`.
    bytes: Vec<u8>,
}

async fn forward(upstream: SocketAddr, request: &[u8]) -> Option<Upstream> {
    let mut stream = timeout(IO_LIMIT, TcpStream::connect(upstream))
        .await
        .ok()?
        .ok()?;
    // PostgREST may answer (a 401, say) before it has read the whole body and then reset
    // the connection: a failed write is not the end, the answer may be there to read.
    let _ = timeout(IO_LIMIT, stream.write_all(request)).await;
    let raw = timeout(IO_LIMIT, read_response(&mut stream)).await.ok()?;
    let head_end = find_head_end(&raw)?;
    let head = std::str::from_utf8(&raw[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let mut out = format!("{status_line}\r\n");
    let mut retry_after = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("connection")
            || k.trim().eq_ignore_ascii_case("keep-alive")
        {
            continue;
        }
        if k.trim().eq_ignore_ascii_case("retry-after") {
            retry_after = v.trim().parse().ok();
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("connection: close\r\n\r\n");
    let body = &raw[head_end + 4..];
    // PostgREST's error bodies are `{code, details, hint, message}`, often chunked.
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let decoded = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    let code = serde_json::from_slice::<Value>(&decoded)
        .ok()
        .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_owned));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    Some(Upstream {
        status,
        code,
        retry_after,
        bytes,
    })
}

/// Reads one response: to the end of its `content-length` or last chunk, or to the end of the
/// connection (or a reset, keeping what arrived before it).
async fn read_response(stream: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return raw,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
        if response_complete(&raw) {
            return raw;
        }
    }
}

/// The payload of a chunked body (as much as is well formed).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size.filter(|s| *s > 0) else {
            break;
        };
        let start = line_end + 2;
        let Some(data) = body.get(start..start + size) else {
            break;
        };
        out.extend_from_slice(data);
        body = body.get(start + size + 2..).unwrap_or(&[]);
    }
    out
}

/// Whether `raw` holds a whole response.
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = find_head_end(raw) else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    match length {
        Some(length) => body.len() >= length,
        None if head.contains("transfer-encoding: chunked") => body.ends_with(b"0\r\n\r\n"),
        None => false,
    }
}

/// An injected PostgREST-style error answer.
fn injected(status: u16, retry_after: Option<u64>) -> Vec<u8> {
    let reason = match status {
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!(
        r#"{{"code":"PGRST000","details":null,"hint":null,"message":"injected fault {status}"}}"#
    );
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(seconds) = retry_after {
        head.push_str(&format!("retry-after: {seconds}\r\n"));
    }
    head.push_str("\r\n");
    (head + &body).into_bytes()
}

/// Keeps the connection open without answering until the client closes it.
async fn hold(client: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    let _ = timeout(HOLD_CAP, async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
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
