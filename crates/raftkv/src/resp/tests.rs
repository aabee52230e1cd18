use super::*;
use proptest::prelude::*;

fn words(list: &[&str]) -> Vec<Bytes> {
    list.iter()
        .map(|word| Bytes::copy_from_slice(word.as_bytes()))
        .collect()
}

/// Decodes every complete request in `buf`, stopping at the first error.
fn decode_all(codec: &mut RespCodec, buf: &mut BytesMut) -> Result<Vec<Vec<Bytes>>, RespError> {
    let mut requests = Vec::new();
    while let Some(request) = codec.decode(buf)? {
        requests.push(request);
    }
    Ok(requests)
}

fn decode_one(input: &[u8]) -> Result<Vec<Vec<Bytes>>, RespError> {
    let mut codec = RespCodec::default();
    let mut buf = BytesMut::from(input);
    let mut requests = decode_all(&mut codec, &mut buf)?;
    if let Some(last) = codec.decode_eof(&mut buf)? {
        requests.push(last);
    }
    Ok(requests)
}

fn encoded_reply(reply: &Reply) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_reply(reply, &mut buf);
    buf.to_vec()
}

fn small_limits() -> RespLimits {
    RespLimits {
        max_bulk_len: 8,
        max_array_len: 4,
        max_inline_len: 16,
        max_request_len: 64,
        max_reply_depth: 2,
    }
}

#[test]
fn request_round_trips_through_encode_request() {
    let cases: Vec<Vec<Bytes>> = vec![
        words(&["PING"]),
        words(&["SET", "key", "value"]),
        words(&["SET", "", ""]),
        vec![
            Bytes::from_static(b"SET"),
            Bytes::from_static(b"bin\r\n\0\xff"),
            Bytes::from(vec![b'x'; 1000]),
        ],
    ];
    for request in cases {
        let mut buf = BytesMut::new();
        encode_request(&request, &mut buf);
        let mut codec = RespCodec::default();
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(request));
        assert!(buf.is_empty());
    }
}

#[test]
fn decodes_the_exact_bytes_redis_cli_sends() {
    let requests = decode_one(b"*3\r\n$3\r\nSET\r\n$3\r\nfoo\r\n$3\r\nbar\r\n").unwrap();
    assert_eq!(requests, vec![words(&["SET", "foo", "bar"])]);
}

#[test]
fn reply_encoding_matches_resp2() {
    assert_eq!(encoded_reply(&Reply::ok()), b"+OK\r\n");
    assert_eq!(encoded_reply(&Reply::Error("ERR x".into())), b"-ERR x\r\n");
    assert_eq!(encoded_reply(&Reply::Integer(0)), b":0\r\n");
    assert_eq!(encoded_reply(&Reply::Integer(-42)), b":-42\r\n");
    assert_eq!(
        encoded_reply(&Reply::Integer(i64::MIN)),
        b":-9223372036854775808\r\n"
    );
    assert_eq!(
        encoded_reply(&Reply::Integer(i64::MAX)),
        b":9223372036854775807\r\n"
    );
    assert_eq!(encoded_reply(&Reply::bulk("hi")), b"$2\r\nhi\r\n");
    assert_eq!(encoded_reply(&Reply::bulk("")), b"$0\r\n\r\n");
    assert_eq!(encoded_reply(&Reply::null()), b"$-1\r\n");
    assert_eq!(encoded_reply(&Reply::Array(None)), b"*-1\r\n");
    assert_eq!(encoded_reply(&Reply::array(vec![])), b"*0\r\n");
    assert_eq!(
        encoded_reply(&Reply::array(vec![Reply::Integer(1), Reply::null()])),
        b"*2\r\n:1\r\n$-1\r\n"
    );
}

#[test]
fn line_breaks_in_simple_and_error_text_cannot_break_framing() {
    assert_eq!(encoded_reply(&Reply::Simple("a\r\nb".into())), b"+a  b\r\n");
    assert_eq!(
        encoded_reply(&Reply::Error("ERR a\nb".into())),
        b"-ERR a b\r\n"
    );
}

