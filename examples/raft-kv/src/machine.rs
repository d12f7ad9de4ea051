//! The replicated state machine: keys to versioned values, and named counters.
//!
//! Every node applies the same committed commands in the same order, so `apply` is a pure
//! function of the state and the command: no clock, no randomness, ordered maps (so
//! snapshots of equal states are equal bytes).
//!
//! **Versions.** The machine counts successful writes in `revision`. A put stamps the key
//! with the revision it made, so a key's version only grows, even across a delete and a
//! re-create (a compare-and-set against a version read before the delete cannot succeed on
//! the new key). Version 0 means "absent".

use std::collections::BTreeMap;

use datacake_raft::rkyv;
use datacake_raft::StateMachine;

/// A value and the version it was written at.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = datacake_raft::rkyv)]
pub(crate) struct Stored {
    pub(crate) value: Vec<u8>,
    pub(crate) version: u64,
}

/// A mutation, written through Raft.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = datacake_raft::rkyv)]
pub(crate) enum Command {
    /// Sets `key` to `value`; with `if_version`, only if the key's version is that (0: only if
    /// the key is absent).
    Put {
        key: String,
        value: Vec<u8>,
        if_version: Option<u64>,
    },
    /// Removes `key`; with `if_version`, only if the key's version is that.
    Delete {
        key: String,
        if_version: Option<u64>,
    },
    /// Adds `by` to the counter `name` (absent counters are 0), unless that overflows an i64.
    Incr { name: String, by: i64 },
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = datacake_raft::rkyv)]
pub(crate) enum Response {
    /// The key now holds the value, at this version.
    Written { version: u64 },
    /// The delete went through; `existed` is false if there was no such key.
    Deleted { existed: bool },
    /// `if_version` did not match: nothing changed; the key's version is `current` (0:
    /// absent).
    VersionMismatch { current: u64 },
    /// The counter's new value.
    Counter { value: i64 },
    /// Adding would overflow an i64: the counter keeps `value`.
    Overflow { value: i64 },
}

/// A read.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = datacake_raft::rkyv)]
pub(crate) enum Query {
    /// The value and version of a key.
    Get { key: String },
    /// The value of a counter.
    Counter { name: String },
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = datacake_raft::rkyv)]
pub(crate) enum Answer {
    /// The key's value and version, if it exists.
    Value(Option<Stored>),
    /// The counter's value (0 if it was never incremented).
    Counter(i64),
}

/// The whole state, as snapshots hold it.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(crate = datacake_raft::rkyv)]
struct State {
    /// Successful writes so far; the version of the next put is `revision + 1`.
    revision: u64,
    keys: BTreeMap<String, Stored>,
    counters: BTreeMap<String, i64>,
}

/// The key-value store replicated by Raft.
#[derive(Debug, Default)]
pub(crate) struct KvMachine {
    state: State,
}

impl KvMachine {
    /// The version of `key`, 0 if absent.
    fn version(&self, key: &str) -> u64 {
        self.state.keys.get(key).map_or(0, |stored| stored.version)
    }

    /// The next revision (saturating: 2^64 writes are out of reach).
    fn next_revision(&mut self) -> u64 {
        self.state.revision = self.state.revision.saturating_add(1);
        self.state.revision
    }
}

impl StateMachine for KvMachine {
    type Command = Command;
    type Response = Response;
    type Query = Query;
    type Answer = Answer;

    fn apply(&mut self, command: Command) -> Response {
        match command {
            Command::Put {
                key,
                value,
                if_version,
            } => {
                let current = self.version(&key);
                if if_version.is_some_and(|expected| expected != current) {
                    return Response::VersionMismatch { current };
                }
                let version = self.next_revision();
                self.state.keys.insert(key, Stored { value, version });
                Response::Written { version }
            }
            Command::Delete { key, if_version } => {
                let current = self.version(&key);
                if if_version.is_some_and(|expected| expected != current) {
                    return Response::VersionMismatch { current };
                }
                let existed = self.state.keys.remove(&key).is_some();
                if existed {
                    self.next_revision();
                }
                Response::Deleted { existed }
            }
            Command::Incr { name, by } => {
                let counter = self.state.counters.get(&name).copied().unwrap_or(0);
                match counter.checked_add(by) {
                    Some(value) => {
                        self.next_revision();
                        self.state.counters.insert(name, value);
                        Response::Counter { value }
                    }
                    None => Response::Overflow { value: counter },
                }
            }
        }
    }

    fn read(&self, query: Query) -> Answer {
        match query {
            Query::Get { key } => Answer::Value(self.state.keys.get(&key).cloned()),
            Query::Counter { name } => {
                Answer::Counter(self.state.counters.get(&name).copied().unwrap_or(0))
            }
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        match rkyv::to_bytes::<rkyv::rancor::Error>(&self.state) {
            Ok(bytes) => bytes.to_vec(),
            // Only an archive past rkyv's 4 GiB offsets fails; a snapshot that large is over
            // datacake-raft's limit anyway. Dying beats a snapshot that loses the state.
            Err(error) => fatal(&format!("cannot encode a snapshot: {error}")),
        }
    }

    fn restore(&mut self, snapshot: &[u8]) {
        // rkyv reads archives in place: copy into aligned memory first.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(snapshot.len());
        aligned.extend_from_slice(snapshot);
        match rkyv::from_bytes::<State, rkyv::rancor::Error>(&aligned) {
            Ok(state) => self.state = state,
            // `restore` cannot report an error, and serving on from the old state would
            // diverge from the cluster: stop the process (fail-stop) rather than lie.
            Err(error) => fatal(&format!("cannot decode a snapshot: {error}")),
        }
    }
}

/// Logs `message` and exits the process with status 70 (`EX_SOFTWARE`).
fn fatal(message: &str) -> ! {
    tracing::error!(message, "state machine failure, stopping");
    eprintln!("raft-kv: fatal: {message}");
    std::process::exit(70)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &[u8], if_version: Option<u64>) -> Command {
        Command::Put {
            key: key.to_owned(),
            value: value.to_vec(),
            if_version,
        }
    }

