//! The peer transport's message stream after the handshake: the length-delimited framing
//! (`raftnet::transport::wire::codec`, at the default frame limit) and each payload's
//! `wire::decode::<Frame>` (a postcard-encoded ordering number and `raftengine::Message`).
//!
//! Checks, beyond "no panic":
//! - framing never consumes more than it was given, and the frames it hands out, framed again,
//!   are exactly the bytes it consumed;
//! - a payload that decodes re-encodes (`encode_frame`) to a payload that decodes to the same
//!   frame, and that encoding is a fixed point (postcard accepts over-long varints, so the
//!   input itself need not be canonical);
//! - `Lane::of` and `approx_bytes` accept every decoded message.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use raftengine_fuzz as _;
use raftnet::transport::wire::{self, Frame, Lane};
use raftnet::transport::TransportConfig;
use tokio_util::codec::{Decoder, Encoder};

fn check_payload(payload: &[u8]) {
    let Ok(frame) = wire::decode::<Frame>(payload) else {
        return;
    };
    let encoded = wire::encode_frame(frame.order, &frame.message).expect("a frame encodes");
    assert!(encoded.len() <= payload.len(), "re-encoding grew the frame");
    let again: Frame = wire::decode(&encoded).expect("a re-encoded frame decodes");
    assert_eq!(again, frame, "frame round trip");
    let twice = wire::encode_frame(again.order, &again.message).expect("a frame encodes");
    assert_eq!(twice, encoded, "encoding is canonical");
    let _ = Lane::of(&frame.message);
    let _ = wire::approx_bytes(&frame.message);
}

fuzz_target!(|data: &[u8]| {
    // The input as one payload (what a frame holds), then as a stream of frames.
    check_payload(data);
    let mut codec = wire::codec(TransportConfig::DEFAULT_MAX_FRAME_BYTES);
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    loop {
        let before = buf.len();
        let frame = match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => break,
        };
        consumed += before - buf.len();
        assert!(consumed <= data.len());
        let mut framed = BytesMut::new();
        codec
            .encode(frame.clone().freeze(), &mut framed)
            .expect("a decoded frame fits the limit");
        assert_eq!(&framed[..], &data[consumed - framed.len()..consumed]);
        check_payload(&frame);
    }
});