#[test]
fn replies_round_trip_through_the_client_codec() {
    let replies = vec![
        Reply::ok(),
        Reply::Error("ERR wrong".into()),
        Reply::Integer(i64::MIN),
        Reply::Integer(7),
        Reply::bulk(Bytes::from_static(b"bin\r\n\0")),
        Reply::bulk(""),
        Reply::null(),
        Reply::Array(None),
        Reply::array(vec![]),
        Reply::array(vec![
            Reply::bulk("a"),
            Reply::null(),
            Reply::array(vec![Reply::Integer(1), Reply::Simple("x".into())]),
        ]),
    ];
    let mut buf = BytesMut::new();
    let mut server = RespCodec::default();
    for reply in &replies {
        server.encode(reply, &mut buf).unwrap();
    }
    let mut client = RespClientCodec::default();
    let mut decoded = Vec::new();
    while let Some(reply) = client.decode(&mut buf).unwrap() {
        decoded.push(reply);
    }
    assert_eq!(decoded, replies);
    assert!(buf.is_empty());
}

#[test]
fn client_codec_waits_for_partial_replies_at_every_split() {
    let reply = Reply::array(vec![Reply::bulk("hello"), Reply::Integer(-3), Reply::ok()]);
    let bytes = encoded_reply(&reply);
    for split in 0..bytes.len() {
        let mut client = RespClientCodec::default();
        let mut buf = BytesMut::from(&bytes[..split]);
        assert_eq!(client.decode(&mut buf).unwrap(), None, "split at {split}");
        buf.extend_from_slice(&bytes[split..]);
        assert_eq!(client.decode(&mut buf).unwrap(), Some(reply.clone()));
    }
}

#[test]
fn client_codec_rejects_malformed_and_over_limit_replies() {
    let mut client = RespClientCodec::new(small_limits());
    let mut check = |input: &[u8], matches: fn(&RespError) -> bool| {
        let err = client.decode(&mut BytesMut::from(input)).unwrap_err();
        assert!(
            matches(&err),
            "{:?} gave {err:?}",
            input.escape_ascii().to_string()
        );
    };
    check(b"?\r\n", |e| matches!(e, RespError::UnknownReplyType(b'?')));
    check(b":x\r\n", |e| matches!(e, RespError::InvalidInteger));
    check(b"$-2\r\n", |e| matches!(e, RespError::NegativeLength(-2)));
    check(b"$9\r\n", |e| {
        matches!(e, RespError::BulkTooLong { len: 9, .. })
    });
    check(b"*5\r\n", |e| {
        matches!(e, RespError::ArrayTooLong { len: 5, .. })
    });
    check(b"*1\r\n*1\r\n*1\r\n:1\r\n", |e| {
        matches!(e, RespError::ReplyTooDeep { max: 2 })
    });
    check(b"+OK\rX", |e| matches!(e, RespError::MissingCrlf));
    check(b"$1\r\nab\r\n", |e| matches!(e, RespError::MissingCrlf));
    check(b"+0123456789abcdefgh", |e| {
        matches!(e, RespError::InlineTooLong { .. })
    });
}

#[test]
fn client_codec_reports_truncation_at_eof() {
    let mut client = RespClientCodec::default();
    let mut buf = BytesMut::from(&b"$5\r\nab"[..]);
    assert!(matches!(
        client.decode_eof(&mut buf),
        Err(RespError::UnexpectedEof)
    ));
}

/// A stream mixing every request shape, and the words each decodes to.
fn pipelined_stream() -> (Vec<u8>, Vec<Vec<Bytes>>) {
    let mut stream = BytesMut::new();
    let mut expected = Vec::new();
    for request in [
        words(&["SET", "key:1", "value"]),
        words(&["GET", "key:1"]),
        words(&["SET", "", ""]),
    ] {
        encode_request(&request, &mut stream);
        expected.push(request);
    }
    stream.extend_from_slice(b"PING\r\n");
    expected.push(words(&["PING"]));
    stream.extend_from_slice(b"*0\r\n*-1\r\n\r\n   \r\n");
    stream.extend_from_slice(b"ECHO \"a b\"\n");
    expected.push(words(&["ECHO", "a b"]));
    encode_request(&[&b"MGET"[..], b"a", b"b\r\n"], &mut stream);
    expected.push(words(&["MGET", "a", "b\r\n"]));
    (stream.to_vec(), expected)
}

#[test]
fn pipelined_requests_in_one_read_all_decode() {
    let (stream, expected) = pipelined_stream();
    assert_eq!(decode_one(&stream).unwrap(), expected);
}

