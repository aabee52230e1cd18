use super::*;
use crate::resp::{encode_reply, RespCodec};
use bytes::BytesMut;
use raftengine::{LogIndex, StateMachine};
use tokio_util::codec::Decoder;

fn request(words: &[&str]) -> Vec<Bytes> {
    words
        .iter()
        .map(|word| Bytes::copy_from_slice(word.as_bytes()))
        .collect()
}

fn parse(words: &[&str]) -> Action {
    parse_request(&request(words))
}

fn immediate(words: &[&str]) -> Reply {
    match parse(words) {
        Action::Immediate(reply) => reply,
        other => panic!("{words:?} gave {other:?}"),
    }
}

fn err(text: &str) -> Reply {
    Reply::Error(text.to_owned())
}

fn bulk(text: &str) -> Reply {
    Reply::bulk(Bytes::copy_from_slice(text.as_bytes()))
}

fn info_fields() -> InfoFields {
    InfoFields {
        node_id: 2,
        role: "leader".to_owned(),
        term: 7,
        leader: Some(2),
        commit_index: 41,
        applied_index: 40,
    }
}

/// A single-node stand-in for the server: writes go through `StateMachine::apply` at increasing
/// indexes, reads are served from the store.
struct Harness {
    store: KvStore,
    next_index: u64,
}

impl Harness {
    fn new() -> Self {
        Harness {
            store: KvStore::new(),
            next_index: 1,
        }
    }

    fn execute(&mut self, words: &[&str]) -> Reply {
        match parse(words) {
            Action::Write(command, shape) => {
                let result = self
                    .store
                    .apply(LogIndex(self.next_index), &command.encode());
                self.next_index += 1;
                reply_for_apply(shape, &result)
            }
            Action::Read(op) => read_reply(&op, &self.store),
            Action::Info => info_reply(&info_fields()),
            Action::Immediate(reply) => reply,
            Action::Quit => Reply::ok(),
            Action::Auth(_) => Reply::Error("AUTH is the connection's business".into()),
        }
    }
}

#[test]
fn auth_and_hello_parse_into_credentials() {
    let auth = |user: Option<&str>, password: &str, hello: bool| {
        Action::Auth(AuthRequest {
            user: user.map(|u| Bytes::copy_from_slice(u.as_bytes())),
            password: Bytes::copy_from_slice(password.as_bytes()),
            hello,
        })
    };
    assert_eq!(parse(&["AUTH", "pw"]), auth(None, "pw", false));
    assert_eq!(
        parse(&["auth", "alice", "pw"]),
        auth(Some("alice"), "pw", false)
    );
    assert_eq!(
        parse(&["AUTH"]),
        Action::Immediate(Reply::Error(
            "ERR wrong number of arguments for 'auth' command".into()
        ))
    );
    assert_eq!(
        parse(&["HELLO", "2", "AUTH", "alice", "pw", "SETNAME", "x"]),
        auth(Some("alice"), "pw", true)
    );
    assert_eq!(parse(&["HELLO"]), Action::Immediate(hello_reply()));
    assert_eq!(parse(&["HELLO", "2"]), Action::Immediate(hello_reply()));
    assert_eq!(
        parse(&["HELLO", "3"]),
        Action::Immediate(Reply::Error("NOPROTO unsupported protocol version".into()))
    );
    assert!(matches!(
        parse(&["HELLO", "2", "AUTH", "alice"]),
        Action::Immediate(Reply::Error(e)) if e.starts_with("ERR Syntax error in HELLO")
    ));
}

#[test]
fn a_session_of_writes_and_reads_gives_redis_replies() {
    let null = Reply::null();
    let ok = Reply::ok();
    let int = Reply::Integer;
    let not_integer = err("ERR value is not an integer or out of range");
    let table: Vec<(&[&str], Reply)> = vec![
        (&["GET", "k"], null.clone()),
        (&["SET", "k", "v"], ok.clone()),
        (&["get", "k"], bulk("v")),
        (&["SET", "k", ""], ok.clone()),
        (&["GET", "k"], bulk("")),
        (&["EXISTS", "k", "k", "nope"], int(2)),
        (&["INCR", "n"], int(1)),
        (&["INCRBY", "n", "41"], int(42)),
        (&["DECR", "n"], int(41)),
        (&["DECRBY", "n", "-9"], int(50)),
        (&["GET", "n"], bulk("50")),
        (&["INCR", "k"], not_integer.clone()),
        (&["INCRBY", "n", "1.5"], not_integer.clone()),
        (&["SET", "max", "9223372036854775807"], ok.clone()),
        (
            &["INCR", "max"],
            err("ERR increment or decrement would overflow"),
        ),
        (
            &["DECRBY", "n", "-9223372036854775808"],
            err("ERR decrement would overflow"),
        ),
        (
            &["MGET", "k", "nope", "n"],
            Reply::array(vec![bulk(""), null.clone(), bulk("50")]),
        ),
        (&["CAS", "c", "", "1"], int(0)),
        (&["SETNX", "c", "1"], int(1)),
        (&["SETNX", "c", "2"], int(0)),
        (&["CAS", "c", "2", "3"], int(0)),
        (&["CAS", "c", "1", "3"], int(1)),
        (&["GET", "c"], bulk("3")),
        (&["SET", "c", "4", "NX"], null.clone()),
        (&["SET", "d", "4", "nx"], ok.clone()),
        (&["GET", "d"], bulk("4")),
        (&["DBSIZE"], int(5)),
        (&["DEL", "k", "k", "nope", "d"], int(2)),
        (&["DEL", "k"], int(0)),
        (&["EXISTS", "k"], int(0)),
        (&["DBSIZE"], int(3)),
        (&["PING"], Reply::Simple("PONG".to_owned())),
        (&["QUIT"], ok),
    ];
    let mut harness = Harness::new();
    for (words, expected) in table {
        assert_eq!(harness.execute(words), expected, "{words:?}");
    }
}

