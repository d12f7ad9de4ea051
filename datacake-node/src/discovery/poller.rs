//! Polls the discovery sources and hands what they found to chitchat.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::ChitchatHandle;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{
    error_chain, Discovery, DiscoveryConfig, DiscoveryError, MAX_CONTACTS_PER_POLL,
    MAX_DISCOVERED_ADDRS,
};
use crate::membership::MembershipView;

/// One source and what it last returned.
struct SourceState {
    source: Arc<dyn Discovery>,
    /// The addresses of the last successful poll (deduplicated, own address removed, capped).
    last_good: BTreeSet<SocketAddr>,
    /// The last error logged at warn level, to log a repeat at debug level only.
    last_error: Option<String>,
}

/// Polls every source with a timeout, keeping each source's last good set.
pub(crate) struct Poller {
    sources: Vec<SourceState>,
    timeout: Duration,
    interval: Duration,
    me: SocketAddr,
    /// Where the next window of addresses to contact starts.
    cursor: usize,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.sources.iter().map(|s| s.source.name()).collect();
        f.debug_struct("Poller")
            .field("sources", &names)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Poller {
    /// A poller of `config`'s sources for the node at `me`; `None` without sources.
    pub(crate) fn new(config: DiscoveryConfig, me: SocketAddr) -> Option<Self> {
        if config.sources.is_empty() {
            return None;
        }
        Some(Self {
            sources: config
                .sources
                .into_iter()
                .map(|source| SourceState {
                    source,
                    last_good: BTreeSet::new(),
                    last_error: None,
                })
                .collect(),
            timeout: config.timeout,
            interval: config.interval,
            me,
            cursor: 0,
        })
    }

    /// Polls every source at once (each within the timeout) and returns the union of their
    /// last good sets, at most [`MAX_DISCOVERED_ADDRS`] addresses.
    pub(crate) async fn poll(&mut self) -> BTreeSet<SocketAddr> {
        let timeout = self.timeout;
        let results = futures::future::join_all(self.sources.iter().map(|state| {
            let source = state.source.clone();
            async move {
                match tokio::time::timeout(timeout, source.discover()).await {
                    Ok(result) => result,
                    Err(_) => Err(DiscoveryError::Timeout { timeout }),
                }
            }
        }))
        .await;
        for (state, result) in self.sources.iter_mut().zip(results) {
            state.apply(result, self.me);
        }
        let mut all = BTreeSet::new();
        for state in &self.sources {
            for addr in &state.last_good {
                if all.len() == MAX_DISCOVERED_ADDRS {
                    warn!(
                        limit = MAX_DISCOVERED_ADDRS,
                        "discovery: more addresses than the limit in all sources; the rest dropped"
                    );
                    return all;
                }
                all.insert(*addr);
            }
        }
        all
    }

    /// Up to [`MAX_CONTACTS_PER_POLL`] addresses of `discovered` that are not in `live`,
    /// taking the next window of them at each call so that every one gets its turn.
    pub(crate) fn next_contacts(
        &mut self,
        discovered: &BTreeSet<SocketAddr>,
        live: &BTreeSet<SocketAddr>,
    ) -> Vec<SocketAddr> {
        let candidates: Vec<SocketAddr> = discovered.difference(live).copied().collect();
        if candidates.len() <= MAX_CONTACTS_PER_POLL {
            return candidates;
        }
        let start = self.cursor % candidates.len();
        self.cursor = start + MAX_CONTACTS_PER_POLL;
        candidates
            .iter()
            .cycle()
            .skip(start)
            .take(MAX_CONTACTS_PER_POLL)
            .copied()
            .collect()
    }
}

impl SourceState {
    /// Takes a poll's result: a success replaces the last good set, an error is logged and
    /// keeps it.
    fn apply(&mut self, result: Result<Vec<SocketAddr>, DiscoveryError>, me: SocketAddr) {
        let name = self.source.name();
        match result {
            Ok(addrs) => {
                let returned = addrs.len();
                let mut set = BTreeSet::new();
                for addr in addrs {
                    if set.len() == MAX_DISCOVERED_ADDRS {
                        warn!(
                            source = %name,
                            returned,
                            limit = MAX_DISCOVERED_ADDRS,
                            "discovery: too many addresses; the rest dropped"
                        );
                        break;
                    }
                    // Our own address, and addresses nobody can be reached at (`0.0.0.0`
                    // would reach this host, port 0 nothing), are not contacted.
                    if addr != me && !addr.ip().is_unspecified() && addr.port() != 0 {
                        set.insert(addr);
                    }
                }
                if set != self.last_good {
                    debug!(source = %name, addrs = ?set, "discovery: addresses changed");
                }
                self.last_good = set;
                self.last_error = None;
            }
            Err(error) => {
                let text = error_chain(&error);
                let kept = self.last_good.len();
                if self.last_error.as_deref() == Some(text.as_str()) {
                    debug!(source = %name, error = %text, kept, "discovery failed again");
                } else {
                    warn!(
                        source = %name,
                        error = %text,
                        kept,
                        "discovery failed: keeping the last good addresses"
                    );
                    self.last_error = Some(text);
                }
            }
        }
    }
}

/// What the discovery task acts on: the node's discovered set, its live view and chitchat.
#[derive(Clone)]
pub(crate) struct DiscoveryTarget {
    /// The union of the sources' last good sets, for [`discovered_addrs`].
    ///
    /// [`discovered_addrs`]: crate::DatacakeHandle::discovered_addrs
    pub(crate) discovered: Arc<watch::Sender<Arc<[SocketAddr]>>>,
    /// The live members, whose addresses need no contact.
    pub(crate) view: watch::Receiver<Arc<MembershipView>>,
    /// chitchat, until the node shuts down.
    pub(crate) chitchat: Arc<parking_lot::Mutex<Option<ChitchatHandle>>>,
}

impl DiscoveryTarget {
    /// Publishes `discovered` and sends a gossip SYN to the addresses `poller` picks.
    /// Returns how many addresses of `discovered` are not this node's live peers.
    pub(crate) fn feed(&self, poller: &mut Poller, discovered: &BTreeSet<SocketAddr>) -> usize {
        let list: Arc<[SocketAddr]> = discovered.iter().copied().collect();
        self.discovered.send_if_modified(|current| {
            if **current == *list {
                return false;
            }
            *current = list;
            true
        });
        let live: BTreeSet<SocketAddr> = self
            .view
            .borrow()
            .members
            .values()
            .map(|e| e.member.public_addr)
            .collect();
        let contact = poller.next_contacts(discovered, &live);
        if let Some(chitchat) = self.chitchat.lock().as_ref() {
            for addr in &contact {
                // Fails only once chitchat has stopped: the node is shutting down.
                let _ = chitchat.gossip(*addr);
            }
        }
        discovered.difference(&live).count()
    }

