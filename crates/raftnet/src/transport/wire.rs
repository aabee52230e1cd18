//! The wire format of the transport, public so that other implementations (and tests) can speak it.
//!
//! Every frame is a 4-byte big-endian length followed by that many payload bytes
//! (`tokio_util::codec::LengthDelimitedCodec` with its defaults). Payloads are postcard-encoded.
//!
//! A connection goes one way: the dialer sends, the acceptor reads. Each node dials each peer
//! twice, once per [`Lane`].
//!
//! 1. The dialer sends one [`Hello`] frame, naming its lane.
//! 2. The acceptor answers one [`HelloReply`] frame: [`HelloReply::Welcome`], or
//!    [`HelloReply::Refused`] followed by closing the connection.
//! 3. After `Welcome`, every frame from the dialer is one [`Frame`]: an ordering number (see
//!    [`Frame::order`]) and a postcard-encoded [`raftengine::Message`]. The acceptor never sends
//!    anything else; the dialer treats any further frame as an error.
//!
//! Handshake frames are limited to [`HANDSHAKE_MAX_FRAME_BYTES`] so that an unauthenticated
//! connection cannot make the acceptor reserve a large buffer; message frames are limited to the
//! configured `max_frame_bytes`.

use bytes::Bytes;
use raftengine::{Message, MessageBody, NodeId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

/// The first 8 bytes of every [`Hello`] payload: rejects connections from something that is not
/// a raftnet transport (a port scanner, an HTTP client) before anything else is looked at.
pub const MAGIC: [u8; 8] = *b"RAFTENGN";

/// The protocol version spoken by this build; the acceptor requires an exact match.
pub const PROTOCOL_VERSION: u16 = 2;

/// The largest handshake frame (in either direction) a peer accepts.
pub const HANDSHAKE_MAX_FRAME_BYTES: usize = 4 * 1024;

/// The dialer's first frame: who it is and which cluster and protocol it belongs to.
///
/// The field order is part of the protocol: `magic` and `protocol_version` come first, so that a
/// future version with a different layout is still reported as "wrong version", not as garbage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// The dialer's [`PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// The cluster the dialer belongs to; must equal the acceptor's.
    pub cluster_id: u64,
    /// The dialer's node id; any id but the acceptor's own (a node joining the cluster, or one
    /// the leader is catching up, is not in the acceptor's configuration yet).
    pub node_id: NodeId,
    /// What this connection carries.
    pub lane: Lane,
}

impl Hello {
    /// A hello for this build's magic and protocol version, on the control lane.
    pub fn new(cluster_id: u64, node_id: NodeId) -> Hello {
        Hello::on(cluster_id, node_id, Lane::Control)
    }

    /// A hello for a connection of `lane`.
    pub fn on(cluster_id: u64, node_id: NodeId, lane: Lane) -> Hello {
        Hello {
            magic: MAGIC,
            protocol_version: PROTOCOL_VERSION,
            cluster_id,
            node_id,
            lane,
        }
    }
}

/// The two connections a node keeps to each peer, so that bulk data never delays the small
/// messages a cluster's liveness depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lane {
    /// Votes, pre-votes, every response, heartbeats (AppendEntries without entries),
    /// TimeoutNow, read-index and membership requests: small and latency-sensitive.
    Control,
    /// AppendEntries that carry entries, snapshot chunks, forwarded commands: up to a frame.
    Bulk,
}

impl Lane {
    /// The lane `msg` travels on.
    pub fn of(msg: &Message) -> Lane {
        match &msg.body {
            MessageBody::AppendEntries { entries, .. } if !entries.is_empty() => Lane::Bulk,
            MessageBody::InstallSnapshot { .. } | MessageBody::Propose { .. } => Lane::Bulk,
            _ => Lane::Control,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Lane::Control => 0,
            Lane::Bulk => 1,
        }
    }
}

/// A message frame after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// On the bulk lane, the message's number among the bulk messages sent to this peer
    /// (from 1). On the control lane, the number of the last bulk message sent to this peer
    /// before this one (0: none): the receiver can tell that a control message overtook bulk
    /// ones still on their way.
    pub order: u64,
    pub message: Message,
}

/// Encodes a message frame (see [`Frame`]).
pub fn encode_frame(order: u64, message: &Message) -> Result<Bytes, postcard::Error> {
    #[derive(Serialize)]
    struct FrameRef<'a> {
        order: u64,
        message: &'a Message,
    }
    encode(&FrameRef { order, message })
}

/// Roughly the bytes a message holds in memory (its payloads plus a fixed part): what the
/// queues count against their byte bounds.
pub fn approx_bytes(message: &Message) -> usize {
    const FIXED: usize = 64;
    let payload = match &message.body {
        MessageBody::AppendEntries { entries, .. } => entries
            .iter()
            .map(|e| match &e.payload {
                raftengine::EntryPayload::Command(c) => c.len() + 32,
                _ => 64,
            })
            .sum(),
        MessageBody::InstallSnapshot { data, .. } => data.len(),
        MessageBody::Propose { command, .. } => command.len(),
        _ => 0,
    };
    FIXED + payload
}

