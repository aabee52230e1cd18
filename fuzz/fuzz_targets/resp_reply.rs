//! The RESP client-side reply decoder (`raftkv::resp::RespClientCodec`): the input is the byte
//! stream a server sent.
//!
//! Checks, beyond "no panic": the decoder never consumes more than it was given; a complete
//! reply stays complete and identical when the stream is cut right after it (no look-ahead);
//! every decoded reply re-encodes (`encode_reply`) to bytes that decode to the same reply.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use raftengine_fuzz as _;
use raftkv::resp::{encode_reply, RespClientCodec, RespLimits};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    for limits in [RespLimits::default(), raftengine_fuzz::tight_resp_limits()] {
        let mut codec = RespClientCodec::new(limits);
        let mut buf = BytesMut::from(data);
        let mut offset = 0;
        loop {
            let before = buf.len();
            let reply = match codec.decode_eof(&mut buf) {
                Ok(Some(reply)) => reply,
                Ok(None) | Err(_) => break,
            };
            let used = before - buf.len();
            assert!(used > 0 && used <= before, "consumed {used} of {before}");
            // The same bytes alone decode to the same reply.
            let mut alone = BytesMut::from(&data[offset..offset + used]);
            let again = RespClientCodec::new(limits)
                .decode(&mut alone)
                .expect("the reply's own bytes decode")
                .expect("the reply's own bytes are complete");
            assert_eq!(again, reply);
            assert!(alone.is_empty());
            offset += used;

            let mut encoded = BytesMut::new();
            encode_reply(&reply, &mut encoded);
            let again = RespClientCodec::new(RespLimits::default())
                .decode(&mut encoded)
                .expect("an encoded reply decodes")
                .expect("an encoded reply is complete");
            assert_eq!(again, reply, "reply round trip");
            assert!(encoded.is_empty());
        }
    }
});