    fn incr(name: &str, by: i64) -> Command {
        Command::Incr {
            name: name.to_owned(),
            by,
        }
    }

    fn get(machine: &KvMachine, key: &str) -> Option<Stored> {
        match machine.read(Query::Get {
            key: key.to_owned(),
        }) {
            Answer::Value(stored) => stored,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn puts_and_deletes_version_the_keys() {
        let mut m = KvMachine::default();
        assert_eq!(
            m.apply(put("a", b"1", None)),
            Response::Written { version: 1 }
        );
        assert_eq!(
            m.apply(put("b", b"2", None)),
            Response::Written { version: 2 }
        );
        assert_eq!(
            m.apply(put("a", b"3", None)),
            Response::Written { version: 3 }
        );
        assert_eq!(
            get(&m, "a"),
            Some(Stored {
                value: b"3".to_vec(),
                version: 3
            })
        );
        let delete = |key: &str, if_version| Command::Delete {
            key: key.to_owned(),
            if_version,
        };
        assert_eq!(
            m.apply(delete("a", Some(1))),
            Response::VersionMismatch { current: 3 }
        );
        assert_eq!(
            m.apply(delete("a", Some(3))),
            Response::Deleted { existed: true }
        );
        assert_eq!(
            m.apply(delete("a", None)),
            Response::Deleted { existed: false }
        );
        assert_eq!(get(&m, "a"), None);
        // Re-created, the key does not reuse an old version.
        assert_eq!(
            m.apply(put("a", b"4", None)),
            Response::Written { version: 5 }
        );
    }

    #[test]
    fn compare_and_set_checks_the_version() {
        let mut m = KvMachine::default();
        // 0: only if absent.
        assert_eq!(
            m.apply(put("k", b"x", Some(0))),
            Response::Written { version: 1 }
        );
        assert_eq!(
            m.apply(put("k", b"y", Some(0))),
            Response::VersionMismatch { current: 1 }
        );
        assert_eq!(
            m.apply(put("k", b"y", Some(7))),
            Response::VersionMismatch { current: 1 }
        );
        assert_eq!(
            m.apply(put("k", b"y", Some(1))),
            Response::Written { version: 2 }
        );
        assert_eq!(get(&m, "k").unwrap().value, b"y");
        assert_eq!(
            m.apply(put("absent", b"z", Some(2))),
            Response::VersionMismatch { current: 0 }
        );
    }

    #[test]
    fn counters_add_with_overflow_checked() {
        let mut m = KvMachine::default();
        assert_eq!(
            m.read(Query::Counter {
                name: "c".to_owned()
            }),
            Answer::Counter(0)
        );
        assert_eq!(m.apply(incr("c", 1)), Response::Counter { value: 1 });
        assert_eq!(m.apply(incr("c", -5)), Response::Counter { value: -4 });
        assert_eq!(
            m.apply(incr("c", i64::MAX)),
            Response::Counter {
                value: i64::MAX - 4
            }
        );
        assert_eq!(
            m.apply(incr("c", 5)),
            Response::Overflow {
                value: i64::MAX - 4
            }
        );
        assert_eq!(
            m.apply(incr("d", i64::MIN)),
            Response::Counter { value: i64::MIN }
        );
        assert_eq!(
            m.apply(incr("d", -1)),
            Response::Overflow { value: i64::MIN }
        );
    }

    #[test]
    fn snapshots_round_trip() {
        let mut m = KvMachine::default();
        m.apply(put("a", b"1", None));
        m.apply(put("bin", &[0, 255, 7], None));
        m.apply(put("gone", b"", None));
        m.apply(Command::Delete {
            key: "gone".to_owned(),
            if_version: None,
        });
        m.apply(incr("c", 42));
        let snapshot = m.snapshot();

        let mut restored = KvMachine::default();
        restored.apply(put("stale", b"x", None));
        restored.restore(&snapshot);
        assert_eq!(restored.state, m.state);
        assert_eq!(restored.snapshot(), snapshot, "equal states, equal bytes");
        // Versions continue from the restored revision.
        assert_eq!(
            restored.apply(put("a", b"2", None)),
            m.apply(put("a", b"2", None))
        );

        // Restoring from an unaligned copy works too.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&snapshot);
        let mut again = KvMachine::default();
        again.restore(&shifted[1..]);
        assert_eq!(get(&again, "bin").unwrap().value, [0, 255, 7]);
    }

    #[test]
    fn apply_is_deterministic() {
        let commands = [
            put("a", b"1", None),
            incr("n", 3),
            put("a", b"2", Some(1)),
            put("b", b"3", Some(9)),
            incr("n", i64::MAX),
        ];
        let run = || {
            let mut m = KvMachine::default();
            let responses: Vec<Response> = commands.iter().cloned().map(|c| m.apply(c)).collect();
            (responses, m.snapshot())
        };
        assert_eq!(run(), run());
    }
}
