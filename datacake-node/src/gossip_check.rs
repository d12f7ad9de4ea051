//! Checks a received gossip packet's bytes before chitchat decodes them.
//!
//! chitchat 0.13 trusts two things a peer controls, and both are reachable by anyone who can
//! call the node's gossip service (a SYN-ACK also arrives as the reply to our own SYN):
//!
//! - **A delta's shape.** A node delta is a `Node` op followed by `KeyValue` ops (versions
//!   strictly increasing) or by one `SetMaxVersion` op. chitchat's decoder also accepts
//!   `KeyValue{v}` followed by `SetMaxVersion{m < v}`, which lowers the delta's max version
//!   below its own key/values; applying it trips an `assert!` in `NodeState::apply_delta`
//!   inside chitchat's server task, which then ends for good: the node stops gossiping and
//!   its membership view freezes. chitchat's own encoder writes `SetMaxVersion` only for a
//!   node delta without key/values (`Delta::get_operations`, `ClusterState::
//!   compute_partial_delta_respecting_mtu`), so a `SetMaxVersion` after a `KeyValue` of the
//!   same node delta is refused.
//! - **Decompressed size.** Digests (protocol V1) and deltas are streams of zstd blocks, each
//!   decompressing to at most 64 KiB, with no bound on their number: one datagram of tiny
//!   frames of zeros expands to hundreds of megabytes. The streams of one message may
//!   decompress to [`MAX_DECOMPRESSED`] bytes in all; blocks are decompressed one at a time
//!   into a 64 KiB scratch buffer and the packet is refused as soon as the total would pass
//!   the bound.
//!
//! - **Its table's size.** chitchat records every node a SYN's or SYN-ACK's digest lists (a
//!   digest entry is all it takes), and its own digest, which lists every node it records,
//!   must fit one datagram: once it leaves less than 100 bytes of one for a delta, an
//!   `assert!` in chitchat's gossip task ends it for good at the next SYN it answers. Before,
//!   a SYN or two listing some thousands of made-up ids did that. [`DigestBound`] caps what
//!   the table may grow to: when a digest's new entries would take the node's own digest
//!   past a datagram (counted uncompressed, so whatever compression achieves), the transport
//!   takes them out of it ([`restrict_digest`]) before chitchat sees the message, and checks
//!   the bound again on chitchat's table as chitchat takes it.
//!
//! The walk follows chitchat 0.13's wire format (`message_serialize.rs`, `digest.rs`,
//! `serialize.rs`, `delta.rs`) and is never stricter than chitchat's decoder: bytes it cannot
//! walk are bytes chitchat refuses too. Like chitchat, it ignores bytes after the message.

use std::collections::HashSet;

use chitchat::ChitchatId;

/// Most bytes the digest and delta streams of one gossip message may decompress to, all
/// blocks together.
///
/// A message is one datagram of at most 65,507 bytes. A node's digest takes at most 65,403
/// bytes uncompressed ([`DigestBound`]), so its SYNs decompress to no more. chitchat sizes a
/// delta by its compressed length, and node states (ids, addresses, a few short tags)
/// compress a few times (a V1 digest of 1,479 members is 3.4x smaller than V0's), so a full
/// delta is a few hundred KB at most. 1 MiB leaves room above
/// that, while a bomb (65 KB of tiny frames, hundreds of MB decompressed) is stopped after
/// 1 MiB. Decoded messages queue for chitchat, so this also bounds each queued message.
pub(crate) const MAX_DECOMPRESSED: usize = 1 << 20;

