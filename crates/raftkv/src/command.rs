//! From a RESP request to what the server must do, and from results back to replies.
//!
//! [`parse_request`] classifies a request's words (command names are case-insensitive) into an
//! [`Action`]. It never fails: a bad request becomes [`Action::Immediate`] with the error reply
//! Redis would send, so a client mistake never costs the connection.
//!
//! | command | action | reply |
//! | --- | --- | --- |
//! | `SET key value` | write [`KvCommand::Set`] | `+OK` |
//! | `SET key value NX` | write [`KvCommand::Cas`] expecting absence | `+OK`, or null if the key existed |
//! | `SETNX key value` | write [`KvCommand::Cas`] expecting absence | `:1` set, `:0` not |
//! | `CAS key expected new` | write [`KvCommand::Cas`] | `:1` swapped, `:0` not |
//! | `DEL key...` | write [`KvCommand::Del`] | `:n` keys removed |
//! | `INCR`/`DECR key`, `INCRBY`/`DECRBY key n` | write [`KvCommand::Incr`] | `:n` new value |
//! | `GET key` | read | bulk or null |
//! | `EXISTS key...` | read | `:n` (a key named twice counts twice, as in Redis) |
//! | `MGET key...` | read | array of bulk or null |
//! | `DBSIZE` | read | `:n` |
//! | `INFO [section...]` | [`Action::Info`] (sections are ignored) | bulk text |
//! | `PING [msg]`, `ECHO msg` | immediate | `+PONG` or the message |
//! | `COMMAND`, `COMMAND DOCS/LIST/INFO/COUNT` | immediate | empty array, nulls, `:0` |
//! | `CONFIG GET pattern...` | immediate | `save` → `""`, `appendonly` → `no` (what redis-benchmark asks), others none |
//! | `SELECT 0` | immediate | `+OK`; any other database is out of range |
//! | `CLIENT SETNAME/SETINFO/GETNAME` | immediate | `+OK` / null |
//! | `QUIT` | [`Action::Quit`] | `+OK`, then close |
//! | `AUTH [user] password` | [`Action::Auth`] | `+OK` or `-WRONGPASS ...` (see [`crate::auth`]) |
//! | `HELLO [2 [AUTH user password] [SETNAME name]]` | immediate, or [`Action::Auth`] with AUTH | server fields; `-NOPROTO` for any protocol but 2 |
//!
//! `CAS` is raftkv's own command: `CAS key expected new` sets `key` to `new` only if it currently
//! holds exactly `expected`. Absence is not spelled inside `CAS` (the empty string is a real value,
//! and any marker word would be one too); "set only if absent" is Redis's own `SETNX key new` (or
//! `SET key new NX`), which maps to the same compare-and-set with nothing expected.

use crate::kv::{KvCommand, KvOutput, KvStore, NOT_AN_INTEGER};
use crate::parse_integer;
use crate::resp::{bulk_encoded_len, encoded_len, Reply};
use bytes::Bytes;
use raftengine::ApplyError;

/// What the server must do for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Replicate the command through Raft; once applied, answer with
    /// [`reply_for_apply`]`(shape, result)`.
    Write(KvCommand, ReplyShape),
    /// Wait for a read barrier, then answer with [`read_reply`].
    Read(ReadOp),
    /// Answer with [`info_reply`] built from this node's Raft status.
    Info,
    /// Answer with this reply now; nothing touches Raft.
    Immediate(Reply),
    /// Answer `+OK`, then close the connection.
    Quit,
    /// Log in (`AUTH`, or `HELLO ... AUTH user password`); answered by the connection, which
    /// knows the users.
    Auth(AuthRequest),
}

/// The credentials of an `AUTH` or `HELLO ... AUTH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// `None`: the `default` user (`AUTH password`).
    pub user: Option<Bytes>,
    pub password: Bytes,
    /// Answer with [`hello_reply`] instead of `+OK` (it was a HELLO).
    pub hello: bool,
}

