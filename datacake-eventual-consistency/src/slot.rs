//! [`KeyspaceSlot`]: one keyspace's in-memory state, and the order of its storage writes.
//!
//! The CRDT decides which write of a key wins; the storage must then see the winners of a
//! key in that same order, or an older document could land after a newer one. Rather than
//! serialising every write of the keyspace behind one async lock (a convoy under
//! concurrency: each waiter must be woken and scheduled before the next write can start),
//! a write *claims* its keys: a key claimed by a write still under way is *in flight*, and
//! only writes of that very key wait for it. Writes of different keys reach the storage
//! concurrently, and a write that completes at once (an in-memory storage) takes no async
//! lock at all.
//!
//! A write never waits while it holds claims (it writes what it claimed, releases it, then
//! waits for the rest), so two writes of overlapping keys cannot deadlock. Tombstone purge
//! takes the keyspace [exclusively](KeyspaceSlot::exclusive): it waits for the writes in
//! flight and holds off new ones, because raising the purge watermark under a write that
//! already passed the CRDT's check would make the CRDT refuse what the storage took.
//!
//! A local write is **stamped inside its claim**, under the slot's lock: from the moment it
//! has a timestamp until its storage write commits, its key is in flight with that stamp.
//! So [`floor`](KeyspaceSlot::floor) (the oldest stamp in flight) bounds what the keyspace
//! may still commit, which is what lets a peer confirm exactly what this node holds (see
//! `anti_entropy`), and a purge can never raise the watermark over a stamped write that has
//! not reached the CRDT yet.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use datacake_crdt::{HLCTimestamp, TimestampError};
use datacake_node::Clock;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::keyspace::{KeyspaceState, Mutation, Outcome};
use crate::replica::Change;
use crate::storage::Key;

/// One keyspace: its name, its CRDT state and its writes in flight.
#[derive(Debug)]
pub(crate) struct KeyspaceSlot {
    pub(crate) name: Arc<str>,
    state: Mutex<SlotState>,
    /// Wakes the writes (and the purge) waiting for keys to be released.
    settled: Notify,
}

#[derive(Debug)]
struct SlotState {
    crdt: KeyspaceState,
    /// Keys whose storage write is under way, with the stamp being written.
    in_flight: HashMap<Key, HLCTimestamp>,
    /// A purge holds (or waits for) the whole keyspace: no new claims.
    exclusive: bool,
    /// Futures registered on `settled` since it last fired.
    waiters: usize,
}

impl SlotState {
    /// Registers `settled` to be woken by the next release.
    fn wait(&mut self, settled: Pin<&mut Notified<'_>>) {
        self.waiters += 1;
        settled.enable();
    }

    /// Wakes everything registered, if anything is.
    fn wake(&mut self, settled: &Notify) {
        if self.waiters > 0 {
            self.waiters = 0;
            settled.notify_waiters();
        }
    }
}

impl KeyspaceSlot {
    pub(crate) fn new(name: &str, crdt: KeyspaceState) -> Self {
        Self {
            name: Arc::from(name),
            state: Mutex::new(SlotState {
                crdt,
                in_flight: HashMap::new(),
                exclusive: false,
                waiters: 0,
            }),
            settled: Notify::new(),
        }
    }