#[test]
fn writes_map_to_commands_and_shapes() {
    let cases: Vec<(&[&str], KvCommand, ReplyShape)> = vec![
        (
            &["SET", "k", "v"],
            KvCommand::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            ReplyShape::Ok,
        ),
        (
            &["SeT", "k", "v", "Nx"],
            KvCommand::Cas {
                key: b"k".to_vec(),
                expected: None,
                new: b"v".to_vec(),
            },
            ReplyShape::OkOrNull,
        ),
        (
            &["SETNX", "k", "v"],
            KvCommand::Cas {
                key: b"k".to_vec(),
                expected: None,
                new: b"v".to_vec(),
            },
            ReplyShape::Bool,
        ),
        (
            &["cas", "k", "old", "new"],
            KvCommand::Cas {
                key: b"k".to_vec(),
                expected: Some(b"old".to_vec()),
                new: b"new".to_vec(),
            },
            ReplyShape::Bool,
        ),
        (
            &["DEL", "a", "b"],
            KvCommand::Del {
                keys: vec![b"a".to_vec(), b"b".to_vec()],
            },
            ReplyShape::Integer,
        ),
        (
            &["INCR", "n"],
            KvCommand::Incr {
                key: b"n".to_vec(),
                by: 1,
            },
            ReplyShape::Integer,
        ),
        (
            &["DECR", "n"],
            KvCommand::Incr {
                key: b"n".to_vec(),
                by: -1,
            },
            ReplyShape::Integer,
        ),
        (
            &["INCRBY", "n", "-5"],
            KvCommand::Incr {
                key: b"n".to_vec(),
                by: -5,
            },
            ReplyShape::Integer,
        ),
        (
            &["DECRBY", "n", "5"],
            KvCommand::Incr {
                key: b"n".to_vec(),
                by: -5,
            },
            ReplyShape::Integer,
        ),
    ];
    for (words, command, shape) in cases {
        assert_eq!(parse(words), Action::Write(command, shape), "{words:?}");
    }
}

#[test]
fn reads_map_to_read_ops() {
    let keys = |list: &[&str]| request(list);
    assert_eq!(
        parse(&["GET", "k"]),
        Action::Read(ReadOp::Get(Bytes::from_static(b"k")))
    );
    assert_eq!(
        parse(&["exists", "a", "b"]),
        Action::Read(ReadOp::Exists(keys(&["a", "b"])))
    );
    assert_eq!(
        parse(&["MGET", "a"]),
        Action::Read(ReadOp::MGet(keys(&["a"])))
    );
    assert_eq!(parse(&["DBSIZE"]), Action::Read(ReadOp::DbSize));
}

