//! Bearer-token authentication of HTTP requests (`--auth-token-file`).
//!
//! The token is the file's contents with surrounding whitespace trimmed. A request is let in
//! only with `Authorization: Bearer <token>`; the comparison takes the same time whatever
//! bytes differ, so response times do not reveal how much of a guess was right (only whether
//! its length was).

use std::path::{Path, PathBuf};

use http::header::AUTHORIZATION;
use http::HeaderMap;

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    /// The file cannot be read.
    #[error("cannot read the token file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is empty or holds only whitespace.
    #[error("the token file {path} is empty")]
    Empty { path: PathBuf },
    /// The token has a character a header value cannot carry unescaped.
    #[error("the token in {path} must be printable ASCII without spaces")]
    Unprintable { path: PathBuf },
}

/// The token every request must present.
pub(crate) struct BearerToken(Vec<u8>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A bearer token, but not the right one.
    Invalid,
}

impl BearerToken {
    /// The token in the file at `path` (contents trimmed).
    pub(crate) fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::new(text.trim()).map_err(|error| match error {
            TokenProblem::Empty => TokenError::Empty {
                path: path.to_owned(),
            },
            TokenProblem::Unprintable => TokenError::Unprintable {
                path: path.to_owned(),
            },
        })
    }

    fn new(token: &str) -> Result<Self, TokenProblem> {
        if token.is_empty() {
            return Err(TokenProblem::Empty);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenProblem::Unprintable);
        }
        Ok(Self(token.as_bytes().to_vec()))
    }

    /// `Ok` if `headers` carry `Authorization: Bearer <this token>` (the scheme is
    /// case-insensitive, as HTTP auth schemes are).
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let value = headers.get(AUTHORIZATION).ok_or(Refusal::Missing)?;
        let value = value.as_bytes();
        let (scheme, presented) = match value.iter().position(|&b| b == b' ') {
            Some(space) => (&value[..space], value[space + 1..].trim_ascii_start()),
            None => return Err(Refusal::Missing),
        };
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return Err(Refusal::Missing);
        }
        if constant_time_eq(presented, &self.0) {
            Ok(())
        } else {
            Err(Refusal::Invalid)
        }
    }
}

/// Who may call what: with a token, every request needs it, except `/health` and `/metrics`
/// when those are open (`--open-health`).
#[derive(Debug)]
pub(crate) struct Access {
    token: Option<BearerToken>,
    open_health: bool,
}

impl Access {
    /// Every request needs `token` (none: everything is open), except `/health` and
    /// `/metrics` if `open_health`.
    pub(crate) fn new(token: Option<BearerToken>, open_health: bool) -> Self {
        Self { token, open_health }
    }

    /// Whether every request is let in (no token).
    pub(crate) fn is_open(&self) -> bool {
        self.token.is_none()
    }

    /// `Ok` if a request for `path` with `headers` may be served.
    pub(crate) fn check(&self, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        if self.open_health && matches!(path, "/health" | "/metrics") {
            return Ok(());
        }
        token.check(headers)
    }
}

#[derive(Debug)]
enum TokenProblem {
    Empty,
    Unprintable,
}

/// Whether `a` and `b` are equal, looking at every byte whatever the differences: the time
/// depends on the lengths only. Unequal lengths return at once (that reveals the length of
/// the token, nothing of its bytes).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"Secret"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret", b""));
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_the_bearer_token_lets_a_request_in() {
        let token = BearerToken::new("s3cr3t-t0ken").unwrap();
        assert_eq!(token.check(&headers("Bearer s3cr3t-t0ken")), Ok(()));
        assert_eq!(token.check(&headers("bearer s3cr3t-t0ken")), Ok(()));
        assert_eq!(token.check(&HeaderMap::new()), Err(Refusal::Missing));
        assert_eq!(
            token.check(&headers("Basic s3cr3t-t0ken")),
            Err(Refusal::Missing)
        );
        assert_eq!(token.check(&headers("s3cr3t-t0ken")), Err(Refusal::Missing));
        assert_eq!(
            token.check(&headers("Bearer s3cr3t")),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            token.check(&headers("Bearer s3cr3t-t0ken2")),
            Err(Refusal::Invalid)
        );
        assert_eq!(token.check(&headers("Bearer ")), Err(Refusal::Invalid));
    }

    #[test]
    fn health_and_metrics_are_open_only_when_asked() {
        let token = || Some(BearerToken::new("t").unwrap());
        let (closed, open) = (Access::new(token(), false), Access::new(token(), true));
        let none = HeaderMap::new();
        for path in ["/health", "/metrics"] {
            assert_eq!(closed.check(path, &none), Err(Refusal::Missing), "{path}");
            assert_eq!(open.check(path, &none), Ok(()), "{path}");
            assert_eq!(closed.check(path, &headers("Bearer t")), Ok(()), "{path}");
        }
        for path in ["/cluster", "/users/alice", "/health/x", "/metricsx"] {
            assert_eq!(open.check(path, &none), Err(Refusal::Missing), "{path}");
        }
        assert_eq!(
            Access::new(None, false).check("/users/alice", &none),
            Ok(())
        );
    }

    #[test]
    fn token_files_are_trimmed_and_must_hold_a_token() {
        let dir = std::env::temp_dir().join(format!("kv-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  abc.DEF-123\n").unwrap();
        let token = BearerToken::from_file(&file).unwrap();
        assert_eq!(token.check(&headers("Bearer abc.DEF-123")), Ok(()));
        std::fs::write(&file, " \n\t").unwrap();
        assert!(matches!(
            BearerToken::from_file(&file),
            Err(TokenError::Empty { .. })
        ));
        std::fs::write(&file, "two words").unwrap();
        assert!(matches!(
            BearerToken::from_file(&file),
            Err(TokenError::Unprintable { .. })
        ));
        assert!(matches!(
            BearerToken::from_file(&dir.join("missing")),
            Err(TokenError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
