//! [`FileDiscovery`]: a file of `host:port` lines, re-read when it changes.

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tracing::warn;

use super::dns::{DnsResolver, SystemResolver};
use super::{error_chain, Discovery, DiscoveryError, MAX_DISCOVERED_ADDRS};

/// How many host names of a seed file are resolved at once.
const CONCURRENT_LOOKUPS: usize = 8;
/// A bad line is quoted in errors up to this many characters.
const QUOTED_CHARS: usize = 200;
/// A file whose modification time is this close to the moment it was read may be written
/// again within the file system's timestamp granularity without its time changing: it is
/// read again at the next poll (git's "racy clean" rule).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// One entry of a seed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SeedEntry {
    /// An IP literal with a port, e.g. `10.0.0.5:7000` or `[::1]:7000`.
    Addr(SocketAddr),
    /// A host name with a port, resolved at every poll.
    Host(String, u16),
}

/// Parses a seed list: one `host:port` per line (an IPv6 address in brackets,
/// `[::1]:7000`); blank lines and everything after a `#` are ignored. Returns the entries of
/// the good lines and an [`DiscoveryError::InvalidLine`] for each bad one.
pub(crate) fn parse_seed_list(text: &str) -> (Vec<SeedEntry>, Vec<DiscoveryError>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match parse_entry(line) {
            Ok(entry) => entries.push(entry),
            Err(reason) => errors.push(DiscoveryError::InvalidLine {
                line: index + 1,
                content: line.chars().take(QUOTED_CHARS).collect(),
                reason,
            }),
        }
    }
    (entries, errors)
}

fn parse_entry(line: &str) -> Result<SeedEntry, &'static str> {
    if line.chars().any(char::is_whitespace) {
        return Err("expected one host:port per line");
    }
    if let Ok(addr) = line.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err("port 0 cannot be reached");
        }
        return Ok(SeedEntry::Addr(addr));
    }
    let Some((host, port)) = line.rsplit_once(':') else {
        return Err("missing :port");
    };
    let port: u16 = port
        .parse()
        .map_err(|_| "the port is not a number from 1 to 65535")?;
    if port == 0 {
        return Err("port 0 cannot be reached");
    }
    if host.starts_with('[') || host.contains(':') {
        return Err("not an IPv6 address (write it as [addr]:port)");
    }
    let valid_name = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= 63)
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !valid_name {
        return Err("not a host name or IP address");
    }
    Ok(SeedEntry::Host(host.to_string(), port))
}

/// What identifies a version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

/// A read of the file on a blocking thread.
type PendingRead = JoinHandle<Result<Vec<SeedEntry>, DiscoveryError>>;

/// The file as last read.
#[derive(Debug)]
struct Cached {
    stamp: FileStamp,
    /// Read again at the next poll even if the stamp is unchanged (see [`RACY_WINDOW`]).
    racy: bool,
    contents: String,
    entries: Vec<SeedEntry>,
}

