//! A node's settings ([`NodeConfig`]) and what is derived from them at start, in one place: the
//! initial voters (from `id` and `peers`, unless the node joins) and the size limits (the
//! largest command from the transport's frame limit).

use crate::transport::TransportConfig;
use raftengine::{Config, NodeId};
use raftwal::WalOptions;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// Settings of one node of a networked cluster.
///
/// The initial voters are not a field: they are derived when the node starts, from `id` and
/// `peers` (every peer is a voter, and so is this node), or none when the node `join`s. A data
/// directory remembers them from its first start (see [`super::bootstrap`]).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id: unique in the cluster, never 0, the same on every restart of its data
    /// directory.
    pub id: NodeId,
    /// The cluster's id, the same on every node: the transport's handshake refuses a peer of
    /// another cluster, and the data directory's record refuses a restart with another one.
    pub cluster_id: u64,
    /// Raft addresses of the other initial voters (of a joining node: of the members it can
    /// reach). Members added later are reached at the addresses their configuration entries
    /// carry. May be left empty on a restart: the data directory's saved record has them.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Where the node keeps its log segments, its snapshots (`snapshots/`) and its cluster
    /// record (`cluster.json`); created if missing. One directory per node.
    pub data_dir: PathBuf,
    /// This node joins a running cluster: it starts with no configuration and learns it from the
    /// leader's log or snapshot once a member adds it (it never campaigns until it is a voter).
    pub join: bool,
    /// Longest wait for the outcome of a membership change or a leadership transfer asked
    /// through the [`NodeHandle`](super::NodeHandle).
    pub admin_timeout: Duration,
    /// Length of one core tick. The core's defaults (heartbeat 1 tick, election 15–30 ticks)
    /// give, with 10 ms, the seed engine's 10 ms heartbeat and 150–300 ms election timeout.
    pub tick: Duration,
    /// The core's settings. Its `id` must be this config's `id` and its `voters` must stay
    /// empty (as [`NodeConfig::new`] leaves them): the voters are derived at start, and a start
    /// with other values is refused ([`NodeConfigError`]).
    pub raft: Config,
    /// Size of one log segment file in bytes (default 64 MiB, `raftwal`'s); the log is purged
    /// behind snapshots a whole segment at a time.
    pub segment_bytes: u64,
    /// Largest message frame the transport sends or accepts (default
    /// [`TransportConfig::DEFAULT_MAX_FRAME_BYTES`]).
    pub max_frame_bytes: usize,
    /// Largest command [`NodeHandle::write`](super::NodeHandle::write) accepts. `None` (the
    /// default): as large as a frame allows once an AppendEntries' envelope and entry overheads
    /// are set aside (just under 64 MiB with the defaults). The core bounds each AppendEntries
    /// by `raft.max_bytes_per_message` and lets one larger entry travel alone, so every
    /// AppendEntries fits a frame.
    pub max_command_bytes: Option<usize>,
    /// Command bytes this node's clients may have written and not yet been answered for
    /// (default 256 MiB). A [`NodeHandle::write`](super::NodeHandle::write) past it waits for
    /// earlier writes to finish, so a flood of writes holds a bounded amount of memory. A
    /// command larger than the budget still goes through, alone.
    pub max_pending_write_bytes: usize,
    /// Local address for connections to peers (default: none, the OS picks); see
    /// [`TransportConfig::source_ip`].
    pub peer_source_ip: Option<IpAddr>,
    /// Mutual TLS on the peer port (default: none); see [`crate::tls`] and
    /// [`TransportConfig::tls`]. [`PeerTls::reload`](crate::tls::PeerTls::reload) swaps the
    /// certificates of a running node.
    pub peer_tls: Option<std::sync::Arc<crate::tls::PeerTls>>,
    /// A known runtime defect to put back (test builds with the `mutations` feature only).
    #[cfg(feature = "mutations")]
    pub mutation: Option<super::RuntimeMutation>,
}

