//! What one harness run is asked to do: built once from the command line and handed to every
//! suite, which scales its sizes from it.

use std::fmt;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

/// The seed used when `--seed` is not given (the crdt suite's historical seed).
pub(crate) const DEFAULT_SEED: u64 = 0x00DA_7ACA_4E00;

/// A benchmark suite the harness knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SuiteName {
    /// Clock stamps, OR-set merge and memory (datacake-crdt).
    Crdt,
    /// datacake-rpc against raw TCP on loopback.
    Rpc,
    /// Cluster membership and failure detection (datacake-node).
    Gossip,
    /// The eventually consistent store on in-process clusters.
    Ec,
    /// SQLite storage throughput (datacake-sqlite).
    Sqlite,
    /// The Raft extension on a three-node cluster.
    Raft,
    /// `replicated-kv` processes over HTTP, with a SIGKILL and restart (opt-in).
    Kv,
}

impl SuiteName {
    /// The suites a run without `--suite` executes, in order. `kv` is not among them: it
    /// needs the separately built `replicated-kv` binary, so it runs only when asked for.
    pub(crate) const DEFAULT: [SuiteName; 6] = [
        Self::Crdt,
        Self::Rpc,
        Self::Gossip,
        Self::Ec,
        Self::Sqlite,
        Self::Raft,
    ];

    /// The name used on the command line and in result files.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Crdt => "crdt",
            Self::Rpc => "rpc",
            Self::Gossip => "gossip",
            Self::Ec => "ec",
            Self::Sqlite => "sqlite",
            Self::Raft => "raft",
            Self::Kv => "kv",
        }
    }

    /// Whether the suite can honour `--storage storage`. Suites that store nothing honour
    /// only the default, since any other choice would be silently ignored; the ec suite runs
    /// on either storage, the sqlite suite measures SQLite and the raft suite both of its log
    /// stores, whatever the flag says, and the kv suite's processes always store in SQLite.
    pub(crate) fn supports_storage(self, storage: Storage) -> bool {
        match self {
            Self::Ec | Self::Sqlite | Self::Raft | Self::Kv => true,
            Self::Crdt | Self::Rpc | Self::Gossip => storage == Storage::Memory,
        }
    }

    /// A short explanation printed before the suite runs.
    pub(crate) fn explanation(self) -> &'static str {
        match self {
            Self::Crdt => {
                "Hybrid logical clock stamps per second, then the heap cost per key and the merge \
                 time of the OR-set, each beside a std baseline (SystemTime::now, AtomicU64, \
                 HashMap) measured in the same run."
            }
            Self::Rpc => {
                "A 64-byte echo over loopback: datacake-rpc (one multiplexed HTTP/2 channel) \
                 against raw length-prefixed TCP (one connection per call in flight; from 2 to \
                 12 in flight also raw-tcp-1-conn, every call pipelined on one connection, \
                 its ratio datacake-rpc / it), datacake-rpc over mutual TLS against itself in plaintext, and tonic (gRPC, one \
                 channel; its ratio is tonic / datacake-rpc). Client and server each run on \
                 their own single-threaded runtime. Sequential latency (and what each system \
                 adds to raw TCP's p50, tonic's ratio over datacake-rpc's), then closed-loop \
                 throughput per number of calls in flight, each in rounds (8; 4 with --smoke) \
                 that rotate which system goes first; a ratio is the median of the rounds' \
                 ratios. Last, a new channel's first call (TCP, TLS and HTTP/2 handshakes)."
            }
            Self::Gossip => {
                "In-process datacake-node clusters gossiping over loopback every 100 ms: time until \
                 every node sees every member, time until a graceful leave and a crash are noticed \
                 (medians of several runs), and the node clock's stamps per second."
            }
            Self::Ec => {
                "The eventually consistent store on in-process 1/3/5-node clusters: puts, \
                 deletes and reads per second and their latency for each consistency level and \
                 number of concurrent tasks, a Quorum read against a datacake-rpc echo baseline \
                 measured in the same run, 1 MiB puts, memory per key, and how fast a late node \
                 catches up."
            }
            Self::Sqlite => {
                "SqliteStorage on disk (WAL, group commit) with 128-byte documents: single puts \
                 from one and from 64 concurrent callers, 1,000-document bulk puts, and single \
                 gets."
            }
            Self::Raft => {
                "Committed Raft writes per second and their latency on a three-node cluster over \
                 the real RPC, with 1, 64 and 256 concurrent clients, for the in-memory and the \
                 durable SQLite log store."
            }
            Self::Kv => {
                "Real replicated-kv processes on loopback (SQLite in a temp dir), driven over \
                 kept-alive HTTP/1.1 by a closed-loop load generator: 50% PUT (128 B), 40% GET, \
                 10% DELETE on 10k keys (seeded). Baseline of the same run: one process at \
                 level none. Then each cluster size (--nodes, default 3), level (--consistency, \
                 default one,quorum) and number of connections (--concurrency), with the ratio \
                 against the baseline at the same connections. Last, under load at the last \
                 level, node N is SIGKILLed and restarted on its data: failed requests by kind \
                 and the time until it answers, is a member everywhere, serves each level and \
                 has caught up through repair. Needs the replicated-kv binary (--kv-bin, or \
                 next to the harness: cargo build --release -p replicated-kv)."
            }
        }
    }
}

