//! The store's settings, their defaults, and the checks that refuse bad ones at start-up.

use std::time::Duration;

use crate::error::ConfigError;

/// How often each node runs anti-entropy repair with each peer, by default.
pub const DEFAULT_REPAIR_INTERVAL: Duration = Duration::from_secs(1);
/// How long a write waits for the acknowledgements its consistency level needs, by default.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a read at a consistency level waits for the replies it needs, by default.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// The deadline of one replication or repair RPC, by default.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// The deadline of one whole repair round with one peer, by default: 5 minutes.
pub const DEFAULT_REPAIR_ROUND_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long a member that is down keeps holding tombstone purge back, by default (like
/// Cassandra's `gc_grace_seconds`): 24 hours.
pub const DEFAULT_TOMBSTONE_GRACE: Duration = Duration::from_secs(24 * 60 * 60);
/// The most mutations sent to one peer in one RPC, by default.
pub const DEFAULT_MAX_BATCH: usize = 4096;
/// The largest message the store sends or asks for, by default: the RPC server's body limit
/// ([`datacake_rpc::DEFAULT_MAX_BODY_SIZE`], 64 MiB). Replication batches, repair replies
/// and read replies are cut below it, and a document must fit in one with room to spare (else
/// [`StoreError::DocumentTooLarge`](crate::StoreError::DocumentTooLarge)).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = datacake_rpc::DEFAULT_MAX_BODY_SIZE;
/// The most keyspaces a store holds, by default.
pub const DEFAULT_MAX_KEYSPACES: usize = 65_536;
/// The longest keyspace name, in bytes, by default.
pub const DEFAULT_MAX_KEYSPACE_NAME_LEN: usize = 256;

/// Room left in every message for the envelope around the payload (rkyv framing, the
/// keyspace name, HTTP/2 headers).
const MESSAGE_HEADROOM: usize = 64 << 10;
/// The smallest `max_message_size` accepted: enough for a useful batch after the headroom.
const MIN_MESSAGE_SIZE: usize = 1 << 20;
/// What one mutation costs on the wire beyond its document's bytes (id, timestamp, option
/// tag, vector header, alignment), rounded up.
pub(crate) const MUTATION_OVERHEAD: usize = 64;
/// What one repair or read entry costs on the wire without a document, rounded up.
pub(crate) const ENTRY_OVERHEAD: usize = 40;
/// The most bytes of documents in one replication batch. Far below the message limit: a
/// batch is applied in one go on the receiver, and everything else travelling on that
/// connection (gossip included) waits behind it; a few MiB already amortise the call.
pub(crate) const MAX_BATCH_BYTES: usize = 8 << 20;
/// The most ids asked for in one fetch or read request.
pub(crate) const MAX_KEYS_PER_REQUEST: usize = 65_536;

/// Every setting of a store (see the setters of
/// [`EventuallyConsistentStoreExtension`](crate::EventuallyConsistentStoreExtension)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreConfig {
    pub(crate) repair_interval: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) rpc_timeout: Duration,
    pub(crate) repair_round_timeout: Duration,
    pub(crate) tombstone_grace: Duration,
    pub(crate) max_batch: usize,
    pub(crate) max_message_size: usize,
    pub(crate) max_keyspaces: usize,
    pub(crate) max_keyspace_name_len: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            repair_interval: DEFAULT_REPAIR_INTERVAL,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            rpc_timeout: DEFAULT_RPC_TIMEOUT,
            repair_round_timeout: DEFAULT_REPAIR_ROUND_TIMEOUT,
            tombstone_grace: DEFAULT_TOMBSTONE_GRACE,
            max_batch: DEFAULT_MAX_BATCH,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_keyspaces: DEFAULT_MAX_KEYSPACES,
            max_keyspace_name_len: DEFAULT_MAX_KEYSPACE_NAME_LEN,
        }
    }
}

/// Timers and deadlines are refused beyond this (a year): far beyond any sensible value,
/// and far from the point where `Instant + Duration` overflows.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

