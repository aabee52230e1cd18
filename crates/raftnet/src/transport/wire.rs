//! The wire format of the transport, public so that other implementations (and tests) can speak it.
//!
//! Every frame is a 4-byte big-endian length followed by that many payload bytes ([`FrameCodec`];
//! the same bytes as `tokio_util::codec::LengthDelimitedCodec` with its defaults). Payloads are
//! postcard-encoded. With TLS configured, all of it travels inside a TLS 1.3 session.
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
    /// The Raft message carried.
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
pub fn codec(max_frame_bytes: usize) -> FrameCodec {
    FrameCodec {
        max_frame_bytes,
        announced: None,
    }
}

/// Most buffer space reserved ahead of a frame's arriving payload: a length header alone must not
/// make the node set aside its announced size (up to `max_frame_bytes`); the buffer grows as the
/// bytes come in.
pub const MAX_EAGER_RESERVE: usize = 64 * 1024;

/// Frames: a 4-byte big-endian payload length, then the payload. A payload longer than the
/// limit is an error (the stream cannot be resynchronised, so the connection ends). Unlike
/// tokio-util's length-delimited codec it never reserves more than [`MAX_EAGER_RESERVE`] ahead
/// of the bytes received, so a peer announcing a large frame and sending nothing holds no memory.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_bytes: usize,
    /// The length of the frame whose header was read and whose payload is awaited.
    announced: Option<usize>,
}

/// The length header's size.
const LENGTH_BYTES: usize = 4;

impl FrameCodec {
    /// Changes the payload limit (raised once a dialer's hello is accepted).
    pub fn set_max_frame_length(&mut self, max_frame_bytes: usize) {
        self.max_frame_bytes = max_frame_bytes;
    }

    fn too_long(&self, bytes: usize) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "frame of {bytes} bytes exceeds the limit of {} bytes",
                self.max_frame_bytes
            ),
        )
    }
}

impl tokio_util::codec::Decoder for FrameCodec {
    type Item = bytes::BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        let length = match self.announced {
            Some(length) => length,
            None => {
                let Some(header) = src.get(..LENGTH_BYTES) else {
                    return Ok(None);
                };
                // The slice is exactly LENGTH_BYTES long.
                let length = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
                if length > self.max_frame_bytes {
                    return Err(self.too_long(length));
                }
                bytes::Buf::advance(src, LENGTH_BYTES);
                self.announced = Some(length);
                length
            }
        };
        if src.len() < length {
            src.reserve((length - src.len()).min(MAX_EAGER_RESERVE));
            return Ok(None);
        }
        self.announced = None;
        Ok(Some(src.split_to(length)))
    }
}

impl tokio_util::codec::Encoder<Bytes> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, payload: Bytes, dst: &mut bytes::BytesMut) -> Result<(), Self::Error> {
        if payload.len() > self.max_frame_bytes {
            return Err(self.too_long(payload.len()));
        }
        dst.reserve(LENGTH_BYTES + payload.len());
        // At most `max_frame_bytes`, which `TransportConfig` bounds by `u32::MAX`.
        bytes::BufMut::put_u32(dst, payload.len() as u32);
        dst.extend_from_slice(&payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header announcing a large frame reserves little; the payload still decodes whole, in
    /// pieces; a frame over the limit is an error; what is encoded decodes back.
    #[test]
    fn frames_decode_in_pieces_without_reserving_the_announced_size() {
        use tokio_util::codec::{Decoder, Encoder};
        let mut codec = codec(64 * 1024 * 1024);
        let mut buffer = bytes::BytesMut::new();
        buffer.extend_from_slice(&(60u32 * 1024 * 1024).to_be_bytes());
        assert!(codec.decode(&mut buffer).unwrap().is_none());
        assert!(
            buffer.capacity() <= 2 * MAX_EAGER_RESERVE,
            "{}",
            buffer.capacity()
        );

        let mut codec = super::codec(1000);
        let mut wire = bytes::BytesMut::new();
        codec
            .encode(Bytes::from(vec![7u8; 600]), &mut wire)
            .unwrap();
        codec
            .encode(Bytes::from_static(b"second"), &mut wire)
            .unwrap();
        let mut received = bytes::BytesMut::new();
        let mut frames = Vec::new();
        for chunk in wire.chunks(7) {
            received.extend_from_slice(chunk);
            while let Some(frame) = codec.decode(&mut received).unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[0][..], &[7u8; 600][..]);
        assert_eq!(&frames[1][..], b"second");

        assert!(codec
            .encode(Bytes::from(vec![0u8; 1001]), &mut wire)
            .is_err());
        let mut oversized = bytes::BytesMut::from(&1001u32.to_be_bytes()[..]);
        assert!(codec.decode(&mut oversized).is_err());
    }

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