/// chitchat's magic number, first in every message (little-endian).
const MAGIC_NUMBER: u16 = 45_139;
/// The most bytes chitchat writes into one message (its crate-private
/// `MAX_UDP_DATAGRAM_PAYLOAD_SIZE`).
pub(crate) const MAX_MESSAGE: usize = 65_507;
/// A message's header: magic number, protocol version, message type.
const HEADER_LEN: usize = 4;
/// The room chitchat's `DeltaSerializer` asserts it has for a delta beside its digest.
const MIN_DELTA_ROOM: usize = 100;
/// chitchat compresses a V1 digest in blocks of this many bytes at most
/// (`DIGEST_BLOCK_THRESHOLD`).
const DIGEST_BLOCK: usize = 16_384;
/// Each block of a stream starts with its type and length.
const BLOCK_META_LEN: usize = 3;
/// A node's entry in a digest besides its id: heartbeat, last GC version, max version.
const NODE_DIGEST_LEN: usize = 24;
/// chitchat decompresses each block into a buffer of this size (`deserialize_stream`).
const MAX_BLOCK: usize = u16::MAX as usize;

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// Not a message chitchat would decode (it refuses these bytes too).
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// Its compressed streams decompress to more than [`MAX_DECOMPRESSED`] bytes.
    #[error("decompresses to more than {MAX_DECOMPRESSED} bytes")]
    TooLarge,
    /// A node delta sets its max version after key/values (see the module docs).
    #[error("a node delta sets its max version after key/values")]
    MaxVersionAfterKeyValues,
    /// Its digest lists nodes the table does not hold, and recording them would take the
    /// node's own digest past a datagram (see [`DigestBound`]).
    #[error("its digest lists {new} nodes this node does not know, more than its gossip table has room for")]
    TableFull {
        /// The digest's entries for nodes the table does not hold.
        new: usize,
    },
}

/// What [`check`] learnt of a message chitchat may be handed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Checked {
    /// The nodes its digest lists (none for an ACK or `BadCluster`): see [`DigestBound`] for
    /// what they may add.
    pub(crate) listed: Vec<ChitchatId>,
    /// Its bytes, plus what its compressed streams decompress to: about the size chitchat
    /// decodes it to (its decoded structs take a few times that).
    pub(crate) decoded_len: usize,
}

/// `Ok` if chitchat may be handed `bytes`, an encoded `ChitchatEnvelope`.
pub(crate) fn check(bytes: &[u8]) -> Result<Checked, Refusal> {
    let mut r = Reader(bytes);
    if r.u16("magic number")? != MAGIC_NUMBER {
        return Err(Refusal::Malformed("magic number"));
    }
    let compressed_digest = match r.u8("protocol version")? {
        0 => false,
        1 => true,
        _ => return Err(Refusal::Malformed("protocol version")),
    };
    let mut streams = Streams::default();
    // The digest's entries are read last, once every stream passed the size bound.
    let digest = match r.u8("message type")? {
        // SYN: digest, then the cluster id (nothing to check there).
        0 => digest(&mut r, compressed_digest, &mut streams)?,
        // SYN-ACK: digest, then delta.
        1 => {
            let digest = digest(&mut r, compressed_digest, &mut streams)?;
            delta(&mut r, &mut streams)?;
            digest
        }
        // ACK: delta.
        2 => {
            delta(&mut r, &mut streams)?;
            Vec::new()
        }
        // BadCluster: header only.
        3 => Vec::new(),
        _ => return Err(Refusal::Malformed("message type")),
    };
    let mut entries = Reader(&digest);
    let mut nodes = Vec::new();
    while !entries.0.is_empty() {
        nodes.push(entries.digest_entry()?.0);
    }
    Ok(Checked {
        listed: nodes,
        decoded_len: bytes.len() + streams.total,
    })
}

/// A digest's entries, uncompressed: V0 lists them after their count, V1 is a block stream
/// of them.
fn digest(r: &mut Reader<'_>, compressed: bool, streams: &mut Streams) -> Result<Vec<u8>, Refusal> {
    if compressed {
        return streams.read(r);
    }
    let count = r.u16("digest length")?;
    let start = r.0;
    for _ in 0..count {
        r.digest_entry()?;
    }
    Ok(start[..start.len() - r.0.len()].to_vec())
}