    /// Runs `f` on the CRDT state.
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&mut KeyspaceState) -> R) -> R {
        f(&mut self.state.lock().crdt)
    }

    /// A future that [`claim`](Self::claim) registers when some changes must wait; it
    /// resolves once keys were released.
    pub(crate) fn settled(&self) -> Notified<'_> {
        self.settled.notified()
    }

    /// Claims the changes that beat what the keyspace holds and whose keys are free; returns
    /// the claim and the changes that must wait for a write (or purge) under way. When some
    /// wait, `settled` is registered to resolve once keys were released: await it, then
    /// call `claim` again with them. Changes that lose to the state are dropped.
    ///
    /// With `stamp`, the changes are local writes: each claimed one is stamped now, under
    /// the lock, with a timestamp newer than what the keyspace holds for its key (their own
    /// timestamps are ignored). Fails only if the clock cannot produce such a stamp.
    pub(crate) fn claim<'a>(
        &'a self,
        changes: Vec<Change>,
        settled: Pin<&mut Notified<'_>>,
        stamp: Option<&Clock>,
    ) -> Result<(Claim<'a>, Vec<Change>), (Key, TimestampError)> {
        let mut state = self.state.lock();
        let mut winners = Vec::with_capacity(changes.len());
        let mut blocked = Vec::new();
        let mut failed = None;
        for mut change in changes {
            let key = change.mutation.key();
            if state.exclusive || state.in_flight.contains_key(&key) {
                blocked.push(change);
                continue;
            }
            match stamp {
                // A local stamp beats what the keyspace holds by construction.
                Some(clock) => match local_stamp(&state.crdt, clock, &change.mutation) {
                    Ok(timestamp) => change.mutation = change.mutation.at(timestamp),
                    Err(error) => {
                        failed = Some((key, error));
                        break;
                    }
                },
                None if !state.crdt.will_apply(&change.mutation) => continue,
                None => {}
            }
            state.in_flight.insert(key, change.mutation.timestamp());
            winners.push(change);
        }
        if !blocked.is_empty() && failed.is_none() {
            state.wait(settled);
        }
        drop(state);
        let claim = Claim {
            slot: self,
            winners,
        };
        match failed {
            // Dropping the claim releases what it took.
            Some(failure) => Err(failure),
            None => Ok((claim, blocked)),
        }
    }

    /// The oldest stamp of a write in flight (claimed, not yet committed), if any: every
    /// write this keyspace may still commit is stamped at or above it, or after the call.
    pub(crate) fn floor(&self) -> Option<HLCTimestamp> {
        self.state.lock().in_flight.values().min().copied()
    }

    /// Takes the keyspace for itself: waits until no other holder and no write is in
    /// flight, and holds off new writes until the returned guard is dropped.
    pub(crate) async fn exclusive(&self) -> Exclusive<'_> {
        self.wait_until(|state| !std::mem::replace(&mut state.exclusive, true))
            .await;
        let guard = Exclusive { slot: self };
        self.wait_until(|state| state.in_flight.is_empty()).await;
        guard
    }

    /// Waits until `ready` returns true, checked under the state lock now and after every
    /// release.
    async fn wait_until(&self, mut ready: impl FnMut(&mut SlotState) -> bool) {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            {
                let mut state = self.state.lock();
                if ready(&mut state) {
                    return;
                }
                state.wait(settled.as_mut());
            }
            settled.await;
        }
    }
}

/// A stamp for a local write of `mutation`'s key: the clock's next, or, if the keyspace holds
/// a version at least as new, or a purge watermark at least as new for a key it does not
/// hold (both possible after a restart whose wall clock is behind the previous run's), one
/// past that. A local write is never refused as stale.
fn local_stamp(
    crdt: &KeyspaceState,
    clock: &Clock,
    mutation: &Mutation,
) -> Result<HLCTimestamp, TimestampError> {
    let stamp = clock.get_time();
    let bar = match crdt.get(mutation.key()) {
        Some(held) => Some(held.timestamp),
        None => crdt.purge_watermark(),
    };
    match bar {
        Some(bar) if bar >= stamp => clock.advance_past(bar),
        _ => Ok(stamp),
    }
}

/// The keys one write claimed. [`commit`](Self::commit) applies them to the CRDT state and
/// releases them; dropped without a commit (the write's future was dropped mid-write), it
/// releases them without applying.
#[derive(Debug)]
pub(crate) struct Claim<'a> {
    slot: &'a KeyspaceSlot,
    /// Emptied by `commit`, so that a committed claim has nothing left to release on drop.
    winners: Vec<Change>,
}

impl Claim<'_> {
    /// The changes claimed.
    pub(crate) fn winners(&self) -> &[Change] {
        &self.winners
    }

    /// Applies the winners that reached the storage (all of them, or only `stored` after a
    /// partial failure) to the CRDT state, releases every claimed key, and returns the
    /// winners.
    pub(crate) fn commit(mut self, stored: Option<&[Key]>) -> Vec<Change> {
        let winners = std::mem::take(&mut self.winners);
        let mut state = self.slot.state.lock();
        for change in &winners {
            let key = change.mutation.key();
            if stored.is_none_or(|ids| ids.contains(&key)) {
                let outcome = state.crdt.apply(change.mutation);
                // The claim held the key and purges wait for claims, so nothing newer or
                // a higher purge watermark can have come in between.
                debug_assert_eq!(outcome, Outcome::Applied);
            }
            state.in_flight.remove(&key);
        }
        state.wake(&self.slot.settled);
        winners
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.winners.is_empty() {
            return;
        }
        let mut state = self.slot.state.lock();
        for change in &self.winners {
            state.in_flight.remove(&change.mutation.key());
        }
        state.wake(&self.slot.settled);
    }
}

/// The keyspace held by one holder (see [`KeyspaceSlot::exclusive`]); released on drop.
#[derive(Debug)]
pub(crate) struct Exclusive<'a> {
    slot: &'a KeyspaceSlot,
}

