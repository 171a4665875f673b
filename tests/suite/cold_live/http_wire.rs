//! The bits of HTTP/1.1 the fault proxy speaks: reading a request with a `content-length`
//! body, forwarding it on a fresh upstream connection and reading the answer, injected error
//! answers, and holding a connection without answering.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Longest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Longest request body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// How long a held connection is kept at most (well past any client timeout used here).
const HOLD_CAP: Duration = Duration::from_secs(60);
/// How long reading a request or an upstream answer may take.
const IO_LIMIT: Duration = Duration::from_secs(30);

/// A parsed request.
pub(super) struct Request {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (any case).
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The request as sent upstream: same method, target and headers, the given body, and
    /// `connection: close`.
    pub(super) fn to_upstream(&self, body: &[u8]) -> Vec<u8> {
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
pub(super) async fn read_request(client: &mut TcpStream) -> Option<Request> {
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
pub(super) struct Upstream {
    pub(super) status: u16,
    pub(super) code: Option<String>,
    pub(super) retry_after: Option<u64>,
    /// The response with its connection header replaced by `connection: close`.
    pub(super) bytes: Vec<u8>,
}

pub(super) async fn forward(upstream: SocketAddr, request: &[u8]) -> Option<Upstream> {
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
pub(super) fn injected(status: u16, retry_after: Option<u64>) -> Vec<u8> {
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
pub(super) async fn hold(client: &mut TcpStream) {
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