#[test]
fn pipelined_requests_split_at_every_byte_boundary_decode_the_same() {
    let (stream, expected) = pipelined_stream();
    for split in 0..=stream.len() {
        let mut codec = RespCodec::default();
        let mut buf = BytesMut::from(&stream[..split]);
        let mut decoded = decode_all(&mut codec, &mut buf).unwrap();
        buf.extend_from_slice(&stream[split..]);
        decoded.extend(decode_all(&mut codec, &mut buf).unwrap());
        assert_eq!(decoded, expected, "split at {split}");
        assert!(buf.is_empty());
    }
}

#[test]
fn pipelined_requests_fed_one_byte_at_a_time_decode_the_same() {
    let (stream, expected) = pipelined_stream();
    let mut codec = RespCodec::default();
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for &byte in &stream {
        buf.put_u8(byte);
        decoded.extend(decode_all(&mut codec, &mut buf).unwrap());
    }
    assert_eq!(decoded, expected);
}

#[test]
fn inline_commands_split_like_redis() {
    let cases: &[(&[u8], Vec<Bytes>)] = &[
        (b"PING\r\n", words(&["PING"])),
        (b"  set  k   v  \r\n", words(&["set", "k", "v"])),
        (b"SET k \"a b\"\r\n", words(&["SET", "k", "a b"])),
        (b"SET k \"\"\r\n", words(&["SET", "k", ""])),
        (b"SET k 'it\\'s'\r\n", words(&["SET", "k", "it's"])),
        (b"SET k 'a\\nb'\r\n", words(&["SET", "k", "a\\nb"])),
        (b"SET k a\"b c\"\r\n", words(&["SET", "k", "ab c"])),
        (b"\tGET\tk\n", words(&["GET", "k"])),
        (
            b"SET k \"\\x41\\n\\r\\t\\\\\\\"\\q\\xZZ\"\r\n",
            words(&["SET", "k", "A\n\r\t\\\"qxZZ"]),
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(
            decode_one(input).unwrap(),
            vec![expected.clone()],
            "{}",
            input.escape_ascii()
        );
    }
}

#[test]
fn inline_non_utf8_and_binary_bytes_pass_through() {
    assert_eq!(
        decode_one(b"SET \xff \"\\x00\"\r\n").unwrap(),
        vec![vec![
            Bytes::from_static(b"SET"),
            Bytes::from_static(b"\xff"),
            Bytes::from_static(b"\0"),
        ]]
    );
}

#[test]
fn empty_requests_are_skipped() {
    assert_eq!(
        decode_one(b"*0\r\n*-1\r\n\r\n \t \r\n\nPING\r\n").unwrap(),
        vec![words(&["PING"])]
    );
    assert_eq!(decode_one(b"*0\r\n\r\n").unwrap(), Vec::<Vec<Bytes>>::new());
}

fn decode_err(limits: RespLimits, input: &[u8]) -> RespError {
    let mut codec = RespCodec::new(limits);
    let mut buf = BytesMut::from(input);
    match decode_all(&mut codec, &mut buf) {
        Err(err) => err,
        Ok(requests) => panic!(
            "{} decoded to {requests:?} without an error",
            input.escape_ascii()
        ),
    }
}

#[test]
fn every_malformed_request_shape_is_a_typed_error() {
    type Check = fn(&RespError) -> bool;
    let cases: &[(&[u8], Check)] = &[
        (b"*x\r\n", |e| matches!(e, RespError::InvalidArrayLength)),
        (b"*\r\n", |e| matches!(e, RespError::InvalidArrayLength)),
        (b"*01\r\n", |e| matches!(e, RespError::InvalidArrayLength)),
        (b"*-0\r\n", |e| matches!(e, RespError::InvalidArrayLength)),
        (b"*1-\r\n", |e| matches!(e, RespError::InvalidArrayLength)),
        (b"*+1\r\n", |e| matches!(e, RespError::InvalidArrayLength)),
        (b"*99999999999999999999999\r\n", |e| {
            matches!(e, RespError::InvalidArrayLength)
        }),
        (b"*-2\r\n", |e| matches!(e, RespError::NegativeLength(-2))),
        (b"*1\r\n:5\r\n", |e| {
            matches!(
                e,
                RespError::UnexpectedType {
                    expected: b'$',
                    found: b':'
                }
            )
        }),
        (b"*2\r\n$1\r\na\r\nPING\r\n", |e| {
            matches!(e, RespError::UnexpectedType { found: b'P', .. })
        }),
        (b"*1\r\n$x\r\n", |e| {
            matches!(e, RespError::InvalidBulkLength)
        }),
        (b"*1\r\n$\r\n", |e| {
            matches!(e, RespError::InvalidBulkLength)
        }),
        (b"*1\r\n$1.5\r\n", |e| {
            matches!(e, RespError::InvalidBulkLength)
        }),
        (b"*1\r\n$-2\r\n", |e| {
            matches!(e, RespError::NegativeLength(-2))
        }),
        (b"*1\r\n$-1\r\n", |e| {
            matches!(e, RespError::NullBulkInRequest)
        }),
        (b"*1\rX", |e| matches!(e, RespError::MissingCrlf)),
        (b"*1\n", |e| matches!(e, RespError::MissingCrlf)),
        (b"*1\r\n$3\rX", |e| matches!(e, RespError::MissingCrlf)),
        (b"*1\r\n$3\r\nabcXY", |e| {
            matches!(e, RespError::MissingCrlf)
        }),
        (b"*1\r\n$3\r\nabc\rX", |e| {
            matches!(e, RespError::MissingCrlf)
        }),
        (b"*1\r\n$3\r\nabc\n\r", |e| {
            matches!(e, RespError::MissingCrlf)
        }),
        // The missing terminator is caught before the rest of the stream arrives.
        (b"*1\r\n$3\r\nabcd", |e| matches!(e, RespError::MissingCrlf)),
        (b"SET k \"abc\r\n", |e| {
            matches!(e, RespError::UnbalancedQuotes)
        }),
        (b"SET k 'abc\r\n", |e| {
            matches!(e, RespError::UnbalancedQuotes)
        }),
        (b"SET k \"a\"b\r\n", |e| {
            matches!(e, RespError::UnbalancedQuotes)
        }),
        (b"SET k 'a'b\r\n", |e| {
            matches!(e, RespError::UnbalancedQuotes)
        }),
        (b"SET k \"abc\\\r\n", |e| {
            matches!(e, RespError::UnbalancedQuotes)
        }),
    ];
    for (input, check) in cases {
        let err = decode_err(RespLimits::default(), input);
        assert!(check(&err), "{} gave {err:?}", input.escape_ascii());
        // Every error has a reply the server can send before closing.
        let Reply::Error(text) = err.to_reply() else {
            panic!("not an error reply")
        };
        assert!(text.starts_with("ERR Protocol error: "), "{text}");
    }
}

#[test]
fn errors_reset_the_codec_so_it_never_panics_afterwards() {
    let mut codec = RespCodec::default();
    let mut buf = BytesMut::from(&b"*2\r\n$1\r\na\r\n$x\r\n"[..]);
    assert!(decode_all(&mut codec, &mut buf).is_err());
    let mut fresh = BytesMut::from(&b"PING\r\n"[..]);
    assert_eq!(
        decode_all(&mut codec, &mut fresh).unwrap(),
        vec![words(&["PING"])]
    );
}

#[test]
fn truncated_requests_at_eof_are_errors() {
    for input in [
        &b"*2\r\n$3\r\nGET\r\n"[..],
        b"*1\r\n$3\r\nGE",
        b"*1\r",
        b"PING",
    ] {
        let mut codec = RespCodec::default();
        let mut buf = BytesMut::from(input);
        assert!(decode_all(&mut codec, &mut buf).unwrap().is_empty());
        assert!(
            matches!(codec.decode_eof(&mut buf), Err(RespError::UnexpectedEof)),
            "{}",
            input.escape_ascii()
        );
    }
}

#[test]
fn limits_admit_requests_at_the_limit() {
    let mut codec = RespCodec::new(small_limits());
    let mut buf = BytesMut::new();
    encode_request(&[&b"12345678"[..], b"a", b"b", b"c"], &mut buf);
    buf.extend_from_slice(b"0123456789abcdef\r\n");
    assert_eq!(
        decode_all(&mut codec, &mut buf).unwrap(),
        vec![
            words(&["12345678", "a", "b", "c"]),
            words(&["0123456789abcdef"])
        ]
    );
}

#[test]
fn limits_are_enforced_from_the_header_alone() {
    let limits = small_limits();
    // Only the headers are present: the data they announce is never waited for.
    assert!(matches!(
        decode_err(limits, b"*1\r\n$9\r\n"),
        RespError::BulkTooLong { len: 9, max: 8 }
    ));
    assert!(matches!(
        decode_err(limits, b"*5\r\n"),
        RespError::ArrayTooLong { len: 5, max: 4 }
    ));
    assert!(matches!(
        decode_err(RespLimits::default(), b"*1\r\n$9223372036854775807\r\n"),
        RespError::BulkTooLong { .. }
    ));
    assert!(matches!(
        decode_err(RespLimits::default(), b"*9223372036854775807\r\n"),
        RespError::ArrayTooLong { .. }
    ));
    // 4 + (4 + 8 + 2) * 4 = 60 bytes fits in 64; a longer header pushes the request over.
    assert!(matches!(
        decode_err(
            RespLimits {
                max_request_len: 59,
                ..limits
            },
            b"*4\r\n$8\r\n12345678\r\n$8\r\n12345678\r\n$8\r\n12345678\r\n$8\r\n"
        ),
        RespError::RequestTooLong { max: 59 }
    ));
}

/// Found by the `resp` fuzz target: a 20-byte header announcing a 64 MiB bulk string made the
/// codec reserve 64 MiB at once, before any of the data arrived.
#[test]
fn a_bulk_header_alone_reserves_little_memory() {
    let mut codec = RespCodec::default();
    let mut buf = BytesMut::from(&b"*1\r\n$67108864\r\n"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(
        buf.capacity() <= 2 * MAX_EAGER_RESERVE,
        "reserved {} bytes for a header",
        buf.capacity()
    );
    // The value still arrives whole, whatever the pieces.
    let value = vec![b'v'; 300_000];
    for piece in value.chunks(70_000) {
        buf.extend_from_slice(piece);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }
    let mut whole = BytesMut::new();
    encode_request(&[&b"SET"[..], b"k", &value], &mut whole);
    let mut codec = RespCodec::default();
    let mut buf = BytesMut::new();
    for piece in whole.chunks(1000) {
        buf.extend_from_slice(piece);
        if let Some(words) = codec.decode(&mut buf).unwrap() {
            assert_eq!(words[2].len(), value.len());
            return;
        }
    }
    panic!("the request never completed");
}

#[test]
fn an_inline_line_without_a_newline_fails_once_it_passes_the_limit() {
    let limits = small_limits();
    let mut codec = RespCodec::new(limits);
    // 17 bytes, no newline yet: could still be a 16-byte line followed by "\r\n".
    let mut buf = BytesMut::from(&b"0123456789abcdefg"[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(RespError::InlineTooLong { max: 16 })
    ));
    let mut buf = BytesMut::from(&b"0123456789abcdef\r"[..]);
    assert_eq!(RespCodec::new(limits).decode(&mut buf).unwrap(), None);
    assert!(matches!(
        decode_err(limits, b"0123456789abcdefg\n"),
        RespError::InlineTooLong { max: 16 }
    ));
}

#[test]
fn error_messages_follow_redis_wording() {
    assert_eq!(
        RespError::UnexpectedType {
            expected: b'$',
            found: b'\n'
        }
        .to_string(),
        "Protocol error: expected '$', got '\\n'"
    );
    assert_eq!(
        RespError::InvalidBulkLength.to_reply(),
        Reply::Error("ERR Protocol error: invalid bulk length".into())
    );
}

fn request_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 1..6)
}

