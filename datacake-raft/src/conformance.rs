//! openraft's storage conformance suite, run against both log stores (with the state-machine
//! adaptor): one suite, the real implementation and the in-memory one.

use std::path::PathBuf;

use openraft::testing::{StoreBuilder, Suite};
use test_helper::TempDir;

use crate::log_store::MemLogStore;
use crate::machine::{share, StateMachine};
use crate::machine_store::StateMachineStore;
use crate::sqlite_log::SqliteLogStore;
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

struct SqliteBuilder;

impl StoreBuilder<TypeConfig, SqliteLogStore, StateMachineStore, TempDir> for SqliteBuilder {
    async fn build(&self) -> StorageResult<(TempDir, SqliteLogStore, StateMachineStore)> {
        let dir = TempDir::new("raft-suite");
        let log = SqliteLogStore::open(&dir.join("log.sqlite")).expect("sqlite opens");
        let sm = adaptor(Some(dir.path().to_owned()));
        Ok((dir, log, sm))
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