impl Exclusive<'_> {
    /// The CRDT state.
    pub(crate) fn state(&self) -> impl std::ops::DerefMut<Target = KeyspaceState> + '_ {
        MutexGuard::map(self.slot.state.lock(), |s| &mut s.crdt)
    }
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        let mut state = self.slot.state.lock();
        state.exclusive = false;
        state.wake(&self.slot.settled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: Key, millis: u64) -> Change {
        put_at(key, HLCTimestamp::new(millis, 0, 1))
    }

    fn put_at(key: Key, timestamp: HLCTimestamp) -> Change {
        Change {
            mutation: Mutation::Put { key, timestamp },
            data: None,
        }
    }

    #[tokio::test]
    async fn a_key_in_flight_makes_only_its_own_writes_wait() {
        let slot = KeyspaceSlot::new("ks", KeyspaceState::new());
        let first_settled = slot.settled();
        tokio::pin!(first_settled);
        let (first, blocked) = slot
            .claim(vec![put(1, 10), put(2, 10)], first_settled, None)
            .unwrap();
        assert!(blocked.is_empty());
        assert_eq!(first.winners().len(), 2);

        let settled = slot.settled();
        tokio::pin!(settled);
        let (second, blocked) = slot
            .claim(vec![put(2, 20), put(3, 20)], settled.as_mut(), None)
            .unwrap();
        let claimed: Vec<Key> = second.winners().iter().map(|c| c.mutation.key()).collect();
        assert_eq!(claimed, vec![3], "key 3 is free");
        assert_eq!(blocked.len(), 1, "key 2 waits for the first write");
        second.commit(None);

        first.commit(None);
        tokio::time::timeout(std::time::Duration::from_secs(5), settled)
            .await
            .expect("releasing key 2 wakes the waiting write");
        let settled = slot.settled();
        tokio::pin!(settled);
        let (retry, blocked) = slot.claim(blocked, settled, None).unwrap();
        assert!(blocked.is_empty());
        assert_eq!(retry.winners().len(), 1, "20 beats the committed 10");
        retry.commit(None);
        assert_eq!(
            slot.with_state(|s| s.get(2)).map(|e| e.timestamp),
            Some(HLCTimestamp::new(20, 0, 1))
        );
    }

    #[tokio::test]
    async fn local_writes_are_stamped_in_the_claim_and_set_the_floor() {
        let slot = KeyspaceSlot::new("ks", KeyspaceState::new());
        let clock = Clock::new(1);
        // A version held from a clock that ran ahead (our own, from an earlier run).
        let ahead = HLCTimestamp::new(clock.get_time().millis() + 2_000, 0, 1);
        let settled = slot.settled();
        tokio::pin!(settled);
        let (held, _) = slot.claim(vec![put_at(1, ahead)], settled, None).unwrap();
        held.commit(None);

        let before = clock.get_time();
        let settled = slot.settled();
        tokio::pin!(settled);
        let (claim, _) = slot
            .claim(vec![put(1, 0), put(2, 0)], settled, Some(&clock))
            .unwrap();
        let stamps: Vec<HLCTimestamp> = claim
            .winners()
            .iter()
            .map(|c| c.mutation.timestamp())
            .collect();
        assert!(stamps[0] > ahead, "stamped past the held version, not lost");
        assert!(stamps[1] > before);
        assert_eq!(slot.floor(), stamps.iter().min().copied());
        claim.commit(None);
        assert_eq!(slot.floor(), None);
    }

    #[tokio::test]
    async fn a_dropped_claim_releases_its_keys_without_applying() {
        let slot = KeyspaceSlot::new("ks", KeyspaceState::new());
        let settled = slot.settled();
        tokio::pin!(settled);
        let (claim, _) = slot.claim(vec![put(1, 10)], settled, None).unwrap();
        drop(claim);
        assert_eq!(slot.with_state(|s| s.get(1)), None);
        let settled = slot.settled();
        tokio::pin!(settled);
        let (again, blocked) = slot.claim(vec![put(1, 10)], settled, None).unwrap();
        assert!(blocked.is_empty(), "the key is free again");
        assert_eq!(again.winners().len(), 1);
    }

    #[tokio::test]
    async fn exclusive_waits_for_writes_in_flight_and_holds_off_new_ones() {
        use futures::FutureExt;

        let slot = KeyspaceSlot::new("ks", KeyspaceState::new());
        let settled = slot.settled();
        tokio::pin!(settled);
        let (claim, _) = slot.claim(vec![put(1, 10)], settled, None).unwrap();

        let mut purge = Box::pin(slot.exclusive());
        assert!(
            (&mut purge).now_or_never().is_none(),
            "a write is in flight"
        );
        claim.commit(None);
        let guard = tokio::time::timeout(std::time::Duration::from_secs(5), purge)
            .await
            .expect("the purge gets the keyspace once the write is done");

        let settled = slot.settled();
        tokio::pin!(settled);
        let (during, blocked) = slot
            .claim(vec![put(2, 10)], settled.as_mut(), None)
            .unwrap();
        assert!(during.winners().is_empty(), "no claims while held");
        assert_eq!(blocked.len(), 1);
        drop(during);
        drop(guard);
        tokio::time::timeout(std::time::Duration::from_secs(5), settled)
            .await
            .expect("the end of the purge wakes the waiting write");
    }
}
