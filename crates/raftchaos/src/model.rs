//! What a run records: client operations ([`Record`], one JSON line each in `history.jsonl`)
//! and faults ([`FaultSpan`], in `faults.jsonl`). Times are microseconds since the run started.

use serde::{Deserialize, Serialize};

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `GET key`.
    Get { key: String },
    /// `SET key value`.
    Set { key: String, value: String },
    /// `CAS key expected new`; `expected: None` means "the key is absent".
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
    /// `INCR key`.
    Incr { key: String },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Get { key } | Op::Set { key, .. } | Op::Cas { key, .. } | Op::Incr { key } => key,
        }
    }

    /// The command's name, as in the history.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Get { .. } => "get",
            Op::Set { .. } => "set",
            Op::Cas { .. } => "cas",
            Op::Incr { .. } => "incr",
        }
    }

    /// Whether the operation can change the store.
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get { .. })
    }
}

/// What the server answered, when it answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum OpResult {
    /// A `GET`'s value (`None`: absent).
    Value { value: Option<String> },
    /// A `SET` was applied.
    Written,
    /// A `CAS` replaced the value or did not.
    Swapped { swapped: bool },
    /// An `INCR`'s new value.
    Counter { value: i64 },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Answered.
    Ok(OpResult),
    /// Refused: it certainly did not take effect (or it is a read).
    Fail { error: String },
    /// It may or may not have taken effect (timeout, lost connection, `-UNCERTAIN`).
    Unknown { error: String },
}

impl Outcome {
    /// `ok`, `fail` or `unknown`.
    pub fn class(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Fail { .. } => "fail",
            Outcome::Unknown { .. } => "unknown",
        }
    }
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Unique within a run, in order of invocation per client.
    pub id: u64,
    /// The client (one connection at a time, one operation at a time).
    pub client: u64,
    /// The node the client sent it to (it may have been forwarded or redirected).
    pub node: u64,
    /// When it was sent.
    pub call_us: u64,
    /// When the answer came or the client gave up.
    pub ret_us: u64,
    #[serde(flatten)]
    pub op: Op,
    pub outcome: Outcome,
}

/// One fault, from when it was injected until it was healed (`end_us: None`: never healed,
/// e.g. the run was interrupted). Faults that happen at an instant (a leadership transfer, a
/// kill) have `end_us == start_us` unless something is healed later (a restart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultSpan {
    pub id: u64,
    /// The fault kind, e.g. `partition-isolate`, `kill`, `latency`.
    pub kind: String,
    /// The nodes it targets (empty: the whole cluster).
    pub nodes: Vec<u64>,
    pub start_us: u64,
    pub end_us: Option<u64>,
    /// Human-readable parameters, e.g. `{1} | {2,3}` or `150ms ±50ms`.
    pub detail: String,
}