/// How a write's [`KvOutput`] becomes a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyShape {
    /// [`KvOutput::Ok`] → `+OK` (SET).
    Ok,
    /// [`KvOutput::Integer`] → `:n` (DEL, INCR and friends).
    Integer,
    /// [`KvOutput::Bool`] → `:1` or `:0` (CAS, SETNX).
    Bool,
    /// [`KvOutput::Bool`] → `+OK` if set, null bulk if not (SET ... NX).
    OkOrNull,
}

/// A read served from the local [`KvStore`] after a read barrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOp {
    Get(Bytes),
    Exists(Vec<Bytes>),
    MGet(Vec<Bytes>),
    DbSize,
}

/// This node's status, for `INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoFields {
    pub node_id: u64,
    /// `leader`, `follower` or `candidate`.
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
}

/// Classifies a request. `words` is what [`crate::resp::RespCodec`] decoded: never empty, but an
/// empty slice is answered with an error rather than trusted.
pub fn parse_request(words: &[Bytes]) -> Action {
    let Some((name, args)) = words.split_first() else {
        return Action::Immediate(error("ERR empty command"));
    };
    let lower = name.to_ascii_lowercase();
    let command = lower.as_slice();
    let arity = |ok: bool, action: fn(&[Bytes]) -> Action| {
        if ok {
            action(args)
        } else {
            Action::Immediate(wrong_arity(command))
        }
    };
    let n = args.len();
    match command {
        b"ping" => arity(n <= 1, |args| {
            Action::Immediate(match args.first() {
                None => Reply::Simple("PONG".to_owned()),
                Some(message) => Reply::bulk(message.clone()),
            })
        }),
        b"echo" => arity(n == 1, |args| {
            Action::Immediate(Reply::bulk(args[0].clone()))
        }),
        b"set" => arity(n >= 2, parse_set),
        b"setnx" => arity(n == 2, |args| {
            Action::Write(
                KvCommand::Cas {
                    key: args[0].to_vec(),
                    expected: None,
                    new: args[1].to_vec(),
                },
                ReplyShape::Bool,
            )
        }),
        b"cas" => arity(n == 3, |args| {
            Action::Write(
                KvCommand::Cas {
                    key: args[0].to_vec(),
                    expected: Some(args[1].to_vec()),
                    new: args[2].to_vec(),
                },
                ReplyShape::Bool,
            )
        }),
        b"get" => arity(n == 1, |args| Action::Read(ReadOp::Get(args[0].clone()))),
        b"del" => arity(n >= 1, |args| {
            Action::Write(
                KvCommand::Del {
                    keys: args.iter().map(|key| key.to_vec()).collect(),
                },
                ReplyShape::Integer,
            )
        }),
        b"exists" => arity(n >= 1, |args| Action::Read(ReadOp::Exists(args.to_vec()))),
        b"mget" => arity(n >= 1, |args| Action::Read(ReadOp::MGet(args.to_vec()))),
        b"dbsize" => arity(n == 0, |_| Action::Read(ReadOp::DbSize)),
        b"incr" => arity(n == 1, |args| incr(&args[0], 1)),
        b"decr" => arity(n == 1, |args| incr(&args[0], -1)),
        b"incrby" => arity(n == 2, |args| match parse_integer(&args[1]) {
            Some(by) => incr(&args[0], by),
            None => Action::Immediate(error(NOT_AN_INTEGER)),
        }),
        b"decrby" => arity(n == 2, |args| {
            match parse_integer(&args[1]).map(i64::checked_neg) {
                Some(Some(by)) => incr(&args[0], by),
                Some(None) => Action::Immediate(error("ERR decrement would overflow")),
                None => Action::Immediate(error(NOT_AN_INTEGER)),
            }
        }),
        b"info" => Action::Info,
        b"quit" => Action::Quit,
        b"auth" => match args {
            [password] => Action::Auth(AuthRequest {
                user: None,
                password: password.clone(),
                hello: false,
            }),
            [user, password] => Action::Auth(AuthRequest {
                user: Some(user.clone()),
                password: password.clone(),
                hello: false,
            }),
            _ => Action::Immediate(wrong_arity(command)),
        },
        b"hello" => parse_hello(args),
        b"session" => arity(n >= 3, parse_session),
        b"select" => arity(n == 1, |args| {
            Action::Immediate(match parse_integer(&args[0]) {
                Some(0) => Reply::ok(),
                Some(_) => error("ERR DB index is out of range"),
                None => error(NOT_AN_INTEGER),
            })
        }),
        b"command" => Action::Immediate(command_command(args)),
        b"config" => arity(n >= 1, |args| Action::Immediate(config_command(args))),
        b"client" => arity(n >= 1, |args| Action::Immediate(client_command(args))),
        _ => Action::Immediate(unknown_command(name, args)),
    }
}