/// At most what a message adds around the entries it carries, encoded: sender, recipient,
/// term, the body's variant and its indexes, terms and lengths (postcard varints of at most 10
/// bytes each). Checked against the encoding by a test.
pub const MESSAGE_ENVELOPE_BYTES: usize = 128;
/// At most what one entry adds around its command, encoded (term, index, variant, length).
pub const ENTRY_OVERHEAD_BYTES: usize = 48;
/// Room a snapshot chunk's frame keeps for its membership and envelope.
const SNAPSHOT_CHUNK_MARGIN_BYTES: usize = 64 * 1024;

impl NodeConfig {
    /// Defaults: 10 ms ticks, forwarding of commands to the leader on, followers told of commits
    /// at once, pre-vote and check-quorum on, 64 MiB segments, 64 MiB frames.
    pub fn new(
        id: NodeId,
        cluster_id: u64,
        peers: BTreeMap<NodeId, SocketAddr>,
        data_dir: impl Into<PathBuf>,
    ) -> NodeConfig {
        let mut raft = Config::new(id, Vec::new());
        raft.forward_proposals = true;
        raft.notify_commit = true;
        raft.snapshot_after_entries = 100_000;
        raft.jitter_seed = super::random_seed();
        NodeConfig {
            id,
            cluster_id,
            peers,
            data_dir: data_dir.into(),
            join: false,
            admin_timeout: Duration::from_secs(30),
            tick: Duration::from_millis(10),
            raft,
            segment_bytes: WalOptions::default().segment_bytes,
            max_frame_bytes: TransportConfig::DEFAULT_MAX_FRAME_BYTES,
            max_command_bytes: None,
            max_pending_write_bytes: 256 * 1024 * 1024,
            peer_source_ip: None,
            peer_tls: None,
            #[cfg(feature = "mutations")]
            mutation: None,
        }
    }

    /// Checks the settings that must agree with each other.
    pub fn validate(&self) -> Result<Limits, NodeConfigError> {
        if self.id.0 == 0 {
            return Err(NodeConfigError::ZeroId);
        }
        if self.raft.id != self.id {
            return Err(NodeConfigError::IdMismatch {
                id: self.id,
                raft: self.raft.id,
            });
        }
        if !self.raft.voters.is_empty() {
            return Err(NodeConfigError::VotersGiven(self.raft.voters.clone()));
        }
        if self.peers.contains_key(&self.id) {
            return Err(NodeConfigError::SelfInPeers(self.id));
        }
        if self.tick.is_zero() {
            return Err(NodeConfigError::ZeroTick);
        }
        self.limits()
    }

    /// The voters this configuration starts a new cluster with: this node and every peer; none
    /// for a joining node.
    pub fn initial_voters(&self) -> Vec<NodeId> {
        if self.join {
            return Vec::new();
        }
        let mut voters: Vec<NodeId> = self.peers.keys().copied().collect();
        voters.push(self.id);
        voters.sort();
        voters.dedup();
        voters
    }

    /// The size limits in force (see [`Limits`]).
    fn limits(&self) -> Result<Limits, NodeConfigError> {
        let frame = self.max_frame_bytes;
        if frame > u32::MAX as usize {
            return Err(NodeConfigError::FrameTooLarge(frame));
        }
        let chunk = self.raft.max_snapshot_chunk_bytes;
        if chunk.saturating_add(SNAPSHOT_CHUNK_MARGIN_BYTES) > frame {
            return Err(NodeConfigError::ChunkOverFrame { chunk, frame });
        }
        // An AppendEntries carries commands of at most `max_bytes_per_message` bytes together,
        // or one larger command alone, plus an envelope and an overhead per entry.
        let entries = self.raft.max_entries_per_message.max(1);
        let overheads = MESSAGE_ENVELOPE_BYTES.saturating_add(entries * ENTRY_OVERHEAD_BYTES);
        let room = frame.saturating_sub(overheads);
        let command = self.max_command_bytes.unwrap_or(room);
        if command == 0 || command > room {
            return Err(NodeConfigError::CommandOverFrame { command, frame });
        }
        let per_message = usize::try_from(self.raft.max_bytes_per_message).unwrap_or(usize::MAX);
        let pending = self.max_pending_write_bytes;
        if pending == 0 || pending > u32::MAX as usize {
            return Err(NodeConfigError::PendingWriteBudget(pending));
        }
        Ok(Limits {
            max_frame_bytes: frame,
            max_command_bytes: command,
            max_bytes_per_message: per_message.min(room) as u64,
            max_pending_write_bytes: pending,
        })
    }
}