/// `bytes`, a SYN or SYN-ACK that [`check`] passed, with its digest restricted to the
/// entries of the nodes `keep` takes; everything else as it was (an ACK or `BadCluster`
/// unchanged). A V1 digest is compressed again in blocks of at most 16 KiB, as chitchat
/// writes it (stored as they are where compression does not shrink them), so the message
/// does not grow past what chitchat sent, give or take a few bytes per block.
pub(crate) fn restrict_digest(
    bytes: &[u8],
    keep: impl Fn(&ChitchatId) -> bool,
) -> Result<Vec<u8>, Refusal> {
    let mut r = Reader(bytes);
    r.take(HEADER_LEN, "header")?;
    let compressed = bytes[2] == 1;
    if !matches!(bytes[3], 0 | 1) {
        return Ok(bytes.to_vec());
    }
    let entries = digest(&mut r, compressed, &mut Streams::default())?;
    let mut kept = Vec::with_capacity(entries.len());
    let mut count = 0usize;
    let mut rest = Reader(&entries);
    while !rest.0.is_empty() {
        let (id, entry) = rest.digest_entry()?;
        if keep(&id) {
            kept.extend_from_slice(entry);
            count += 1;
        }
    }
    let mut out = bytes[..HEADER_LEN].to_vec();
    if compressed {
        for block in kept.chunks(DIGEST_BLOCK) {
            match zstd::bulk::compress(block, 0) {
                Ok(packed) if packed.len() < block.len() => {
                    out.push(1);
                    out.extend((packed.len() as u16).to_le_bytes());
                    out.extend(packed);
                }
                _ => {
                    out.push(2);
                    out.extend((block.len() as u16).to_le_bytes());
                    out.extend(block);
                }
            }
        }
        out.push(0);
    } else {
        // (At most the count the message had.)
        let count = u16::try_from(count).map_err(|_| Refusal::Malformed("digest length"))?;
        out.extend(count.to_le_bytes());
        out.extend(&kept);
    }
    out.extend_from_slice(r.0);
    Ok(out)
}

/// How large a node's gossip table may grow: the uncompressed size of its digest, so that
/// chitchat's digest always fits one datagram with room for a delta (see the module docs).
///
/// Counted uncompressed because compression depends on the ids (made-up random ones barely
/// compress) and chitchat keeps a block that would not shrink as it is: a V1 digest takes at
/// most its entries plus three bytes per 16 KiB block, plus one. An entry is its node's id
/// plus 24 bytes: 51 bytes for a 10-byte node id and an IPv4 address, so about 1,280 nodes
/// fit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DigestBound {
    /// The most bytes a digest may take, encoded.
    limit: usize,
}

impl DigestBound {
    /// The bound for a node of cluster `cluster_id` (a SYN carries the cluster id after its
    /// digest).
    pub(crate) fn new(cluster_id: &str) -> Self {
        let beside = MIN_DELTA_ROOM.max(2 + cluster_id.len());
        Self {
            limit: MAX_MESSAGE.saturating_sub(HEADER_LEN + beside),
        }
    }

    /// `Ok` if a table holding the nodes `known` (the node itself included) may record every
    /// node `listed`, a received digest, lists; `contains` tells whether the table holds a
    /// node already.
    pub(crate) fn admits<'a>(
        &self,
        known: impl Iterator<Item = &'a ChitchatId>,
        contains: impl Fn(&ChitchatId) -> bool,
        listed: &[ChitchatId],
    ) -> Result<(), Refusal> {
        let (mut new, mut new_len) = (0, 0);
        for id in listed.iter().filter(|id| !contains(id)) {
            new += 1;
            new_len += entry_len(id);
        }
        if new == 0 {
            return Ok(());
        }
        let entries = known.map(entry_len).sum::<usize>() + new_len;
        if encoded_digest_bound(entries) > self.limit {
            return Err(Refusal::TableFull { new });
        }
        Ok(())
    }

    /// The new nodes of `listed` (those `contains` says the table does not hold) that a
    /// table holding `known` has room for, taken in the order listed while they fit.
    pub(crate) fn fitting<'a>(
        &self,
        known: impl Iterator<Item = &'a ChitchatId>,
        contains: impl Fn(&ChitchatId) -> bool,
        listed: &[ChitchatId],
    ) -> HashSet<ChitchatId> {
        let mut entries = known.map(entry_len).sum::<usize>();
        let mut fitting = HashSet::new();
        for id in listed.iter().filter(|id| !contains(id)) {
            let with = entries + entry_len(id);
            if encoded_digest_bound(with) <= self.limit && fitting.insert(id.clone()) {
                entries = with;
            }
        }
        fitting
    }
}

/// The bytes `id`'s entry takes in a digest, uncompressed.
fn entry_len(id: &ChitchatId) -> usize {
    let ip = match id.gossip_advertise_addr {
        std::net::SocketAddr::V4(_) => 4,
        std::net::SocketAddr::V6(_) => 16,
    };
    2 + id.node_id.len() + 8 + 1 + ip + 2 + NODE_DIGEST_LEN
}