    /// Polls `poller` every interval and feeds the result, until the task is cancelled.
    pub(crate) async fn run(self, mut poller: Poller) {
        let mut ticker = tokio::time::interval(poller.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: `connect` has just polled.
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let discovered = poller.poll().await;
            self.feed(&mut poller, &discovered);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::pending;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;

    /// Answers with the next of its scripted results at each poll (the last one forever).
    struct Scripted {
        answers: Vec<Option<Result<Vec<SocketAddr>, &'static str>>>,
        polls: AtomicUsize,
    }

    #[async_trait]
    impl Discovery for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }

        async fn discover(&self) -> Result<Vec<SocketAddr>, DiscoveryError> {
            let n = self.polls.fetch_add(1, Ordering::SeqCst);
            let answer = &self.answers[n.min(self.answers.len() - 1)];
            match answer {
                None => pending().await,
                Some(Ok(addrs)) => Ok(addrs.clone()),
                Some(Err(reason)) => Err(DiscoveryError::Other((*reason).into())),
            }
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn poller(
        answers: Vec<Option<Result<Vec<SocketAddr>, &'static str>>>,
        timeout: Duration,
    ) -> Poller {
        let config = DiscoveryConfig {
            sources: vec![Arc::new(Scripted {
                answers,
                polls: AtomicUsize::new(0),
            })],
            interval: Duration::from_secs(1),
            timeout,
        };
        Poller::new(config, addr(1)).unwrap()
    }

    fn set(ports: &[u16]) -> BTreeSet<SocketAddr> {
        ports.iter().map(|p| addr(*p)).collect()
    }

    #[tokio::test]
    async fn errors_and_timeouts_keep_the_last_good_set() {
        let mut poller = poller(
            vec![
                Some(Ok(vec![
                    addr(2),
                    addr(3),
                    addr(1),
                    addr(2),
                    addr(0),
                    SocketAddr::from(([0, 0, 0, 0], 5)),
                ])),
                Some(Err("resolver down")),
                None,
                Some(Ok(vec![addr(4)])),
            ],
            Duration::from_millis(50),
        );
        // Duplicates, the node's own address, port 0 and 0.0.0.0 are dropped.
        assert_eq!(poller.poll().await, set(&[2, 3]));
        assert_eq!(poller.poll().await, set(&[2, 3]), "an error keeps the set");
        assert_eq!(poller.poll().await, set(&[2, 3]), "a timeout keeps the set");
        assert_eq!(poller.poll().await, set(&[4]));
    }

    #[tokio::test]
    async fn a_poll_is_bounded_by_the_timeout() {
        let mut poller = poller(vec![None], Duration::from_millis(20));
        let polled = tokio::time::timeout(Duration::from_secs(10), poller.poll()).await;
        assert_eq!(polled.expect("the poll gave up"), BTreeSet::new());
    }

    #[tokio::test]
    async fn at_most_the_cap_is_taken() {
        let many: Vec<SocketAddr> = (2..=5000).map(addr).collect();
        let mut poller = poller(vec![Some(Ok(many))], Duration::from_secs(5));
        let discovered = poller.poll().await;
        assert_eq!(discovered.len(), MAX_DISCOVERED_ADDRS);
        // Two sources together are capped too.
        let config = DiscoveryConfig {
            sources: vec![
                Arc::new(super::super::StaticDiscovery::new((2..=1000).map(addr))),
                Arc::new(super::super::StaticDiscovery::new((1001..=2000).map(addr))),
            ],
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        };
        let mut both = Poller::new(config, addr(1)).unwrap();
        assert_eq!(both.poll().await.len(), MAX_DISCOVERED_ADDRS);
    }

    #[test]
    fn contacts_rotate_over_the_addresses_not_live() {
        let mut poller = poller(vec![Some(Ok(vec![]))], Duration::from_secs(1));
        let few = set(&[2, 3, 4]);
        assert_eq!(
            poller.next_contacts(&few, &set(&[3])),
            vec![addr(2), addr(4)]
        );
        let many: BTreeSet<SocketAddr> = (2..102).map(addr).collect();
        let mut seen = BTreeSet::new();
        for _ in 0..4 {
            let batch = poller.next_contacts(&many, &BTreeSet::new());
            assert_eq!(batch.len(), MAX_CONTACTS_PER_POLL);
            seen.extend(batch);
        }
        assert_eq!(seen, many, "every address gets its turn");
    }
}