#[test]
fn partial_requests_are_charged_to_the_shared_budget_and_given_back() {
    let budget = BufferBudget::new(100_000);
    let mut first = RespCodec::with_budget(RespLimits::default(), budget.clone());
    let mut second = RespCodec::with_budget(RespLimits::default(), budget.clone());
    // A complete request takes nothing, nor does a small one cut between two reads.
    let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\n"[..]);
    assert_eq!(first.decode(&mut buf).unwrap(), Some(words(&["PING"])));
    assert_eq!(first.decode(&mut buf).unwrap(), None);
    assert_eq!(budget.in_use(), 0);
    buf.extend_from_slice(b"k\r\n");
    assert_eq!(first.decode(&mut buf).unwrap(), Some(words(&["GET", "k"])));
    // A SET whose value is announced but not sent: the whole request is charged at its header,
    // before any room is made for the value.
    let mut stalled = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$60000\r\nab"[..]);
    assert_eq!(first.decode(&mut stalled).unwrap(), None);
    let held = first.charged();
    assert!((60_000..60_100).contains(&held), "{held}");
    assert_eq!(budget.in_use(), held);
    // The second connection's request does not fit beside it.
    let mut refused = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$60000\r\n"[..]);
    assert!(matches!(
        second.decode(&mut refused),
        Err(RespError::BudgetExhausted { limit: 100_000 })
    ));
    assert_eq!(second.charged(), 0);
    assert_eq!(budget.in_use(), held);
    // Completing the request gives its share back; so does dropping a codec mid-request.
    stalled.extend_from_slice(&[b'x'; 59_998]);
    stalled.extend_from_slice(b"\r\n");
    assert_eq!(
        first.decode(&mut stalled).unwrap().map(|w| w.len()),
        Some(3)
    );
    assert_eq!(budget.in_use(), 0);
    let mut again = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$50000\r\n"[..]);
    assert_eq!(second.decode(&mut again).unwrap(), None);
    assert!(budget.in_use() > 50_000);
    drop(second);
    assert_eq!(budget.in_use(), 0);
}