#[test]
fn immediate_commands_answer_like_redis() {
    assert_eq!(immediate(&["ping"]), Reply::Simple("PONG".to_owned()));
    assert_eq!(immediate(&["PING", "hello"]), bulk("hello"));
    assert_eq!(immediate(&["ECHO", "a b"]), bulk("a b"));
    assert_eq!(immediate(&["COMMAND"]), Reply::array(vec![]));
    assert_eq!(immediate(&["COMMAND", "DOCS"]), Reply::array(vec![]));
    assert_eq!(immediate(&["command", "docs", "get"]), Reply::array(vec![]));
    assert_eq!(immediate(&["COMMAND", "LIST"]), Reply::array(vec![]));
    assert_eq!(immediate(&["COMMAND", "COUNT"]), Reply::Integer(0));
    assert_eq!(
        immediate(&["COMMAND", "INFO", "get", "set"]),
        Reply::array(vec![Reply::Array(None), Reply::Array(None)])
    );
    let pair = |k: &'static str, v: &'static str| vec![Reply::bulk(k), Reply::bulk(v)];
    assert_eq!(
        immediate(&["CONFIG", "GET", "save"]),
        Reply::array(pair("save", ""))
    );
    assert_eq!(
        immediate(&["CONFIG", "GET", "maxmemory"]),
        Reply::array(vec![])
    );
    assert_eq!(
        immediate(&["config", "get", "appendonly", "save"]),
        Reply::array([pair("appendonly", "no"), pair("save", "")].concat())
    );
    assert_eq!(immediate(&["SELECT", "0"]), Reply::ok());
    assert_eq!(
        immediate(&["SELECT", "1"]),
        err("ERR DB index is out of range")
    );
    assert_eq!(
        immediate(&["SELECT", "x"]),
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(immediate(&["CLIENT", "SETNAME", "bench"]), Reply::ok());
    assert_eq!(
        immediate(&["CLIENT", "SETINFO", "lib-name", "redis-py"]),
        Reply::ok()
    );
    assert_eq!(immediate(&["client", "getname"]), Reply::null());
    assert_eq!(parse(&["QUIT"]), Action::Quit);
    assert_eq!(parse(&["quit", "extra"]), Action::Quit);
    assert_eq!(parse(&["INFO"]), Action::Info);
    assert_eq!(parse(&["info", "replication"]), Action::Info);
}

#[test]
fn set_options_other_than_nx_are_syntax_errors() {
    for words in [
        &["SET", "k", "v", "EX", "10"][..],
        &["SET", "k", "v", "XX"],
        &["SET", "k", "v", "NX", "NX"],
        &["SET", "k", "v", "GET"],
    ] {
        assert_eq!(immediate(words), err("ERR syntax error"), "{words:?}");
    }
}

#[test]
fn wrong_arity_uses_redis_wording_for_every_command() {
    let cases: &[(&[&str], &str)] = &[
        (&["PING", "a", "b"], "ping"),
        (&["ECHO"], "echo"),
        (&["ECHO", "a", "b"], "echo"),
        (&["SET"], "set"),
        (&["set", "k"], "set"),
        (&["SETNX", "k"], "setnx"),
        (&["SETNX", "k", "v", "x"], "setnx"),
        (&["CAS", "k", "v"], "cas"),
        (&["CAS", "k", "a", "b", "c"], "cas"),
        (&["GET"], "get"),
        (&["GET", "a", "b"], "get"),
        (&["DEL"], "del"),
        (&["EXISTS"], "exists"),
        (&["MGET"], "mget"),
        (&["DBSIZE", "x"], "dbsize"),
        (&["INCR"], "incr"),
        (&["INCR", "a", "b"], "incr"),
        (&["DECR"], "decr"),
        (&["INCRBY", "a"], "incrby"),
        (&["DECRBY", "a", "1", "2"], "decrby"),
        (&["SELECT"], "select"),
        (&["CONFIG"], "config"),
        (&["CONFIG", "GET"], "config|get"),
        (&["CLIENT"], "client"),
        (&["CLIENT", "SETNAME"], "client|setname"),
        (&["CLIENT", "SETINFO", "lib-name"], "client|setinfo"),
        (&["CLIENT", "GETNAME", "x"], "client|getname"),
        (&["COMMAND", "COUNT", "x"], "command|count"),
    ];
    for (words, name) in cases {
        assert_eq!(
            immediate(words),
            err(&format!(
                "ERR wrong number of arguments for '{name}' command"
            )),
            "{words:?}"
        );
    }
}

#[test]
fn unknown_commands_and_subcommands_use_redis_wording() {
    assert_eq!(
        immediate(&["FLUSHALL"]),
        err("ERR unknown command 'FLUSHALL', with args beginning with: ")
    );
    assert_eq!(
        immediate(&["hset", "h", "f", "v"]),
        err("ERR unknown command 'hset', with args beginning with: 'h' 'f' 'v' ")
    );
    assert_eq!(
        immediate(&["CONFIG", "SET", "save", ""]),
        err("ERR unknown subcommand 'SET'. Try CONFIG HELP.")
    );
    assert_eq!(
        immediate(&["CLIENT", "KILL", "x"]),
        err("ERR unknown subcommand 'KILL'. Try CLIENT HELP.")
    );
    assert_eq!(
        immediate(&["COMMAND", "FOO"]),
        err("ERR unknown subcommand 'FOO'. Try COMMAND HELP.")
    );
    assert_eq!(
        parse_request(&[]),
        Action::Immediate(err("ERR empty command"))
    );
}

#[test]
fn unknown_command_quotes_only_a_prefix_of_long_arguments() {
    let long = "x".repeat(300);
    let Reply::Error(text) = immediate(&["NOPE", &long, "next"]) else {
        panic!("not an error")
    };
    let quoted = text
        .strip_prefix("ERR unknown command 'NOPE', with args beginning with: ")
        .unwrap();
    assert_eq!(quoted, format!("'{}' ", "x".repeat(128)));
}

#[test]
fn binary_garbage_never_breaks_the_error_reply_framing() {
    let words = vec![
        Bytes::from_static(b"\xff\r\nBAD"),
        Bytes::from_static(b"a\r\nb"),
    ];
    let Action::Immediate(reply) = parse_request(&words) else {
        panic!("not immediate")
    };
    let mut buf = BytesMut::new();
    encode_reply(&reply, &mut buf);
    assert_eq!(buf.iter().filter(|&&byte| byte == b'\n').count(), 1);
    assert!(buf.ends_with(b"\r\n"));
}

#[test]
fn reply_for_maps_each_shape_and_reports_mismatches() {
    assert_eq!(reply_for(ReplyShape::Ok, KvOutput::Ok), Reply::ok());
    assert_eq!(
        reply_for(ReplyShape::Integer, KvOutput::Integer(-3)),
        Reply::Integer(-3)
    );
    assert_eq!(
        reply_for(ReplyShape::Bool, KvOutput::Bool(true)),
        Reply::Integer(1)
    );
    assert_eq!(
        reply_for(ReplyShape::Bool, KvOutput::Bool(false)),
        Reply::Integer(0)
    );
    assert_eq!(
        reply_for(ReplyShape::OkOrNull, KvOutput::Bool(true)),
        Reply::ok()
    );
    assert_eq!(
        reply_for(ReplyShape::OkOrNull, KvOutput::Bool(false)),
        Reply::null()
    );
    assert!(matches!(
        reply_for(ReplyShape::Ok, KvOutput::Integer(1)),
        Reply::Error(text) if text.starts_with("ERR internal error")
    ));
}

#[test]
fn reply_for_apply_passes_rejections_through() {
    assert_eq!(
        reply_for_apply(
            ReplyShape::Integer,
            &Err(ApplyError::Rejected("ERR nope".to_owned()))
        ),
        err("ERR nope")
    );
    assert_eq!(
        reply_for_apply(ReplyShape::Ok, &Err(ApplyError::Fatal("disk".to_owned()))),
        err("ERR state machine failed: disk")
    );
    assert!(matches!(
        reply_for_apply(ReplyShape::Ok, &Ok(vec![99])),
        Reply::Error(text) if text.starts_with("ERR internal error")
    ));
}

#[test]
fn info_is_redis_style_text() {
    let Reply::Bulk(Some(text)) = info_reply(&info_fields()) else {
        panic!("not a bulk string")
    };
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.contains("# Replication\r\nrole:leader\r\n"), "{text}");
    for line in [
        "node_id:2",
        "raft_term:7",
        "raft_leader_id:2",
        "raft_commit_index:41",
        "raft_applied_index:40",
    ] {
        assert!(text.contains(&format!("{line}\r\n")), "{line} in {text}");
    }
    let follower = InfoFields {
        role: "follower\r\nevil:1".to_owned(),
        leader: None,
        ..info_fields()
    };
    let Reply::Bulk(Some(text)) = info_reply(&follower) else {
        panic!("not a bulk string")
    };
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.contains("raft_leader_id:none\r\n"));
    assert!(text.contains("role:follower  evil:1\r\n"));
}