/// The version-independent start of a [`Hello`]; decoded first so that the version check does
/// not depend on the rest of the layout.
#[derive(Deserialize)]
struct HelloHeader {
    magic: [u8; 8],
    protocol_version: u16,
}

/// The rest of a [`Hello`] for [`PROTOCOL_VERSION`].
#[derive(Deserialize)]
struct HelloBody {
    cluster_id: u64,
    node_id: NodeId,
    lane: Lane,
}

/// The acceptor's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The handshake succeeded; message frames may follow.
    Welcome,
    /// The handshake failed; the acceptor closes the connection after sending this.
    Refused {
        /// Why, for the dialer's logs.
        reason: String,
    },
}

/// Why a [`Hello`] was not accepted (the text goes back to the dialer in
/// [`HelloReply::Refused`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The payload is not a postcard-encoded hello.
    #[error("malformed hello: {0}")]
    Malformed(String),
    /// The magic bytes are wrong: not a raftnet peer.
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 8]),
    /// The dialer speaks another protocol version.
    #[error("protocol version {theirs} not supported (this node speaks {PROTOCOL_VERSION})")]
    Version {
        /// The dialer's version.
        theirs: u16,
    },
    /// The dialer belongs to another cluster.
    #[error("cluster id {theirs} does not match this node's cluster id {ours}")]
    Cluster {
        /// The dialer's cluster id.
        theirs: u64,
        /// The acceptor's cluster id.
        ours: u64,
    },
    /// The dialer claims the acceptor's own node id: two nodes were given the same id.
    #[error("node id {0} is this node's own id (two nodes configured with the same id?)")]
    SameId(u64),
}

/// Decodes and checks a hello payload against this node's cluster id and node id (`own_id`).
/// Returns the dialer's node id and the connection's lane.
pub fn check_hello(
    payload: &[u8],
    cluster_id: u64,
    own_id: NodeId,
) -> Result<(NodeId, Lane), HelloError> {
    let (header, rest): (HelloHeader, _) =
        postcard::take_from_bytes(payload).map_err(|e| HelloError::Malformed(e.to_string()))?;
    if header.magic != MAGIC {
        return Err(HelloError::BadMagic(header.magic));
    }
    if header.protocol_version != PROTOCOL_VERSION {
        return Err(HelloError::Version {
            theirs: header.protocol_version,
        });
    }
    let body: HelloBody = decode(rest).map_err(|e| HelloError::Malformed(e.to_string()))?;
    if body.cluster_id != cluster_id {
        return Err(HelloError::Cluster {
            theirs: body.cluster_id,
            ours: cluster_id,
        });
    }
    if body.node_id == own_id {
        return Err(HelloError::SameId(body.node_id.0));
    }
    Ok((body.node_id, body.lane))
}

/// Why a frame payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// postcard rejected the bytes.
    #[error("postcard: {0}")]
    Postcard(#[from] postcard::Error),
    /// The value decoded but bytes were left over: the frame is not what it claims to be.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

/// Encodes one frame payload.
pub fn encode<T: Serialize>(value: &T) -> Result<Bytes, postcard::Error> {
    postcard::to_stdvec(value).map(Bytes::from)
}

/// Decodes one frame payload, requiring that the whole payload is used (strict: a frame with
/// garbage after a valid value is malformed).
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(payload)?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(value)
}

/// The frame codec with a given payload limit.
pub fn codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip_and_checks() {
        let payload = encode(&Hello::new(7, NodeId(2))).unwrap();
        assert_eq!(&payload[..8], b"RAFTENGN");
        assert_eq!(
            check_hello(&payload, 7, NodeId(1)),
            Ok((NodeId(2), Lane::Control))
        );
        assert_eq!(
            check_hello(&payload, 8, NodeId(1)),
            Err(HelloError::Cluster { theirs: 7, ours: 8 })
        );
        assert_eq!(
            check_hello(&payload, 7, NodeId(2)),
            Err(HelloError::SameId(2))
        );
        let mut v = Hello::new(7, NodeId(2));
        v.protocol_version = 99;
        let payload = encode(&v).unwrap();
        assert_eq!(
            check_hello(&payload, 7, NodeId(1)),
            Err(HelloError::Version { theirs: 99 })
        );
        assert!(matches!(
            check_hello(b"GET / HTTP/1.1\r\n", 7, NodeId(1)),
            Err(HelloError::BadMagic(_))
        ));
        assert!(matches!(
            check_hello(b"RAF", 7, NodeId(1)),
            Err(HelloError::Malformed(_))
        ));
    }

    #[test]
    fn decode_is_strict() {
        let mut payload = encode(&HelloReply::Welcome).unwrap().to_vec();
        assert_eq!(decode::<HelloReply>(&payload).unwrap(), HelloReply::Welcome);
        payload.push(0);
        assert!(matches!(
            decode::<HelloReply>(&payload),
            Err(DecodeError::Trailing(1))
        ));
    }
}