/// `SESSION client seq command [args...]`: a write numbered in its client's session, applied at
/// most once (see [`crate::session`]). A read passes through as it is (reads change nothing).
fn parse_session(args: &[Bytes]) -> Action {
    let (Some(client), Some(seq)) = (parse_u64(&args[0]), parse_u64(&args[1])) else {
        return Action::Immediate(error("ERR SESSION needs a client id and a sequence number"));
    };
    if seq == 0 {
        return Action::Immediate(error("ERR SESSION sequence numbers start at 1"));
    }
    match parse_request(&args[2..]) {
        Action::Write(command, shape) => Action::Write(
            KvCommand::Session {
                client,
                seq,
                command: Box::new(command),
            },
            shape,
        ),
        action @ (Action::Read(_) | Action::Immediate(_)) => action,
        Action::Info | Action::Quit | Action::Auth(_) => {
            Action::Immediate(error("ERR SESSION wraps reads and writes only"))
        }
    }
}

fn parse_u64(word: &[u8]) -> Option<u64> {
    std::str::from_utf8(word).ok()?.parse().ok()
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`: only RESP2 is spoken.
fn parse_hello(args: &[Bytes]) -> Action {
    let Some((version, mut options)) = args.split_first() else {
        return Action::Immediate(hello_reply());
    };
    if parse_integer(version) != Some(2) {
        return Action::Immediate(error("NOPROTO unsupported protocol version"));
    }
    let mut auth = None;
    while let Some((option, rest)) = options.split_first() {
        match (option.to_ascii_lowercase().as_slice(), rest) {
            (b"auth", [user, password, rest @ ..]) => {
                auth = Some(AuthRequest {
                    user: Some(user.clone()),
                    password: password.clone(),
                    hello: true,
                });
                options = rest;
            }
            (b"setname", [_, rest @ ..]) => options = rest,
            _ => {
                return Action::Immediate(Reply::Error(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    quoted_prefix(option, QUOTED_LIMIT)
                )))
            }
        }
    }
    match auth {
        Some(auth) => Action::Auth(auth),
        None => Action::Immediate(hello_reply()),
    }
}

/// HELLO's answer in RESP2: a flat array of field names and values.
pub fn hello_reply() -> Reply {
    Reply::array(vec![
        Reply::bulk("server"),
        Reply::bulk("raftkv"),
        Reply::bulk("version"),
        Reply::bulk(env!("CARGO_PKG_VERSION")),
        Reply::bulk("proto"),
        Reply::Integer(2),
        Reply::bulk("mode"),
        Reply::bulk("cluster"),
        Reply::bulk("modules"),
        Reply::array(vec![]),
    ])
}

fn parse_set(args: &[Bytes]) -> Action {
    let key = args[0].to_vec();
    let value = args[1].to_vec();
    match &args[2..] {
        [] => Action::Write(KvCommand::Set { key, value }, ReplyShape::Ok),
        // NX is a compare-and-set expecting absence. XX, EX, GET and the rest need state the
        // store does not keep (expiry) or a different comparison, so they stay syntax errors.
        [option] if option.eq_ignore_ascii_case(b"nx") => Action::Write(
            KvCommand::Cas {
                key,
                expected: None,
                new: value,
            },
            ReplyShape::OkOrNull,
        ),
        _ => Action::Immediate(error("ERR syntax error")),
    }
}

fn incr(key: &Bytes, by: i64) -> Action {
    Action::Write(
        KvCommand::Incr {
            key: key.to_vec(),
            by,
        },
        ReplyShape::Integer,
    )
}

/// `COMMAND` and its subcommands describe the command table; clients (redis-cli's hints,
/// redis-benchmark) only need a well-formed answer, so the table is presented as empty.
fn command_command(args: &[Bytes]) -> Reply {
    let Some((sub, rest)) = args.split_first() else {
        return Reply::array(vec![]);
    };
    match sub.to_ascii_lowercase().as_slice() {
        b"count" if rest.is_empty() => Reply::Integer(0),
        b"count" => wrong_arity(b"command|count"),
        b"docs" | b"list" => Reply::array(vec![]),
        b"info" => Reply::array(rest.iter().map(|_| Reply::Array(None)).collect()),
        _ => unknown_subcommand(sub, "COMMAND"),
    }
}

fn config_command(args: &[Bytes]) -> Reply {
    let (sub, rest) = (&args[0], &args[1..]);
    match sub.to_ascii_lowercase().as_slice() {
        // Only the two parameters redis-benchmark asks about, with values that describe this
        // service (no RDB snapshots, no AOF: durability comes from the Raft log); it warns when
        // they are missing. Any other pattern matches nothing.
        b"get" if !rest.is_empty() => Reply::array(
            rest.iter()
                .flat_map(|pattern| match pattern.to_ascii_lowercase().as_slice() {
                    b"save" => vec![Reply::bulk("save"), Reply::bulk("")],
                    b"appendonly" => vec![Reply::bulk("appendonly"), Reply::bulk("no")],
                    _ => vec![],
                })
                .collect(),
        ),
        b"get" => wrong_arity(b"config|get"),
        _ => unknown_subcommand(sub, "CONFIG"),
    }
}

/// Connection names and library info are accepted and forgotten: nothing reads them back.
fn client_command(args: &[Bytes]) -> Reply {
    let (sub, rest) = (&args[0], &args[1..]);
    match (sub.to_ascii_lowercase().as_slice(), rest.len()) {
        (b"setname", 1) => Reply::ok(),
        (b"setname", _) => wrong_arity(b"client|setname"),
        (b"setinfo", 2) => Reply::ok(),
        (b"setinfo", _) => wrong_arity(b"client|setinfo"),
        (b"getname", 0) => Reply::null(),
        (b"getname", _) => wrong_arity(b"client|getname"),
        _ => unknown_subcommand(sub, "CLIENT"),
    }
}

fn error(text: &str) -> Reply {
    Reply::Error(text.to_owned())
}

/// Redis's reply to a known command with the wrong number of arguments; `command` is the lower
/// case name, `parent|sub` for subcommands.
pub fn wrong_arity(command: &[u8]) -> Reply {
    Reply::Error(format!(
        "ERR wrong number of arguments for '{}' command",
        String::from_utf8_lossy(command)
    ))
}

/// How much of a name or argument Redis quotes back in an error.
const QUOTED_LIMIT: usize = 128;

fn quoted_prefix(bytes: &[u8], limit: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(limit)]).into_owned()
}

/// Redis's reply to an unknown command: the name and the first 128 bytes or so of arguments,
/// each quoted and followed by a space.
fn unknown_command(name: &[u8], args: &[Bytes]) -> Reply {
    let mut quoted_args = String::new();
    for arg in args {
        if quoted_args.len() >= QUOTED_LIMIT {
            break;
        }
        let room = QUOTED_LIMIT - quoted_args.len();
        quoted_args.push('\'');
        quoted_args.push_str(&quoted_prefix(arg, room));
        quoted_args.push_str("' ");
    }
    Reply::Error(format!(
        "ERR unknown command '{}', with args beginning with: {quoted_args}",
        quoted_prefix(name, QUOTED_LIMIT)
    ))
}

fn unknown_subcommand(sub: &[u8], command: &str) -> Reply {
    Reply::Error(format!(
        "ERR unknown subcommand '{}'. Try {command} HELP.",
        quoted_prefix(sub, QUOTED_LIMIT)
    ))
}

/// The reply to a write whose command produced `output`.
pub fn reply_for(shape: ReplyShape, output: KvOutput) -> Reply {
    match (shape, output) {
        (ReplyShape::Ok, KvOutput::Ok) => Reply::ok(),
        (ReplyShape::Integer, KvOutput::Integer(n)) => Reply::Integer(n),
        (ReplyShape::Bool, KvOutput::Bool(done)) => Reply::Integer(i64::from(done)),
        (ReplyShape::OkOrNull, KvOutput::Bool(true)) => Reply::ok(),
        (ReplyShape::OkOrNull, KvOutput::Bool(false)) => Reply::null(),
        // Only a mismatch between this module and the state machine gets here; the client gets an
        // error rather than a guess.
        (shape, output) => Reply::Error(format!(
            "ERR internal error: {output:?} does not fit a {shape:?} reply"
        )),
    }
}

/// The reply to a write, from what [`raftengine::StateMachine::apply`] returned for it.
pub fn reply_for_apply(shape: ReplyShape, result: &Result<Vec<u8>, ApplyError>) -> Reply {
    match result {
        Ok(bytes) => match KvOutput::decode(bytes) {
            Ok(output) => reply_for(shape, output),
            Err(err) => Reply::Error(format!(
                "ERR internal error: bad state machine output: {err}"
            )),
        },
        // Rejections already carry Redis's wording, code included.
        Err(ApplyError::Rejected(text)) => Reply::Error(text.clone()),
        Err(ApplyError::Fatal(text)) => Reply::Error(format!("ERR state machine failed: {text}")),
    }
}

/// The reply to a read, served from `store`.
pub fn read_reply(op: &ReadOp, store: &KvStore) -> Reply {
    let bulk_or_null = |value: Option<&[u8]>| match value {
        Some(value) => Reply::bulk(Bytes::copy_from_slice(value)),
        None => Reply::null(),
    };
    match op {
        ReadOp::Get(key) => bulk_or_null(store.get(key)),
        ReadOp::Exists(keys) => {
            let present = keys.iter().filter(|key| store.exists(key)).count();
            Reply::Integer(i64::try_from(present).unwrap_or(i64::MAX))
        }
        ReadOp::MGet(keys) => Reply::array(
            keys.iter()
                .map(|key| bulk_or_null(store.get(key)))
                .collect(),
        ),
        ReadOp::DbSize => Reply::Integer(i64::try_from(store.len()).unwrap_or(i64::MAX)),
    }
}

/// The encoded size of [`read_reply`]`(op, store)`, found without copying any value: the
/// server checks it against its output limits before it makes the reply.
pub fn read_reply_len(op: &ReadOp, store: &KvStore) -> usize {
    let bulk_or_null = |value: Option<&[u8]>| value.map_or(5, |v| bulk_encoded_len(v.len()));
    match op {
        ReadOp::Get(key) => bulk_or_null(store.get(key)),
        ReadOp::MGet(keys) => {
            let header = encoded_len(&Reply::Integer(keys.len() as i64));
            keys.iter().fold(header, |total, key| {
                total.saturating_add(bulk_or_null(store.get(key)))
            })
        }
        ReadOp::Exists(_) | ReadOp::DbSize => encoded_len(&read_reply(op, store)),
    }
}

/// Redis-INFO-style text: `# Section` headers and `field:value` lines, CRLF-separated, in a bulk
/// string.
pub fn info_reply(fields: &InfoFields) -> Reply {
    let leader = fields
        .leader
        .map_or_else(|| "none".to_owned(), |id| id.to_string());
    // The role is the only free text; keep it on its line whatever it holds.
    let role: String = fields
        .role
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    let text = format!(
        "# Server\r\n\
         raftkv_version:{version}\r\n\
         node_id:{node_id}\r\n\
         \r\n\
         # Replication\r\n\
         role:{role}\r\n\
         raft_term:{term}\r\n\
         raft_leader_id:{leader}\r\n\
         raft_commit_index:{commit}\r\n\
         raft_applied_index:{applied}\r\n",
        version = env!("CARGO_PKG_VERSION"),
        node_id = fields.node_id,
        term = fields.term,
        commit = fields.commit_index,
        applied = fields.applied_index,
    );
    Reply::bulk(text)
}

#[cfg(test)]
mod tests;