/// A file of `host:port` lines, re-read when it changes: one seed per line, an IP address
/// (IPv6 in brackets: `[fd00::7]:7000`) or a host name (resolved at every poll); blank lines
/// and everything after a `#` are ignored.
///
/// ```text
/// # the storage nodes
/// 10.0.0.5:7000
/// [fd00::7]:7000   # the IPv6 one
/// db-3.internal:7000
/// ```
///
/// The file is read again when its modification time or length changes (and at the next
/// poll after a change made within two seconds of a read, which a coarse file-system clock
/// could hide). A bad line is logged at warn level, with its number and text, once per
/// version of the file; the good lines are used. A host name that does not resolve is logged
/// and skipped. A file that is missing or unreadable, or larger than
/// [`MAX_FILE_BYTES`](Self::MAX_FILE_BYTES), is an error: the node keeps the last good set.
/// Replace the file atomically (write a temporary file, then rename it over) so that a poll
/// never reads half of it.
///
/// The file is read on one of tokio's blocking threads, and at most one read per source runs
/// at a time. A read that hangs (a FIFO nobody writes to, a hard NFS mount whose server is
/// gone) holds that one thread until it returns: the polls meanwhile wait for it and time
/// out (the discovery timeout), keeping the last good set, instead of each parking another
/// thread until tokio's blocking pool, shared by the whole process, is used up. A poll
/// waiting when the read returns gets its answer.
///
/// ```
/// use datacake_node::{ConnectionConfig, DatacakeNodeBuilder, FileDiscovery};
///
/// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
/// let builder = DatacakeNodeBuilder::new(1, config)
///     .with_discovery(FileDiscovery::new("/etc/datacake/peers"));
/// ```
pub struct FileDiscovery {
    path: PathBuf,
    name: String,
    resolver: Arc<dyn DnsResolver>,
    cached: Arc<Mutex<Option<Cached>>>,
    /// The read running on a blocking thread, if any: a poll that times out leaves it here
    /// for the next poll to wait for.
    reading: tokio::sync::Mutex<Option<PendingRead>>,
}

impl fmt::Debug for FileDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileDiscovery")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileDiscovery {
    /// The largest seed file read: 1 MiB.
    pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

    /// The seeds listed in the file at `path`; host names are resolved by the
    /// [`SystemResolver`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_resolver(path, SystemResolver)
    }

    /// The seeds listed in the file at `path`; host names are resolved by `resolver`.
    ///
    /// ```
    /// use datacake_node::{FileDiscovery, SystemResolver};
    ///
    /// let source = FileDiscovery::with_resolver("peers.txt", SystemResolver);
    /// ```
    pub fn with_resolver(path: impl Into<PathBuf>, resolver: impl DnsResolver) -> Self {
        let path = path.into();
        Self {
            name: format!("file {}", path.display()),
            path,
            resolver: Arc::new(resolver),
            cached: Arc::new(Mutex::new(None)),
            reading: tokio::sync::Mutex::new(None),
        }
    }

    /// Reads and parses the file if it changed; returns its entries.
    ///
    /// std::fs runs on a blocking thread (tokio's `fs` does the same), which no timeout can
    /// stop: at most one read runs at a time. A caller that arrives while one runs (the
    /// previous poll timed out and dropped its wait) waits for that read instead of starting
    /// another; one that finished unawaited is dropped, its answer being old, and the file
    /// read again (from the cache unless it changed).
    async fn entries(&self) -> Result<Vec<SeedEntry>, DiscoveryError> {
        let mut reading = self.reading.lock().await;
        if reading.as_ref().is_some_and(JoinHandle::is_finished) {
            *reading = None;
        }
        let read = reading.get_or_insert_with(|| {
            let path = self.path.clone();
            let cached = self.cached.clone();
            let name = self.name.clone();
            tokio::task::spawn_blocking(move || refresh(&path, &name, &cached))
        });
        // Cancelled here (a timeout), the read stays in `reading` for the next caller.
        let result = read.await;
        *reading = None;
        result.map_err(|join| DiscoveryError::Other(Box::new(join)))?
    }
}

