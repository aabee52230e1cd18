//! The peer handshake: the acceptor's `wire::check_hello` on an arbitrary first frame (framed
//! by the handshake codec, limited to `HANDSHAKE_MAX_FRAME_BYTES`), and the dialer's decode of
//! the `HelloReply`.
//!
//! Checks, beyond "no panic":
//! - `check_hello` agrees with a plain `wire::decode::<Hello>`: a payload it accepts decodes to
//!   a hello with this build's magic, version and cluster id and another node's id, and such a
//!   hello is accepted with the same node id and lane;
//! - an accepted hello re-encodes (`Hello::on`) to one accepted the same way;
//! - a `HelloReply` that decodes re-encodes to one that decodes the same.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use raftengine::NodeId;
use raftengine_fuzz as _;
use raftnet::transport::wire::{self, Hello, HelloReply, HANDSHAKE_MAX_FRAME_BYTES, MAGIC};
use tokio_util::codec::Decoder;

const CLUSTER: u64 = 7;
const OWN: NodeId = NodeId(1);

fn check_hello_payload(payload: &[u8]) {
    let checked = wire::check_hello(payload, CLUSTER, OWN);
    let plain = wire::decode::<Hello>(payload).ok();
    if let Ok((node, lane)) = checked {
        assert_ne!(node, OWN);
        let again = wire::encode(&Hello::on(CLUSTER, node, lane)).expect("a hello encodes");
        assert_eq!(wire::check_hello(&again, CLUSTER, OWN), Ok((node, lane)));
        // check_hello reads the header and the body in two steps; a whole decode agrees.
        let hello = plain.clone().expect("an accepted hello decodes whole");
        assert_eq!((hello.node_id, hello.lane), (node, lane));
    }
    if let Some(hello) = plain {
        let acceptable = hello.magic == MAGIC
            && hello.protocol_version == wire::PROTOCOL_VERSION
            && hello.cluster_id == CLUSTER
            && hello.node_id != OWN;
        assert_eq!(
            checked.is_ok(),
            acceptable,
            "{hello:?} judged {checked:?} by check_hello"
        );
    }
}

fn check_reply_payload(payload: &[u8]) {
    if let Ok(reply) = wire::decode::<HelloReply>(payload) {
        let encoded = wire::encode(&reply).expect("a reply encodes");
        assert_eq!(wire::decode::<HelloReply>(&encoded).ok(), Some(reply));
    }
}

fuzz_target!(|data: &[u8]| {
    check_hello_payload(data);
    check_reply_payload(data);
    // As the acceptor reads it: the first frame of the stream, at the handshake's limit.
    let mut codec = wire::codec(HANDSHAKE_MAX_FRAME_BYTES);
    let mut buf = BytesMut::from(data);
    if let Ok(Some(frame)) = codec.decode(&mut buf) {
        assert!(frame.len() <= HANDSHAKE_MAX_FRAME_BYTES);
        check_hello_payload(&frame);
        check_reply_payload(&frame);
    }
});
