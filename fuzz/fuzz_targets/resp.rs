//! The RESP server-side request decoder (`raftkv::resp::RespCodec`), as a connection feeds it:
//! the input is the byte stream a client sent.
//!
//! Checks, beyond "no panic":
//! - the stream decodes to the same requests (and the same verdict) whether it arrives whole or
//!   in small pieces (the codec keeps a half-received request between reads);
//! - the codec never consumes more bytes than it was given, and its buffer stays within a bound
//!   of what was received (a header cannot make it reserve what it announces);
//! - every decoded request re-encodes (`encode_request`) to bytes that decode to the same words,
//!   and as a reply (an array of bulk strings) round-trips through the client codec;
//! - the same, under tight limits, so every limit's error path is reached.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use raftengine_fuzz as _;
use raftkv::resp::{encode_reply, encode_request, Reply, RespClientCodec, RespCodec, RespLimits};
use tokio_util::codec::Decoder;

/// What decoding a whole stream gave: the requests, and whether it ended in an error.
type Outcome = (Vec<Vec<Bytes>>, bool);

/// Slack on the buffer's capacity beyond what was received (the codec's own 64 KiB step ahead
/// of a bulk string, and `BytesMut`'s rounding up).
const CAPACITY_SLACK: usize = 1 << 20;

fn decode_stream(limits: RespLimits, data: &[u8], piece: usize) -> Outcome {
    let mut codec = RespCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    let mut received = 0;
    let mut consumed = 0;
    for chunk in data.chunks(piece.max(1)) {
        buf.extend_from_slice(chunk);
        received += chunk.len();
        loop {
            let before = buf.len();
            let decoded = codec.decode(&mut buf);
            assert!(buf.len() <= before, "the decoder grew its input");
            consumed += before - buf.len();
            assert!(consumed <= received, "consumed more than was received");
            assert!(
                buf.capacity() <= 2 * received + CAPACITY_SLACK,
                "buffer of {} bytes after receiving {received}",
                buf.capacity()
            );
            match decoded {
                Ok(Some(words)) => requests.push(words),
                Ok(None) => break,
                Err(_) => return (requests, true),
            }
        }
    }
    match codec.decode_eof(&mut buf) {
        Ok(Some(words)) => {
            requests.push(words);
            // A request at EOF can only be the last one the bytes held.
            assert!(matches!(codec.decode_eof(&mut buf), Ok(None) | Err(_)));
            (requests, false)
        }
        Ok(None) => (requests, false),
        Err(_) => (requests, true),
    }
}

fn check_round_trip(words: &[Bytes]) {
    assert!(!words.is_empty(), "an empty request was handed out");
    let mut encoded = BytesMut::new();
    encode_request(words, &mut encoded);
    let length = encoded.len();
    let mut codec = RespCodec::new(RespLimits::default());
    let again = codec
        .decode(&mut encoded)
        .expect("a re-encoded request decodes")
        .expect("a re-encoded request is complete");
    assert_eq!(again, words, "request round trip");
    assert!(encoded.is_empty(), "{length} bytes encoded, some left over");

    let reply = Reply::array(words.iter().cloned().map(Reply::bulk).collect());
    let mut encoded = BytesMut::new();
    encode_reply(&reply, &mut encoded);
    let mut client = RespClientCodec::new(RespLimits::default());
    let again = client
        .decode(&mut encoded)
        .expect("a reply decodes")
        .expect("a reply is complete");
    assert_eq!(again, reply, "reply round trip");
    assert!(encoded.is_empty());
}

fuzz_target!(|data: &[u8]| {
    for limits in [RespLimits::default(), raftengine_fuzz::tight_resp_limits()] {
        let whole = decode_stream(limits, data, data.len());
        // Pieces of 1 to 8 bytes, chosen by the input's length so each input is deterministic.
        let piece = 1 + data.len() % 8;
        let pieces = decode_stream(limits, data, piece);
        assert_eq!(whole, pieces, "whole vs pieces of {piece} bytes");
        for words in &whole.0 {
            check_round_trip(words);
        }
    }
});