#[test]
fn encoded_len_is_the_length_encode_reply_writes() {
    let replies = [
        Reply::ok(),
        Reply::Error("ERR x".into()),
        Reply::Integer(0),
        Reply::Integer(-1234567),
        Reply::Integer(i64::MIN),
        Reply::null(),
        Reply::Array(None),
        Reply::bulk(vec![7u8; 12345]),
        Reply::array(vec![Reply::bulk("a"), Reply::null(), Reply::Integer(10)]),
    ];
    for reply in replies {
        let mut out = BytesMut::new();
        encode_reply(&reply, &mut out);
        assert_eq!(encoded_len(&reply), out.len(), "{reply:?}");
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_server_codec(
        input in prop::collection::vec(any::<u8>(), 0..256),
        split in 0usize..256,
    ) {
        let mut codec = RespCodec::new(small_limits());
        let split = split.min(input.len());
        let mut buf = BytesMut::from(&input[..split]);
        if decode_all(&mut codec, &mut buf).is_ok() {
            buf.extend_from_slice(&input[split..]);
            if decode_all(&mut codec, &mut buf).is_ok() {
                let _ = codec.decode_eof(&mut buf);
            }
        }
    }

    #[test]
    fn random_resp_like_bytes_never_panic_the_server_codec(
        input in prop::collection::vec(
            prop::sample::select(&b"*$:+-\r\n0123456789 \"'\\xaAbB"[..]), 0..256),
    ) {
        let mut buf = BytesMut::from(&input[..]);
        let mut codec = RespCodec::new(small_limits());
        if decode_all(&mut codec, &mut buf).is_ok() {
            let _ = codec.decode_eof(&mut buf);
        }
    }

    #[test]
    fn random_bytes_never_panic_the_client_codec(
        input in prop::collection::vec(
            prop_oneof![any::<u8>(), prop::sample::select(&b"*$:+-\r\n0123456789"[..])], 0..256),
    ) {
        let mut client = RespClientCodec::new(small_limits());
        let mut buf = BytesMut::from(&input[..]);
        while let Ok(Some(_)) = client.decode(&mut buf) {}
    }

    #[test]
    fn encoded_requests_decode_to_themselves_wherever_the_stream_is_split(
        requests in prop::collection::vec(request_strategy(), 1..5),
        splits in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let mut stream = BytesMut::new();
        for request in &requests {
            encode_request(request, &mut stream);
        }
        let mut cuts: Vec<usize> = splits.iter().map(|index| index.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(stream.len());
        let mut codec = RespCodec::default();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut start = 0;
        for cut in cuts {
            buf.extend_from_slice(&stream[start..cut]);
            start = cut;
            decoded.extend(decode_all(&mut codec, &mut buf).unwrap());
        }
        let expected: Vec<Vec<Bytes>> = requests
            .into_iter()
            .map(|request| request.into_iter().map(Bytes::from).collect())
            .collect();
        prop_assert_eq!(decoded, expected);
    }
}