/// The file's entries, read again only if its stamp changed or the last read was racy.
fn refresh(
    path: &Path,
    name: &str,
    cached: &Mutex<Option<Cached>>,
) -> Result<Vec<SeedEntry>, DiscoveryError> {
    let io_error = |source| DiscoveryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(io_error)?;
    let stamp = FileStamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
    };
    if let Some(cached) = cached.lock().as_ref() {
        if cached.stamp == stamp && !cached.racy {
            return Ok(cached.entries.clone());
        }
    }
    let read_at = SystemTime::now();
    let mut contents = String::new();
    let file = std::fs::File::open(path).map_err(io_error)?;
    let read = file
        .take(FileDiscovery::MAX_FILE_BYTES + 1)
        .read_to_string(&mut contents)
        .map_err(io_error)?;
    if read as u64 > FileDiscovery::MAX_FILE_BYTES {
        return Err(DiscoveryError::FileTooLarge {
            path: path.to_path_buf(),
            limit: FileDiscovery::MAX_FILE_BYTES,
        });
    }
    let racy = stamp.modified.is_none_or(|modified| {
        read_at
            .duration_since(modified)
            .map_or(true, |age| age < RACY_WINDOW)
    });
    let mut guard = cached.lock();
    if let Some(cached) = guard.as_mut() {
        if cached.contents == contents {
            cached.stamp = stamp;
            cached.racy = racy;
            return Ok(cached.entries.clone());
        }
    }
    let (entries, errors) = parse_seed_list(&contents);
    for error in &errors {
        warn!(source = %name, error = %error, "seed file: bad line skipped");
    }
    *guard = Some(Cached {
        stamp,
        racy,
        contents,
        entries: entries.clone(),
    });
    Ok(entries)
}

#[async_trait]
impl Discovery for FileDiscovery {
    fn name(&self) -> &str {
        &self.name
    }

