//! A minimal HTTP/1.1 client for the load generator: one kept-alive connection, one request
//! at a time (no pipelining), bodies framed by `Content-Length` (what `replicated-kv`
//! sends; a chunked reply is refused as an error rather than misread).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Why a request got no HTTP answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection could not be opened.
    Connect(std::io::Error),
    /// The connection failed or closed before the whole answer arrived.
    Io(std::io::Error),
    /// No answer within the client's deadline.
    Timeout,
    /// The bytes received are not an HTTP/1.1 answer this client understands.
    Malformed(&'static str),
}

impl Failure {
    /// A short label for counting failures by kind, e.g. `"connect: refused"`.
    pub(crate) fn kind(&self) -> String {
        fn io_kind(e: &std::io::Error) -> String {
            use std::io::ErrorKind as K;
            match e.kind() {
                K::ConnectionRefused => "refused".into(),
                K::ConnectionReset => "reset".into(),
                K::ConnectionAborted => "aborted".into(),
                K::BrokenPipe => "broken pipe".into(),
                K::UnexpectedEof => "closed".into(),
                other => format!("{other:?}").to_lowercase(),
            }
        }
        match self {
            Failure::Connect(e) => format!("connect: {}", io_kind(e)),
            Failure::Io(e) => format!("io: {}", io_kind(e)),
            Failure::Timeout => "timeout".into(),
            Failure::Malformed(what) => format!("malformed: {what}"),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "cannot connect: {e}"),
            Failure::Io(e) => write!(f, "connection failed: {e}"),
            Failure::Timeout => f.write_str("no answer in time"),
            Failure::Malformed(what) => write!(f, "malformed answer: {what}"),
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The status code.
    pub(crate) status: u16,
    /// The body.
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// The `error` field of a JSON error body (`replicated-kv`'s error shape), or `"?"`.
    pub(crate) fn error_code(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "?".into())
    }
}

/// One kept-alive HTTP/1.1 connection.
#[derive(Debug)]
pub(crate) struct Connection {
    stream: TcpStream,
    /// Bytes read past the previous answer (none, without pipelining; kept for correctness).
    buf: Vec<u8>,
    /// The request being written.
    out: Vec<u8>,
}

impl Connection {
    /// Opens a connection to `addr` (Nagle off: requests are single small writes).
    pub(crate) async fn open(addr: SocketAddr, deadline: Duration) -> Result<Self, Failure> {
        let stream = tokio::time::timeout(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| Failure::Timeout)?
            .map_err(Failure::Connect)?;
        stream.set_nodelay(true).map_err(Failure::Connect)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
            out: Vec::with_capacity(512),
        })
    }

    /// Sends one request and reads its answer, within `deadline`. Returns the answer and
    /// whether the connection can carry another request.
    pub(crate) async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        deadline: Duration,
    ) -> Result<(Reply, bool), Failure> {
        tokio::time::timeout(deadline, self.exchange(method, path, body))
            .await
            .map_err(|_| Failure::Timeout)?
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(Reply, bool), Failure> {
        use std::io::Write;
        self.out.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(
            self.out,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.out.extend_from_slice(body);
        self.stream
            .write_all(&self.out)
            .await
            .map_err(Failure::Io)?;

        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Failure::Malformed("head too large"));
            }
            self.fill().await?;
        };
        let head = parse_head(&self.buf[..head_end])?;
        let body_len = match head.content_length {
            Some(n) => n,
            None if head.status == 204 || head.status == 304 || method == "HEAD" => 0,
            None => return Err(Failure::Malformed("no content-length")),
        };
        while self.buf.len() < head_end + body_len {
            self.fill().await?;
        }
        let body = self.buf[head_end..head_end + body_len].to_vec();
        self.buf.drain(..head_end + body_len);
        Ok((
            Reply {
                status: head.status,
                body,
            },
            !head.close,
        ))
    }

    /// Reads more bytes; a closed connection is an error (an answer is always expected).
    async fn fill(&mut self) -> Result<(), Failure> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.map_err(Failure::Io)?;
        if n == 0 {
            return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// What the client needs from a response head.
#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    content_length: Option<usize>,
    close: bool,
}

fn parse_head(raw: &[u8]) -> Result<Head, Failure> {
    let text = std::str::from_utf8(raw).map_err(|_| Failure::Malformed("head not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(Failure::Malformed("not HTTP/1.x"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(Failure::Malformed("no status code"))?;
    let mut head = Head {
        status,
        content_length: None,
        close: status_line.starts_with("HTTP/1.0"),
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Failure::Malformed("header without ':'"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(
                value
                    .parse()
                    .map_err(|_| Failure::Malformed("bad content-length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Failure::Malformed("chunked answer"));
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(head)
}

/// One GET on a fresh connection (for polling `/cluster` and `/health`).
pub(crate) async fn get_once(addr: SocketAddr, path: &str) -> Result<Reply, Failure> {
    let deadline = Duration::from_secs(2);
    let mut conn = Connection::open(addr, deadline).await?;
    Ok(conn.request("GET", path, b"", deadline).await?.0)
}

/// One request on a fresh connection.
pub(crate) async fn request_once(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<Reply, Failure> {
    let deadline = Duration::from_secs(5);
    let mut conn = Connection::open(addr, deadline).await?;
    Ok(conn.request(method, path, body, deadline).await?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed() {
        let head = parse_head(b"HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n").unwrap();
        assert_eq!(
            head,
            Head {
                status: 204,
                content_length: None,
                close: false
            }
        );
        let head =
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\n")
                .unwrap();
        assert_eq!(
            head,
            Head {
                status: 200,
                content_length: Some(12),
                close: true
            }
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn a_kept_alive_connection_carries_several_requests() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            let heads = |seen: &[u8]| seen.windows(4).filter(|w| w == b"\r\n\r\n").count();
            while heads(&seen) < 1 {
                let n = s.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            // The first answer split across writes, to exercise the reader.
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe")
                .await
                .unwrap();
            s.write_all(b"llo").await.unwrap();
            while heads(&seen) < 2 {
                let n = s.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            seen
        });
        let mut conn = Connection::open(addr, Duration::from_secs(5))
            .await
            .unwrap();
        let (reply, open) = conn
            .request("GET", "/a", b"", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            (reply.status, reply.body.as_slice(), open),
            (200, &b"hello"[..], true)
        );
        let (reply, _) = conn
            .request("PUT", "/b", b"", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(reply.status, 204);
        let seen = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(seen.starts_with("GET /a HTTP/1.1\r\n"), "{seen}");
        assert!(seen.contains("PUT /b HTTP/1.1\r\n"), "{seen}");
    }
}
