//! A raw HTTP/1.1 client for tests of HTTP servers: one request per connection, or requests
//! on a kept-alive connection, over any stream (TCP or TLS), including chunked and partial
//! requests.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP response.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The status line and headers, as received.
    pub headers: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` field of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {self:?}"))
            .to_owned()
    }

    /// The value of the header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// The body as text (panics if it is not UTF-8).
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }
}

/// The head of a request closing its connection: the request line, `Host`, the `extra`
/// header lines (each ending in `\r\n`), `Content-Length` and `Connection: close`.
pub fn head(method: &str, path: &str, extra: &str, body_len: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Content-Length: {body_len}\r\nConnection: close\r\n\r\n"
    )
}

/// One HTTP/1.1 request on a fresh plain connection to `127.0.0.1:port`.
pub async fn request(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<Reply> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    exchange(stream, head(method, path, "", body.len()).as_bytes(), body).await
}

/// Like [`request`], with a chunked body (no declared length).
pub async fn request_chunked(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<Reply> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut chunked = Vec::new();
    for chunk in body.chunks(512) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    exchange(stream, head.as_bytes(), &chunked).await
}

/// Sends `head` and `body` on `stream` and reads the response until the server closes it.
pub async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<Reply> {
    stream.write_all(head).await?;
    // The server may answer (e.g. 413) and stop reading before the whole body is sent.
    let _ = stream.write_all(body).await;
    let _ = stream.flush().await;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_reply(&raw)
}

/// The status, headers and body of a whole response.
fn parse_reply(raw: &[u8]) -> std::io::Result<Reply> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    Ok(Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// One GET on an open keep-alive connection: reads the response by its `Content-Length`,
/// leaving the connection open.
pub async fn keep_alive_request(stream: &mut TcpStream, path: &str) -> std::io::Result<Reply> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let headers = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let len: usize = headers
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| std::io::Error::other("no content-length"))?;
            if raw.len() >= split + 4 + len {
                return parse_reply(&raw);
            }
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Reads from `stream` until the peer closes it (EOF or reset), within `deadline`; returns
/// the bytes received, or `None` if it was still open at the deadline.
pub async fn read_until_closed(stream: &mut TcpStream, deadline: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(deadline, read_all).await.ok()?;
    Some(received)
}

/// Opens a request that stays in flight: a `PUT path` declaring a body of `len` bytes with
/// `Expect: 100-continue`, returned once the server has answered `100 Continue` (its handler
/// is reading the body, which never comes until the stream is written to or dropped).
pub async fn request_in_flight(port: u16, path: &str, len: usize) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 256];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let reply = String::from_utf8_lossy(&raw);
    if !reply.starts_with("HTTP/1.1 100") {
        return Err(std::io::Error::other(format!("no 100 Continue: {reply:?}")));
    }
    Ok(stream)
}

/// Where a server is, by its `/health`: `Some(status)` (the JSON `status`, e.g. `serving`,
/// `leaving`; empty if there is none) if it answers, `None` if it does not (port closed).
pub async fn health_status(port: u16) -> Option<String> {
    let reply = request(port, "GET", "/health", b"").await.ok()?;
    let body = serde_json::from_slice::<serde_json::Value>(&reply.body).unwrap_or_default();
    Some(body["status"].as_str().unwrap_or_default().to_owned())
}

/// The value of the sample `name` (without labels) in a Prometheus text page; panics if
/// there is none.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}:\n{text}"))
}

/// Checks a server's stall timeout on a request body (the server runs with
/// `--stall-timeout-ms` of `stall` and one connection at most): a request to `path` whose
/// 10-byte body never comes gets 408 `body_timeout`, no sooner than `stall`, with its
/// connection closed; then the slot is free again, `/health` answers 200 and `path` was never
/// written (404). Each request retries until the previous connection's slot came back, for
/// at most `deadline`.
pub async fn assert_a_stalled_body_is_cut_off(
    port: u16,
    path: &'static str,
    stall: Duration,
    deadline: Duration,
) {
    let mut stalled = crate::wait_for_value("a request in flight", deadline, || async move {
        request_in_flight(port, path, 10).await.ok()
    })
    .await;
    let started = std::time::Instant::now();
    let received = read_until_closed(&mut stalled, deadline)
        .await
        .expect("a connection whose body stopped was still open");
    let answer = String::from_utf8_lossy(&received);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    // (A little early is the timer's granularity, not a missing timeout.)
    assert!(
        started.elapsed() >= stall * 9 / 10,
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    let served = |path: &'static str| {
        crate::wait_for_value("the slot to come free", deadline, move || async move {
            request(port, "GET", path, b"").await.ok()
        })
    };
    assert_eq!(served("/health").await.status, 200);
    assert_eq!(served(path).await.status, 404, "nothing was written");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed() {
        let reply =
            parse_reply(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnone").unwrap();
        assert_eq!(reply.status, 404);
        assert_eq!(reply.header("content-type"), Some("text/plain"));
        assert_eq!(reply.text(), "none");
    }

    #[test]
    fn metrics_are_read_by_name() {
        let page = "# TYPE a counter\na 3\na_b{x=\"1\"} 4\nb 2.5\n";
        assert_eq!(metric(page, "a"), 3.0);
        assert_eq!(metric(page, "b"), 2.5);
    }
}