impl StoreConfig {
    /// Checks every setting; the first bad one is the error.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let positive = |setting: &'static str, value: Duration| {
            if value.is_zero() {
                Err(ConfigError::new(setting, "must be greater than zero"))
            } else if value > MAX_DURATION {
                Err(ConfigError::new(
                    setting,
                    format!("{value:?} is longer than the maximum of {MAX_DURATION:?}"),
                ))
            } else {
                Ok(())
            }
        };
        positive("repair_interval", self.repair_interval)?;
        positive("write_timeout", self.write_timeout)?;
        positive("read_timeout", self.read_timeout)?;
        positive("rpc_timeout", self.rpc_timeout)?;
        positive("repair_round_timeout", self.repair_round_timeout)?;
        if self.tombstone_grace > MAX_DURATION {
            return Err(ConfigError::new(
                "tombstone_grace",
                format!("longer than the maximum of {MAX_DURATION:?}"),
            ));
        }
        if self.max_batch == 0 {
            return Err(ConfigError::new("max_batch", "must be at least 1"));
        }
        if !(MIN_MESSAGE_SIZE..=DEFAULT_MAX_MESSAGE_SIZE).contains(&self.max_message_size) {
            return Err(ConfigError::new(
                "max_message_size",
                format!(
                    "{} bytes is outside {MIN_MESSAGE_SIZE}..={DEFAULT_MAX_MESSAGE_SIZE} (the \
                     RPC server refuses bodies over {DEFAULT_MAX_MESSAGE_SIZE})",
                    self.max_message_size
                ),
            ));
        }
        if self.max_keyspaces == 0 {
            return Err(ConfigError::new("max_keyspaces", "must be at least 1"));
        }
        if !(1..=u16::MAX as usize).contains(&self.max_keyspace_name_len) {
            return Err(ConfigError::new(
                "max_keyspace_name_len",
                "must be between 1 and 65,535 bytes",
            ));
        }
        Ok(())
    }

    /// The bytes of payload one message may carry: the maximum message size less room for
    /// the envelope.
    pub(crate) fn message_budget(&self) -> usize {
        self.max_message_size - MESSAGE_HEADROOM
    }

    /// The most bytes of mutations in one replication batch (one mutation always goes,
    /// whatever its size).
    pub(crate) fn batch_budget(&self) -> usize {
        self.message_budget().min(MAX_BATCH_BYTES)
    }

    /// The largest document a `put` accepts: one that fits, with its id, timestamp and
    /// keyspace name, in one message, so every write can be replicated, repaired and read.
    pub(crate) fn max_document_size(&self) -> usize {
        self.message_budget() - MUTATION_OVERHEAD - self.max_keyspace_name_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_a_document_fits_a_message() {
        let config = StoreConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert!(config.max_document_size() + MUTATION_OVERHEAD < config.max_message_size);
        assert!(config.max_document_size() > 63 << 20);
    }

    #[test]
    fn bad_settings_are_named() {
        let bad = [
            StoreConfig {
                repair_interval: Duration::ZERO,
                ..StoreConfig::default()
            },
            StoreConfig {
                write_timeout: Duration::MAX,
                ..StoreConfig::default()
            },
            StoreConfig {
                repair_round_timeout: Duration::ZERO,
                ..StoreConfig::default()
            },
            StoreConfig {
                max_message_size: 1_000,
                ..StoreConfig::default()
            },
            StoreConfig {
                max_message_size: usize::MAX,
                ..StoreConfig::default()
            },
            StoreConfig {
                max_keyspaces: 0,
                ..StoreConfig::default()
            },
            StoreConfig {
                max_keyspace_name_len: 0,
                ..StoreConfig::default()
            },
        ];
        let named: Vec<&str> = bad
            .iter()
            .map(|c| c.validate().expect_err("refused").setting)
            .collect();
        assert_eq!(
            named,
            [
                "repair_interval",
                "write_timeout",
                "repair_round_timeout",
                "max_message_size",
                "max_message_size",
                "max_keyspaces",
                "max_keyspace_name_len"
            ]
        );
    }
}
