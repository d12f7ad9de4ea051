//! One measured cell: some tasks each doing one operation on a range of ids, timed call by
//! call ([`cell`]), and how a row's ids are split into interleaved rounds ([`round_ids`]).

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use datacake_eventual_consistency::{Consistency, ReplicatedStoreHandle, Storage};

use super::KEYSPACE;

/// The document the write matrix puts and the read rows read.
pub(super) const DOC: &[u8; 32] = b"a 32 byte document for the bench";

/// Puts, deletes or reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Put,
    Del,
    /// A read that must find the document (the ids were written before).
    Get,
}

async fn one<S: Storage>(
    handle: &ReplicatedStoreHandle<S>,
    op: Op,
    id: u64,
    level: Consistency,
    data: &Bytes,
) -> anyhow::Result<()> {
    match op {
        Op::Put => handle.put(KEYSPACE, id, data.clone(), level).await?,
        Op::Del => handle.del(KEYSPACE, id, level).await?,
        Op::Get => {
            let doc = handle.get(KEYSPACE, id, level).await?;
            anyhow::ensure!(doc.is_some(), "a read at {level} found no document {id}");
        }
    }
    Ok(())
}

/// `tasks` tasks each doing `op` on the ids `ids` (`tasks == 0`: one task doing them
/// serially); returns every operation's latency and the time the whole took.
///
/// The callers are tasks on the harness's runtime, as an application's request handlers
/// would be; the harness's own thread (which drives `main`, outside the runtime's workers)
/// only waits for them. Calling from that thread instead would add a wake-up of another
/// thread to every operation, which a serial caller pays in full.
pub(super) async fn cell<S: Storage>(
    handle: &ReplicatedStoreHandle<S>,
    op: Op,
    level: Consistency,
    tasks: usize,
    ids: Range<u64>,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let data = Bytes::from_static(DOC);
    let start = Instant::now();
    let mut joins = Vec::with_capacity(tasks.max(1));
    for _ in 0..tasks.max(1) {
        let (handle, data, ids) = (handle.clone(), data.clone(), ids.clone());
        joins.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(ids.end.saturating_sub(ids.start) as usize);
            for id in ids {
                let t = Instant::now();
                one(&handle, op, id, level, &data).await?;
                samples.push(t.elapsed());
            }
            anyhow::Ok(samples)
        }));
    }
    let mut per_task = Vec::with_capacity(joins.len());
    for join in joins {
        per_task.push(join.await??);
    }
    // Stop the clock before gathering the samples (copying them is no part of the cell).
    let took = start.elapsed();
    Ok((per_task.concat(), took))
}

/// The ids of round `round` of `rounds` over `0..docs`.
pub(super) fn round_ids(docs: u64, rounds: u64, round: u64) -> Range<u64> {
    docs * round / rounds..docs * (round + 1) / rounds
}

/// How a cell's callers are named in scenarios: `"serial"` or `"<n> tasks"`.
pub(super) fn who(tasks: usize) -> String {
    match tasks {
        0 => "serial".to_string(),
        _ => format!("{tasks} tasks"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_cover_every_id_once() {
        let ids: Vec<u64> = (0..8).flat_map(|r| round_ids(1_000, 8, r)).collect();
        assert_eq!(ids, (0..1_000).collect::<Vec<_>>());
        let ids: Vec<u64> = (0..3).flat_map(|r| round_ids(50, 3, r)).collect();
        assert_eq!(ids, (0..50).collect::<Vec<_>>());
    }
}
