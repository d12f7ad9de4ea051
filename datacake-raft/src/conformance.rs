//! openraft's storage conformance suite, run against both log stores (with the state-machine
//! adaptor): one suite, the real implementation and the in-memory one.

use std::path::PathBuf;

use openraft::testing::{StoreBuilder, Suite};

use crate::log_store::MemLogStore;
use crate::machine::{share, StateMachine};
use crate::sqlite_log::SqliteLogStore;
use crate::state_machine::StateMachineStore;
use crate::types::{StorageResult, TypeConfig};

/// A state machine with nothing in it (the suite only applies blank and membership entries).
pub(crate) struct Nothing;

impl StateMachine for Nothing {
    type Command = ();
    type Response = ();
    type Query = ();
    type Answer = ();

    fn apply(&mut self, _command: ()) {}
    fn read(&self, _query: ()) {}
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(&mut self, _snapshot: &[u8]) {}
}

fn adaptor(dir: Option<PathBuf>) -> StateMachineStore {
    StateMachineStore::open(share(Nothing), dir).expect("state machine opens")
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, MemLogStore, StateMachineStore> for MemBuilder {
    async fn build(&self) -> StorageResult<((), MemLogStore, StateMachineStore)> {
        Ok(((), MemLogStore::default(), adaptor(None)))
    }
}

/// A directory removed when the test that built it is done.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct SqliteBuilder;

impl StoreBuilder<TypeConfig, SqliteLogStore, StateMachineStore, TempDir> for SqliteBuilder {
    async fn build(&self) -> StorageResult<(TempDir, SqliteLogStore, StateMachineStore)> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("datacake-raft-suite-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = SqliteLogStore::open(&dir.join("log.sqlite")).expect("sqlite opens");
        let sm = adaptor(Some(dir.clone()));
        Ok((TempDir(dir), log, sm))
    }
}

#[test]
fn in_memory_store_passes_the_openraft_suite() {
    Suite::test_all(MemBuilder).expect("suite passes");
}

#[test]
fn sqlite_store_passes_the_openraft_suite() {
    Suite::test_all(SqliteBuilder).expect("suite passes");
}