/// The size limits a node runs with, derived from its [`NodeConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame the transport sends or accepts.
    pub max_frame_bytes: usize,
    /// Largest command a client may write; larger ones are refused before they are proposed.
    pub max_command_bytes: usize,
    /// Command bytes per AppendEntries: the core's setting, lowered if needed to fit a frame.
    pub max_bytes_per_message: u64,
    /// Bytes of unanswered writes a node's clients may have outstanding together.
    pub max_pending_write_bytes: usize,
}

/// A [`NodeConfig`] whose settings contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodeConfigError {
    /// `id` is 0.
    #[error("node ids start at 1; 0 is not a valid id")]
    ZeroId,
    /// `raft.id` is not `id`.
    #[error("raft.id ({raft}) differs from the node's id ({id}); leave raft.id as NodeConfig::new sets it")]
    IdMismatch {
        /// The node's `id`.
        id: NodeId,
        /// The core's `raft.id`.
        raft: NodeId,
    },
    /// `raft.voters` is not empty (the voters given).
    #[error("raft.voters must stay empty ({0:?} given): the voters are derived from id and peers at start")]
    VotersGiven(Vec<NodeId>),
    /// `peers` names this node itself.
    #[error("peers must not contain this node's own id {0}")]
    SelfInPeers(NodeId),
    /// `tick` is zero.
    #[error("tick must not be zero")]
    ZeroTick,
    /// `max_frame_bytes` (given) is over `u32::MAX`.
    #[error("max_frame_bytes {0} does not fit the 4-byte frame length")]
    FrameTooLarge(usize),
    /// `max_command_bytes` is 0 or leaves no room for an AppendEntries' overheads in a frame.
    #[error("a command of {command} bytes cannot fit a frame of {frame} bytes")]
    CommandOverFrame {
        /// The largest command asked for (or derived).
        command: usize,
        /// The frame limit.
        frame: usize,
    },
    /// `raft.max_snapshot_chunk_bytes`, with room for its envelope, is over the frame limit.
    #[error("snapshot chunks of {chunk} bytes do not fit a frame of {frame} bytes")]
    ChunkOverFrame {
        /// The snapshot chunk size.
        chunk: usize,
        /// The frame limit.
        frame: usize,
    },
    /// `max_pending_write_bytes` (given) is 0 or over `u32::MAX`.
    #[error("max_pending_write_bytes {0} must be between 1 and 4 GiB - 1")]
    PendingWriteBudget(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftengine::{Entry, EntryPayload, LogIndex, Message, MessageBody, Term};

    fn config() -> NodeConfig {
        let peers = [(NodeId(2), "127.0.0.1:1".parse().expect("addr"))].into();
        NodeConfig::new(NodeId(1), 7, peers, "unused")
    }

    #[test]
    fn peers_set_after_new_are_the_voters() {
        let mut config = NodeConfig::new(NodeId(1), 7, BTreeMap::new(), "unused");
        config.peers = [2, 3]
            .map(|id| (NodeId(id), "127.0.0.1:1".parse().expect("addr")))
            .into();
        config.validate().expect("valid");
        assert_eq!(
            config.initial_voters(),
            vec![NodeId(1), NodeId(2), NodeId(3)]
        );
        config.join = true;
        assert!(config.initial_voters().is_empty());
    }

    #[test]
    fn a_second_copy_of_the_voters_or_the_id_is_refused() {
        let mut voters = config();
        voters.raft.voters = vec![NodeId(1)];
        assert_eq!(
            voters.validate(),
            Err(NodeConfigError::VotersGiven(vec![NodeId(1)]))
        );
        let mut id = config();
        id.id = NodeId(3);
        assert!(matches!(
            id.validate(),
            Err(NodeConfigError::IdMismatch { .. })
        ));
        let mut own = config();
        own.peers
            .insert(NodeId(1), "127.0.0.1:2".parse().expect("addr"));
        assert_eq!(own.validate(), Err(NodeConfigError::SelfInPeers(NodeId(1))));
    }

    #[test]
    fn the_command_limit_follows_the_frame_limit() {
        let limits = config().validate().expect("valid");
        let overheads = MESSAGE_ENVELOPE_BYTES + 64 * ENTRY_OVERHEAD_BYTES;
        assert_eq!(
            limits.max_command_bytes + overheads,
            limits.max_frame_bytes,
            "as large as a frame allows: {limits:?}"
        );
        assert_eq!(limits.max_bytes_per_message, 1 << 20, "the core's default");

        // A command limit over what a frame holds is refused; one below it is taken.
        let mut big = config();
        big.max_command_bytes = Some(64 << 20);
        assert!(matches!(
            big.validate(),
            Err(NodeConfigError::CommandOverFrame { .. })
        ));
        big.max_command_bytes = Some(20 << 20);
        assert_eq!(big.validate().expect("valid").max_command_bytes, 20 << 20);

        // A small frame lowers the bytes per AppendEntries to what fits.
        let mut small = config();
        small.max_frame_bytes = 512 << 10;
        small.raft.max_snapshot_chunk_bytes = 256 << 10;
        let limits = small.validate().expect("valid");
        assert_eq!(limits.max_command_bytes, (512 << 10) - overheads);
        assert_eq!(
            limits.max_bytes_per_message,
            ((512 << 10) - overheads) as u64
        );
    }

    #[test]
    fn the_pending_write_budget_must_fit_a_semaphore_count() {
        let mut none = config();
        none.max_pending_write_bytes = 0;
        assert_eq!(none.validate(), Err(NodeConfigError::PendingWriteBudget(0)));
        let mut huge = config();
        huge.max_pending_write_bytes = u32::MAX as usize + 1;
        assert!(huge.validate().is_err());
        huge.max_pending_write_bytes = u32::MAX as usize;
        assert_eq!(
            huge.validate().expect("valid").max_pending_write_bytes,
            u32::MAX as usize
        );
    }

    /// The envelope constants bound the real encoding, with every number at its largest.
    #[test]
    fn the_envelope_bounds_hold() {
        let entry = |len: usize| Entry {
            term: Term(u64::MAX),
            index: LogIndex(u64::MAX),
            payload: EntryPayload::Command(vec![7; len]),
        };
        for (count, len) in [(0, 0), (1, 0), (1, 1000), (64, 1000), (3, 300_000)] {
            let msg = Message {
                from: NodeId(u64::MAX),
                to: NodeId(u64::MAX),
                term: Term(u64::MAX),
                body: MessageBody::AppendEntries {
                    prev_log_index: LogIndex(u64::MAX),
                    prev_log_term: Term(u64::MAX),
                    entries: (0..count).map(|_| entry(len)).collect(),
                    leader_commit: LogIndex(u64::MAX),
                    read_round: u64::MAX,
                    transfer: u64::MAX,
                    repair_epoch: u64::MAX,
                },
            };
            let encoded = crate::transport::wire::encode(&msg).expect("encodes").len();
            assert!(
                encoded <= MESSAGE_ENVELOPE_BYTES + count * (len + ENTRY_OVERHEAD_BYTES),
                "{count} x {len}: {encoded}"
            );
        }
        let propose = Message {
            from: NodeId(u64::MAX),
            to: NodeId(u64::MAX),
            term: Term(u64::MAX),
            body: MessageBody::Propose {
                request: u64::MAX,
                command: vec![1; 5000],
            },
        };
        let encoded = crate::transport::wire::encode(&propose)
            .expect("encodes")
            .len();
        assert!(encoded <= MESSAGE_ENVELOPE_BYTES + 5000);
    }
}