#[test]
fn the_requests_redis_benchmark_sends_at_startup_are_answered() {
    // redis-benchmark asks for CONFIG GET save / appendonly, then runs PING_INLINE, SET, GET...
    let mut stream = BytesMut::new();
    crate::resp::encode_request(&["CONFIG", "GET", "save"], &mut stream);
    crate::resp::encode_request(&["CONFIG", "GET", "appendonly"], &mut stream);
    stream.extend_from_slice(b"PING\r\n");
    crate::resp::encode_request(&["SET", "key:__rand_int__", "xxx"], &mut stream);
    crate::resp::encode_request(&["GET", "key:__rand_int__"], &mut stream);
    let mut codec = RespCodec::default();
    let mut harness = Harness::new();
    let mut replies = Vec::new();
    while let Some(words) = codec.decode(&mut stream).unwrap() {
        let words: Vec<String> = words
            .iter()
            .map(|word| String::from_utf8(word.to_vec()).unwrap())
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        replies.push(harness.execute(&words));
    }
    assert_eq!(
        replies,
        vec![
            Reply::array(vec![bulk("save"), bulk("")]),
            Reply::array(vec![bulk("appendonly"), bulk("no")]),
            Reply::Simple("PONG".to_owned()),
            Reply::ok(),
            bulk("xxx"),
        ]
    );
}