/// The most bytes a digest whose entries take `entries` bytes uncompressed takes encoded, in
/// either protocol version (V0 counts its entries in two bytes first).
fn encoded_digest_bound(entries: usize) -> usize {
    let v1 = entries + BLOCK_META_LEN * entries.div_ceil(DIGEST_BLOCK) + 1;
    v1.max(entries + 2)
}

/// Walks a delta's ops, refusing a `SetMaxVersion` after a `KeyValue` of the same node delta.
fn delta(r: &mut Reader<'_>, streams: &mut Streams) -> Result<(), Refusal> {
    let ops = streams.read(r)?;
    let mut ops = Reader(&ops);
    // `None` before the first `Node` op, else whether the current node delta has key/values.
    let mut has_key_values = None;
    while !ops.0.is_empty() {
        match ops.u8("delta op")? {
            0 => {
                ops.chitchat_id()?;
                ops.take(16, "node op")?; // last gc version, from version (excluded)
                has_key_values = Some(false);
            }
            1 => {
                if has_key_values.is_none() {
                    return Err(Refusal::Malformed("key/value before a node"));
                }
                ops.str("key")?;
                ops.str("value")?;
                ops.take(8, "key/value version")?;
                if ops.u8("deletion status")? > 2 {
                    return Err(Refusal::Malformed("deletion status"));
                }
                has_key_values = Some(true);
            }
            2 => {
                ops.take(8, "max version")?;
                match has_key_values {
                    None => return Err(Refusal::Malformed("max version before a node")),
                    Some(true) => return Err(Refusal::MaxVersionAfterKeyValues),
                    Some(false) => {}
                }
            }
            _ => return Err(Refusal::Malformed("delta op")),
        }
    }
    Ok(())
}

/// The compressed streams of one message, and what they decompressed to so far.
#[derive(Default)]
struct Streams {
    total: usize,
    /// Where one block decompresses (allocated at the first compressed block).
    scratch: Vec<u8>,
}

impl Streams {
    /// Reads one block stream as chitchat's `deserialize_stream` does and returns its bytes.
    fn read(&mut self, r: &mut Reader<'_>) -> Result<Vec<u8>, Refusal> {
        let mut out = Vec::new();
        loop {
            let block = match r.u8("block type")? {
                0 => return Ok(out),
                1 => {
                    let len = r.u16("block length")?;
                    let compressed = r.take(usize::from(len), "compressed block")?;
                    self.scratch.resize(MAX_BLOCK, 0);
                    let len = zstd::bulk::decompress_to_buffer(compressed, &mut self.scratch[..])
                        .map_err(|_| Refusal::Malformed("compressed block"))?;
                    &self.scratch[..len]
                }
                2 => {
                    let len = r.u16("block length")?;
                    r.take(usize::from(len), "uncompressed block")?
                }
                _ => return Err(Refusal::Malformed("block type")),
            };
            self.total += block.len();
            if self.total > MAX_DECOMPRESSED {
                return Err(Refusal::TooLarge);
            }
            out.extend_from_slice(block);
        }
    }
}

/// chitchat's primitives: little-endian integers, strings as a u16 length and bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], Refusal> {
        if self.0.len() < len {
            return Err(Refusal::Malformed(what));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Refusal> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Refusal> {
        let bytes = self.take(2, what)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    /// A string's bytes (chitchat also checks they are UTF-8; refusing is left to it).
    fn str(&mut self, what: &'static str) -> Result<&'a [u8], Refusal> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, Refusal> {
        let bytes = self.take(8, what)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("eight bytes")))
    }

    /// A digest's entry: its node's id, and the entry's bytes (the id, then heartbeat, last
    /// GC version and max version).
    fn digest_entry(&mut self) -> Result<(ChitchatId, &'a [u8]), Refusal> {
        let start = self.0;
        let id = self.chitchat_id()?;
        self.take(NODE_DIGEST_LEN, "node digest")?;
        Ok((id, &start[..start.len() - self.0.len()]))
    }

    /// A `ChitchatId`: node id (UTF-8, as chitchat requires), generation, then the gossip
    /// address (IP version 4 or 6, its octets, the port).
    fn chitchat_id(&mut self) -> Result<ChitchatId, Refusal> {
        let node_id =
            std::str::from_utf8(self.str("node id")?).map_err(|_| Refusal::Malformed("node id"))?;
        let generation = self.u64("generation")?;
        let ip: std::net::IpAddr = match self.u8("ip version")? {
            4 => <[u8; 4]>::try_from(self.take(4, "gossip address")?)
                .expect("four bytes")
                .into(),
            6 => <[u8; 16]>::try_from(self.take(16, "gossip address")?)
                .expect("sixteen bytes")
                .into(),
            _ => return Err(Refusal::Malformed("ip version")),
        };
        let port = self.u16("gossip address")?;
        Ok(ChitchatId {
            node_id: node_id.into(),
            generation_id: generation,
            gossip_advertise_addr: (ip, port).into(),
        })
    }
}