    async fn discover(&self) -> Result<Vec<SocketAddr>, DiscoveryError> {
        let entries = self.entries().await?;
        let mut addrs = Vec::new();
        let mut hosts = Vec::new();
        for entry in entries {
            match entry {
                SeedEntry::Addr(addr) => addrs.push(addr),
                SeedEntry::Host(host, port) => hosts.push((host, port)),
            }
        }
        addrs.truncate(MAX_DISCOVERED_ADDRS);
        let mut lookups = futures::stream::iter(hosts)
            .map(|(host, port)| async move {
                let result = self.resolver.resolve(&host, port).await;
                (host, port, result)
            })
            .buffered(CONCURRENT_LOOKUPS);
        while addrs.len() < MAX_DISCOVERED_ADDRS {
            let Some((host, port, result)) = lookups.next().await else {
                break;
            };
            match result {
                Ok(resolved) => addrs.extend(resolved),
                Err(source) => {
                    let error = DiscoveryError::Resolve { host, port, source };
                    warn!(source = %self.name, error = %error_chain(&error), "seed file: host skipped");
                }
            }
        }
        addrs.truncate(MAX_DISCOVERED_ADDRS);
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SeedEntry {
        SeedEntry::Addr(s.parse().unwrap())
    }

    fn bad_lines(errors: &[DiscoveryError]) -> Vec<(usize, &str, &str)> {
        errors
            .iter()
            .map(|e| match e {
                DiscoveryError::InvalidLine {
                    line,
                    content,
                    reason,
                } => (*line, content.as_str(), *reason),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn comments_blanks_ipv6_and_names() {
        let text = "# the cluster\n\n  10.0.0.5:7000  \n[::1]:7000 # loopback v6\n\
                    \t\ndb-1.internal:7000\n[fd00::7]:8000\nnode_2:9\n   # indented comment\n";
        let (entries, errors) = parse_seed_list(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            entries,
            vec![
                addr("10.0.0.5:7000"),
                addr("[::1]:7000"),
                SeedEntry::Host("db-1.internal".into(), 7000),
                addr("[fd00::7]:8000"),
                SeedEntry::Host("node_2".into(), 9),
            ]
        );
        let (entries, errors) = parse_seed_list("");
        assert!(entries.is_empty() && errors.is_empty());
        assert_eq!(parse_seed_list("\r\n# only\r\n").0, vec![]);
        // Windows line ends.
        assert_eq!(
            parse_seed_list("10.0.0.1:1\r\n").0,
            vec![addr("10.0.0.1:1")]
        );
    }

    #[test]
    fn bad_lines_are_named_and_the_good_ones_kept() {
        let text = "10.0.0.5:7000\nno-port\n::1:7000\n10.0.0.6:70000\n\
                    host:0\na b:1\n[::1]\n:7000\nbad/name:1\n10.0.0.7:7000\n[zz]:1\nx..y:1\n";
        let (entries, errors) = parse_seed_list(text);
        assert_eq!(entries, vec![addr("10.0.0.5:7000"), addr("10.0.0.7:7000")]);
        let lines = bad_lines(&errors);
        let numbers: Vec<usize> = lines.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(numbers, vec![2, 3, 4, 5, 6, 7, 8, 9, 11, 12]);
        assert_eq!(lines[0], (2, "no-port", "missing :port"));
        assert_eq!(
            lines[1],
            (
                3,
                "::1:7000",
                "not an IPv6 address (write it as [addr]:port)"
            )
        );
        assert_eq!(lines[2].2, "the port is not a number from 1 to 65535");
        assert_eq!(lines[3].2, "port 0 cannot be reached");
        assert_eq!(lines[4].2, "expected one host:port per line");
        assert_eq!(lines[5].2, "the port is not a number from 1 to 65535");
        assert_eq!(lines[6].2, "not a host name or IP address");
        assert_eq!(lines[7].2, "not a host name or IP address");
        // The error names the line and quotes it.
        assert_eq!(errors[0].to_string(), "line 2: missing :port: \"no-port\"");
    }

    #[test]
    fn a_long_bad_line_is_quoted_short() {
        let line = "x".repeat(10_000);
        let (_, errors) = parse_seed_list(&line);
        let lines = bad_lines(&errors);
        assert_eq!(lines[0].1.len(), QUOTED_CHARS);
    }

    #[tokio::test]
    async fn the_file_is_read_again_when_it_changes() {
        let dir = test_helper::TempDir::new("seed-file");
        let path = dir.join("peers");
        let source = FileDiscovery::new(&path);
        let missing = source.discover().await.expect_err("no file yet");
        assert!(matches!(missing, DiscoveryError::Io { .. }), "{missing:?}");

        std::fs::write(&path, "127.0.0.1:7000\nbad line\n").unwrap();
        let first = source.discover().await.unwrap();
        assert_eq!(first, vec!["127.0.0.1:7000".parse::<SocketAddr>().unwrap()]);

        // Same length, new contents, written at once (possibly within one mtime tick).
        std::fs::write(&path, "127.0.0.1:7001\nbad line\n").unwrap();
        let second = source.discover().await.unwrap();
        assert_eq!(
            second,
            vec!["127.0.0.1:7001".parse::<SocketAddr>().unwrap()]
        );

        std::fs::write(&path, "[::1]:7002\nlocalhost:7003\n").unwrap();
        let third = source.discover().await.unwrap();
        assert_eq!(third[0], "[::1]:7002".parse::<SocketAddr>().unwrap());
        assert!(third.len() >= 2);
        assert!(third[1..]
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 7003));
    }

    #[tokio::test]
    async fn an_oversized_file_is_refused() {
        let dir = test_helper::TempDir::new("seed-file-large");
        let path = dir.join("peers");
        let line = "127.0.0.1:7000\n";
        let copies = (FileDiscovery::MAX_FILE_BYTES as usize / line.len()) + 1;
        std::fs::write(&path, line.repeat(copies)).unwrap();
        let error = FileDiscovery::new(&path).discover().await.unwrap_err();
        assert!(
            matches!(error, DiscoveryError::FileTooLarge { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_file_source_takes_at_most_the_cap() {
        let dir = test_helper::TempDir::new("seed-file-cap");
        let path = dir.join("peers");
        let text: String = (1..=3000u32)
            .map(|n| format!("10.0.{}.{}:7000\n", n / 256, n % 256))
            .collect();
        std::fs::write(&path, text).unwrap();
        let addrs = FileDiscovery::new(&path).discover().await.unwrap();
        assert_eq!(addrs.len(), MAX_DISCOVERED_ADDRS);
    }
}