impl fmt::Display for SuiteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Profile {
    /// The smallest configuration that still exercises every code path (CI smoke test).
    Smoke,
    /// The default: every suite in about two minutes on a 2-core machine (116-120 s measured at
    /// commit `2162cde`, the rpc suite's four systems 60-61 s of it).
    Quick,
    /// The complete matrix.
    Full,
}

/// The storage backend of suites that store documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Storage {
    /// The in-memory store.
    Memory,
    /// The SQLite store.
    Sqlite,
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
        })
    }
}

/// A consistency level, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ConsistencyLevel {
    /// Only the local node.
    None,
    /// One peer.
    One,
    /// Two peers.
    Two,
    /// Three peers.
    Three,
    /// A majority of the live cluster.
    Quorum,
    /// A majority of the local data centre.
    LocalQuorum,
    /// A majority of every data centre.
    EachQuorum,
    /// Every live peer.
    All,
}

impl ConsistencyLevel {
    /// The node crate's level.
    pub(crate) fn to_node(self) -> datacake_node::Consistency {
        use datacake_node::Consistency as C;
        match self {
            Self::None => C::None,
            Self::One => C::One,
            Self::Two => C::Two,
            Self::Three => C::Three,
            Self::Quorum => C::Quorum,
            Self::LocalQuorum => C::LocalQuorum,
            Self::EachQuorum => C::EachQuorum,
            Self::All => C::All,
        }
    }
}

/// Everything a suite needs to know about the run. Fields left `None` were not given on the
/// command line; the suite then picks its own values for the [`Profile`].
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunConfig {
    /// Suites to run, in order.
    pub(crate) suites: Vec<SuiteName>,
    /// Whether the suites were named explicitly (`--suite`) rather than defaulted.
    pub(crate) suites_explicit: bool,
    /// How big the run is.
    pub(crate) profile: Profile,
    /// Cluster sizes (`--nodes`).
    pub(crate) nodes: Option<Vec<u32>>,
    /// Consistency levels (`--consistency`).
    pub(crate) consistency: Option<Vec<ConsistencyLevel>>,
    /// Concurrent tasks / calls in flight (`--concurrency`).
    pub(crate) concurrency: Option<Vec<usize>>,
    /// Documents per task (`--docs`).
    pub(crate) docs: Option<u64>,
    /// Storage backend of suites that store documents.
    pub(crate) storage: Storage,
    /// Seed of everything random.
    pub(crate) seed: u64,
    /// The `replicated-kv` binary for the kv suite (`--kv-bin`; default: next to the harness).
    pub(crate) kv_bin: Option<std::path::PathBuf>,
    /// Where the current suite reports what it is doing.
    #[serde(skip)]
    pub(crate) progress: Progress,
}

impl RunConfig {
    /// The configuration with every optional parameter left to the suites, for `profile`.
    #[cfg(test)]
    pub(crate) fn for_profile(profile: Profile) -> Self {
        Self {
            suites: SuiteName::DEFAULT.to_vec(),
            suites_explicit: false,
            profile,
            nodes: None,
            consistency: None,
            concurrency: None,
            docs: None,
            storage: Storage::Memory,
            seed: DEFAULT_SEED,
            kv_bin: None,
            progress: Progress::hidden(),
        }
    }

    /// Picks the value for the current profile: `(smoke, quick, full)`.
    pub(crate) fn pick<T>(&self, smoke: T, quick: T, full: T) -> T {
        match self.profile {
            Profile::Smoke => smoke,
            Profile::Quick => quick,
            Profile::Full => full,
        }
    }

    /// Cluster sizes: `--nodes` if given, else `default`.
    pub(crate) fn nodes_or(&self, default: &[u32]) -> Vec<u32> {
        self.nodes.clone().unwrap_or_else(|| default.to_vec())
    }

    /// Consistency levels of the node crate: `--consistency` if given, else `default`.
    pub(crate) fn consistency_or(
        &self,
        default: &[ConsistencyLevel],
    ) -> Vec<datacake_node::Consistency> {
        self.consistency
            .as_deref()
            .unwrap_or(default)
            .iter()
            .map(|level| level.to_node())
            .collect()
    }

    /// Concurrency levels: `--concurrency` if given, else `default`.
    pub(crate) fn concurrency_or(&self, default: &[usize]) -> Vec<usize> {
        self.concurrency.clone().unwrap_or_else(|| default.to_vec())
    }

    /// Documents per task: `--docs` if given, else `default`.
    pub(crate) fn docs_or(&self, default: u64) -> u64 {
        self.docs.unwrap_or(default)
    }

    /// A copy reporting progress to `progress`.
    pub(crate) fn with_progress(&self, progress: Progress) -> Self {
        Self {
            progress,
            ..self.clone()
        }
    }
}

/// A handle through which a running suite says which scenario it is on (a spinner on stderr;
/// drawn only when stderr is a terminal).
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A spinner for `suite`, ticking until [`Progress::finish`].
    pub(crate) fn spinner(suite: SuiteName) -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix}: {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(suite.as_str());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self { bar }
    }

    /// A handle that draws nothing.
    pub(crate) fn hidden() -> Self {
        Self {
            bar: ProgressBar::hidden(),
        }
    }

    /// The suite has moved on to `scenario`.
    pub(crate) fn scenario(&self, scenario: impl Into<String>) {
        self.bar.set_message(scenario.into());
    }

    /// Prints `line` (indented) on stdout above the spinner.
    pub(crate) fn note(&self, line: impl AsRef<str>) {
        self.bar.suspend(|| println!("   {}", line.as_ref()));
    }

    /// Stops the spinner and clears it.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::hidden()
    }
}