/// A tiny encoder of chitchat's wire format, for tests that need messages chitchat's own
/// encoder never writes.
#[cfg(test)]
pub(crate) mod wire {
    use std::net::SocketAddr;

    /// An op of a delta.
    pub(crate) enum Op<'a> {
        Node {
            node_id: &'a str,
            generation: u64,
            addr: SocketAddr,
            from_version: u64,
        },
        KeyValue {
            key: &'a str,
            value: &'a str,
            version: u64,
        },
        SetMaxVersion(u64),
    }

    fn str(buf: &mut Vec<u8>, s: &str) {
        buf.extend((s.len() as u16).to_le_bytes());
        buf.extend(s.as_bytes());
    }

    fn chitchat_id(buf: &mut Vec<u8>, node_id: &str, generation: u64, addr: SocketAddr) {
        str(buf, node_id);
        buf.extend(generation.to_le_bytes());
        match addr.ip() {
            std::net::IpAddr::V4(ip) => {
                buf.push(4);
                buf.extend(ip.octets());
            }
            std::net::IpAddr::V6(ip) => {
                buf.push(6);
                buf.extend(ip.octets());
            }
        }
        buf.extend(addr.port().to_le_bytes());
    }

    /// The ops' bytes, as they are before compression.
    pub(crate) fn ops(ops: &[Op<'_>]) -> Vec<u8> {
        let mut buf = Vec::new();
        for op in ops {
            match op {
                Op::Node {
                    node_id,
                    generation,
                    addr,
                    from_version,
                } => {
                    buf.push(0);
                    chitchat_id(&mut buf, node_id, *generation, *addr);
                    buf.extend(0u64.to_le_bytes()); // last gc version
                    buf.extend(from_version.to_le_bytes());
                }
                Op::KeyValue {
                    key,
                    value,
                    version,
                } => {
                    buf.push(1);
                    str(&mut buf, key);
                    str(&mut buf, value);
                    buf.extend(version.to_le_bytes());
                    buf.push(0); // set, not deleted
                }
                Op::SetMaxVersion(version) => {
                    buf.push(2);
                    buf.extend(version.to_le_bytes());
                }
            }
        }
        buf
    }

    /// `blocks` as a block stream: each block compressed if `compress`, else stored.
    pub(crate) fn stream(blocks: &[&[u8]], compress: bool) -> Vec<u8> {
        let mut buf = Vec::new();
        for block in blocks {
            let (tag, bytes) = if compress {
                (1, zstd::bulk::compress(block, 0).unwrap())
            } else {
                (2, block.to_vec())
            };
            buf.push(tag);
            buf.extend((bytes.len() as u16).to_le_bytes());
            buf.extend(bytes);
        }
        buf.push(0); // no more blocks
        buf
    }

    /// An ACK (protocol V1) whose delta is a bomb: as many zstd frames of 64 KiB of zeros as
    /// fit 65,000 bytes (several hundred megabytes once decompressed).
    pub(crate) fn bomb() -> Vec<u8> {
        let frame = zstd::bulk::compress(&[0u8; u16::MAX as usize], 0).unwrap();
        let mut buf = ack(&[]);
        while buf.len() + 3 + frame.len() < 65_000 {
            buf.push(1);
            buf.extend((frame.len() as u16).to_le_bytes());
            buf.extend(&frame);
        }
        buf.push(0);
        buf
    }

    /// A node's entry in a digest.
    pub(crate) struct DigestEntry<'a> {
        pub(crate) node_id: &'a str,
        pub(crate) generation: u64,
        pub(crate) addr: SocketAddr,
        pub(crate) heartbeat: u64,
        pub(crate) max_version: u64,
    }

    /// A SYN (protocol V0: the digest uncompressed) of cluster `cluster_id` whose digest lists
    /// `nodes` (last gc version 0).
    pub(crate) fn syn_v0(cluster_id: &str, nodes: &[DigestEntry<'_>]) -> Vec<u8> {
        let mut buf = 45_139u16.to_le_bytes().to_vec();
        buf.extend([0, 0]); // protocol V0, SYN
        buf.extend((nodes.len() as u16).to_le_bytes());
        for node in nodes {
            chitchat_id(&mut buf, node.node_id, node.generation, node.addr);
            buf.extend(node.heartbeat.to_le_bytes());
            buf.extend(0u64.to_le_bytes()); // last gc version
            buf.extend(node.max_version.to_le_bytes());
        }
        str(&mut buf, cluster_id);
        buf
    }

    /// A SYN (protocol V1: the digest a stream of one compressed block) of cluster
    /// `cluster_id` whose digest lists `nodes`.
    pub(crate) fn syn_v1(cluster_id: &str, nodes: &[DigestEntry<'_>]) -> Vec<u8> {
        let mut entries = Vec::new();
        for node in nodes {
            chitchat_id(&mut entries, node.node_id, node.generation, node.addr);
            entries.extend(node.heartbeat.to_le_bytes());
            entries.extend(0u64.to_le_bytes()); // last gc version
            entries.extend(node.max_version.to_le_bytes());
        }
        let mut buf = 45_139u16.to_le_bytes().to_vec();
        buf.extend([1, 0]); // protocol V1, SYN
        buf.extend(stream(&[&entries], true));
        str(&mut buf, cluster_id);
        buf
    }

    /// An ACK (protocol V1) carrying the delta `stream`.
    pub(crate) fn ack(stream: &[u8]) -> Vec<u8> {
        let mut buf = 45_139u16.to_le_bytes().to_vec();
        buf.extend([1, 2]); // protocol V1, ACK
        buf.extend(stream);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::wire::{self, ack, ops, stream, Op};
    use super::*;

    fn node(node_id: &str) -> Op<'_> {
        Op::Node {
            node_id,
            generation: 1_796_000_000_000_000,
            addr: "10.0.0.9:7000".parse().unwrap(),
            from_version: 0,
        }
    }

    fn kv(key: &str, version: u64) -> Op<'_> {
        Op::KeyValue {
            key,
            value: "v",
            version,
        }
    }

    /// The delta that stops chitchat's gossip task: key/value 5, then max version 4.
    fn lowering_max_version() -> Vec<u8> {
        ops(&[node("9"), kv("a", 5), Op::SetMaxVersion(4)])
    }

    #[test]
    fn a_max_version_after_key_values_is_refused() {
        for compress in [false, true] {
            let malicious = ack(&stream(&[&lowering_max_version()], compress));
            assert_eq!(check(&malicious), Err(Refusal::MaxVersionAfterKeyValues));
            // Even at or above the key/values' versions: chitchat never writes it.
            let mixed = ops(&[node("9"), kv("a", 5), Op::SetMaxVersion(6)]);
            let mixed = ack(&stream(&[&mixed], compress));
            assert_eq!(check(&mixed), Err(Refusal::MaxVersionAfterKeyValues));
        }
        // Split across blocks, and in a later node delta.
        let ops_bytes = ops(&[
            node("1"),
            Op::SetMaxVersion(3),
            node("9"),
            kv("a", 5),
            kv("b", 6),
            Op::SetMaxVersion(4),
        ]);
        let (head, tail) = ops_bytes.split_at(ops_bytes.len() - 5);
        let malicious = ack(&stream(&[head, tail], true));
        assert_eq!(check(&malicious), Err(Refusal::MaxVersionAfterKeyValues));
    }

    #[test]
    fn the_shapes_chitchat_writes_pass() {
        // Key/values only; max version only (a node state emptied by GC); several nodes.
        let good = ops(&[
            node("1"),
            kv("a", 1),
            kv("b", 7),
            node("2"),
            Op::SetMaxVersion(12),
            node("3"),
        ]);
        for compress in [false, true] {
            let message = ack(&stream(&[&good], compress));
            let checked = check(&message);
            // What it decodes from: its bytes and its delta's, decompressed.
            let decoded_len = message.len() + good.len();
            let expected = Checked {
                listed: vec![],
                decoded_len,
            };
            assert_eq!(checked, Ok(expected));
        }
        assert_eq!(
            listed(&ack(&stream(&[], false))),
            Ok(vec![]),
            "an empty delta"
        );
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        let bomb = wire::bomb();
        let frame_len = zstd::bulk::compress(&[0u8; MAX_BLOCK], 0).unwrap().len();
        let expands_to = (bomb.len() - 5) / (3 + frame_len) * MAX_BLOCK;
        assert!(
            expands_to > 100 * MAX_DECOMPRESSED,
            "{} bytes expand to {} MB",
            bomb.len(),
            expands_to >> 20
        );
        assert_eq!(check(&bomb), Err(Refusal::TooLarge));

        // The bound counts the digest's and the delta's streams together.
        let zeros = vec![0u8; MAX_BLOCK];
        let half = stream(&[&zeros[..]; MAX_DECOMPRESSED / MAX_BLOCK / 2 + 1], true);
        let mut syn_ack = 45_139u16.to_le_bytes().to_vec();
        syn_ack.extend([1, 1]); // V1 SYN-ACK
        syn_ack.extend(&half); // digest (its entries are read after the size bound)
        assert_eq!(check(&syn_ack), Err(Refusal::Malformed("block type")));
        syn_ack.extend(&half); // delta
        assert_eq!(check(&syn_ack), Err(Refusal::TooLarge));
    }

    /// The nodes `bytes` lists, if it passes.
    fn listed(bytes: &[u8]) -> Result<Vec<ChitchatId>, Refusal> {
        check(bytes).map(|checked| checked.listed)
    }

    /// `nodes`' digest entries (heartbeat 40, max version 9).
    fn digest_entries(nodes: &[ChitchatId]) -> Vec<wire::DigestEntry<'_>> {
        nodes
            .iter()
            .map(|id| wire::DigestEntry {
                node_id: &id.node_id,
                generation: id.generation_id,
                addr: id.gossip_advertise_addr,
                heartbeat: 40,
                max_version: 9,
            })
            .collect()
    }

    fn id(node_id: &str, last: u8) -> ChitchatId {
        ChitchatId {
            node_id: node_id.into(),
            generation_id: 1_796_000_000_000_000 + u64::from(last),
            gossip_advertise_addr: ([10, 0, 0, last], 7000).into(),
        }
    }

    #[test]
    fn the_nodes_a_digest_lists_are_read_in_either_version() {
        let nodes = [id("7", 1), id("node-eight", 2), id("niné", 3)];
        let entries = digest_entries(&nodes);
        assert_eq!(listed(&wire::syn_v0("c", &entries)), Ok(nodes.to_vec()));
        assert_eq!(listed(&wire::syn_v1("c", &entries)), Ok(nodes.to_vec()));
        assert_eq!(listed(&wire::syn_v1("c", &[])), Ok(vec![]));
        // An entry cut short, and a node id that is not UTF-8 (chitchat refuses both).
        let mut short = wire::syn_v0("c", &entries[..1]);
        short.truncate(short.len() - 2 - 1 - 1); // the cluster id, then a byte of the entry
        assert!(matches!(check(&short), Err(Refusal::Malformed(_))));
        let mut latin1 = wire::syn_v0("c", &entries[2..]);
        let at = latin1.iter().position(|b| *b == 0xC3).unwrap();
        latin1[at] = 0xE9;
        latin1.remove(at + 1);
        latin1[6] -= 1; // the node id's length
        assert_eq!(check(&latin1), Err(Refusal::Malformed("node id")));
    }

    #[test]
    fn a_digest_restricted_keeps_the_nodes_asked_for_and_the_rest_of_the_message() {
        let nodes: Vec<ChitchatId> = (0..600u32)
            .map(|i| id(&format!("node-{i}"), i as u8))
            .collect();
        let entries = digest_entries(&nodes);
        let keep = |id: &ChitchatId| id.node_id.ends_with('7');
        let kept: Vec<ChitchatId> = nodes.iter().filter(|id| keep(id)).cloned().collect();
        for syn in [wire::syn_v0("c", &entries), wire::syn_v1("c", &entries)] {
            let restricted = restrict_digest(&syn, keep).unwrap();
            assert_eq!(listed(&restricted), Ok(kept.clone()));
            assert_eq!(&restricted[..4], &syn[..4], "the header");
            assert!(restricted.ends_with(&[1, 0, b'c']), "the cluster id");
            assert!(restricted.len() < syn.len());
            // Keeping every node keeps every entry.
            let all = restrict_digest(&syn, |_| true).unwrap();
            assert_eq!(listed(&all), Ok(nodes.clone()));
        }
        // A SYN-ACK keeps its delta as it was; an ACK is left alone.
        let delta = stream(&[&ops(&[node("1"), kv("a", 1)])], true);
        let mut syn_ack = wire::syn_v1("c", &entries);
        syn_ack.truncate(syn_ack.len() - 3); // the cluster id
        syn_ack[3] = 1;
        syn_ack.extend(&delta);
        let restricted = restrict_digest(&syn_ack, keep).unwrap();
        assert_eq!(listed(&restricted), Ok(kept));
        assert!(restricted.ends_with(&delta));
        let ack = ack(&delta);
        assert_eq!(restrict_digest(&ack, |_| false), Ok(ack));
    }

    /// With 10-byte node ids and IPv4 addresses an entry takes 51 bytes, and a node of
    /// cluster "c" has 65,507 - 4 - 100 = 65,403 bytes for its digest: 1,282 entries take
    /// 65,382 bytes, plus 3 for each of 4 blocks and 1 (65,395); 1,283 would take 65,433.
    #[test]
    fn a_table_takes_new_nodes_while_its_digest_fits_a_datagram() {
        let bound = DigestBound::new("c");
        let table: Vec<ChitchatId> = (0..1_282)
            .map(|i: u32| id(&format!("{i:010}"), (i % 250) as u8))
            .collect();
        let admits = |table: &[ChitchatId], listed: &[ChitchatId]| {
            bound.admits(table.iter(), |id| table.contains(id), listed)
        };
        let newcomer = [id("newcomer-1", 1)];
        assert_eq!(admits(&table[..1_281], &newcomer), Ok(()));
        assert_eq!(
            admits(&table, &newcomer),
            Err(Refusal::TableFull { new: 1 })
        );
        // Nodes the table holds cost nothing: a full table still takes its members' gossip.
        assert_eq!(admits(&table, &table[..700]), Ok(()));
        let mixed = [table[3].clone(), id("newcomer-2", 2), id("newcomer-3", 3)];
        assert_eq!(admits(&table, &mixed), Err(Refusal::TableFull { new: 2 }));
        // Room for one more: the first new node listed takes it, known ones are not counted.
        let fitting = |table: &[ChitchatId], listed: &[ChitchatId]| {
            bound.fitting(table.iter(), |id| table.contains(id), listed)
        };
        let one = fitting(&table[..1_281], &mixed);
        assert_eq!(one, HashSet::from([mixed[1].clone()]));
        assert!(fitting(&table, &mixed).is_empty());
        assert_eq!(fitting(&table[..1_279], &mixed).len(), 2);
        // A digest too large for any table of its own.
        let alone = |listed: &[ChitchatId]| bound.admits(std::iter::empty(), |_| false, listed);
        assert_eq!(alone(&table), Ok(()));
        let more: Vec<_> = table.iter().cloned().chain(newcomer.clone()).collect();
        assert_eq!(alone(&more), Err(Refusal::TableFull { new: 1_283 }));
        // A long cluster id leaves less room.
        let long = DigestBound::new(&"c".repeat(200));
        assert!(long
            .admits(table[1..].iter(), |_| false, &newcomer)
            .is_err());
    }

    #[test]
    fn what_chitchat_cannot_decode_is_refused() {
        let good = ack(&stream(&[&ops(&[node("1"), kv("a", 1)])], true));
        // Every truncation of a valid message.
        for len in 0..good.len() {
            assert!(
                matches!(check(&good[..len]), Err(Refusal::Malformed(_))),
                "{len}"
            );
        }
        let mut bad_magic = good.clone();
        bad_magic[0] ^= 1;
        assert_eq!(check(&bad_magic), Err(Refusal::Malformed("magic number")));
        let orphan = ack(&stream(&[&ops(&[kv("a", 1)])], false));
        assert!(matches!(check(&orphan), Err(Refusal::Malformed(_))));
        // Bytes after the message are ignored, as chitchat does.
        let mut trailing = good;
        trailing.extend(b"trailing");
        assert_eq!(listed(&trailing), Ok(vec![]));
    }
}
