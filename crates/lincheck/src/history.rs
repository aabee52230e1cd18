//! History types, validation and the JSON-lines format.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

/// What a client asked for. Every operation touches exactly one key.
///
/// Serialized internally tagged, e.g. `{"op":"put","key":"x","value":"1"}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum KvInput {
    /// Read the current value; answered by [`KvOutput::Get`].
    Get {
        /// The key read.
        key: String,
    },
    /// Overwrite (or create) the value; answered by [`KvOutput::Put`].
    Put {
        /// The key written.
        key: String,
        /// The value written.
        value: String,
    },
    /// Remove the key; answered by [`KvOutput::Delete`].
    Delete {
        /// The key removed.
        key: String,
    },
    /// Set the value to `new` if the current value equals `expected`
    /// (`None` = the key is absent); answered by [`KvOutput::Cas`].
    Cas {
        /// The key compared and set.
        key: String,
        /// The value the key must hold (`None`: absent); must be present in JSON (as `null`).
        #[serde(deserialize_with = "required")]
        expected: Option<String>,
        /// The value set when the comparison holds.
        new: String,
    },
}

impl KvInput {
    /// The key this operation touches.
    pub fn key(&self) -> &str {
        match self {
            KvInput::Get { key }
            | KvInput::Put { key, .. }
            | KvInput::Delete { key }
            | KvInput::Cas { key, .. } => key,
        }
    }

    /// The operation's name, as used in the JSON `op` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            KvInput::Get { .. } => "get",
            KvInput::Put { .. } => "put",
            KvInput::Delete { .. } => "delete",
            KvInput::Cas { .. } => "cas",
        }
    }
}

/// What the client was told. The variant must match the input's variant.
///
/// Serialized internally tagged, e.g. `{"op":"get","value":null}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum KvOutput {
    /// The value read; `None` = the key was absent.
    Get {
        /// The value read (`None`: absent); must be present in JSON (as `null`).
        #[serde(deserialize_with = "required")]
        value: Option<String>,
    },
    /// The write was applied.
    Put,
    /// Whether the key existed before the delete.
    Delete {
        /// The key existed.
        existed: bool,
    },
    /// Whether the compare-and-swap replaced the value.
    Cas {
        /// The value was replaced.
        swapped: bool,
    },
}

impl KvOutput {
    /// The operation's name, as used in the JSON `op` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            KvOutput::Get { .. } => "get",
            KvOutput::Put => "put",
            KvOutput::Delete { .. } => "delete",
            KvOutput::Cas { .. } => "cas",
        }
    }
}

/// One client operation as observed from outside the system.
///
/// The outcome is *unknown* exactly when `output` is `None` (timeout, lost
/// leadership, crash): the operation may or may not have taken effect, at
/// any time after `call`. For such an operation `ret`, if present, only
/// records when the client gave up; it does not bound the linearization
/// point, because the request may still be applied later.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// Unique within a history; used in reports.
    pub id: u64,
    /// Issuing client (informational; the checker does not use it).
    pub client: u64,
    /// Virtual time of invocation.
    pub call: u64,
    /// Virtual time of the response; `None` = the client never heard back.
    #[serde(deserialize_with = "required")]
    pub ret: Option<u64>,
    /// What the client asked.
    pub input: KvInput,
    /// `None` = the outcome is unknown.
    #[serde(deserialize_with = "required")]
    pub output: Option<KvOutput>,
}

/// Deserializes an `Option` field that must be present (as `null` when
/// absent), so that a forgotten field is an error rather than silently
/// meaning "absent" or "unknown outcome".
fn required<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::deserialize(deserializer)
}

impl Operation {
    /// Whether the client learned the outcome.
    pub fn is_completed(&self) -> bool {
        self.output.is_some()
    }
}

/// A history that cannot be checked or read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Reading the history's JSON lines failed.
    #[error("line {line}: cannot read: {source}")]
    Io {
        /// The line number, from 1.
        line: usize,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A line is not a valid [`Operation`].
    #[error("line {line}: not a valid operation: {source}")]
    Parse {
        /// The line number, from 1.
        line: usize,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// An operation's `ret` is before its `call`.
    #[error("operation {id}: returns at {ret}, before its call at {call}")]
    ReturnBeforeCall {
        /// The operation's id.
        id: u64,
        /// Its call time.
        call: u64,
        /// Its return time.
        ret: u64,
    },
    /// Two operations share an id.
    #[error("operation id {id} appears more than once")]
    DuplicateId {
        /// The repeated id.
        id: u64,
    },
    /// An output of another kind than its input (e.g. a `get` answered by a `put`).
    #[error("operation {id}: a {input} operation cannot produce a {output} output")]
    OutputMismatch {
        /// The operation's id.
        id: u64,
        /// The input's kind.
        input: &'static str,
        /// The output's kind.
        output: &'static str,
    },
    /// A known outcome without a return time.
    #[error("operation {id}: has an output but no return time")]
    OutputWithoutReturn {
        /// The operation's id.
        id: u64,
    },
}

/// Checks that a history is well formed: unique ids, `call <= ret`, outputs
/// of the same kind as their inputs, and a return time for every known
/// outcome. Reports the first problem in history order.
pub fn validate(history: &[Operation]) -> Result<(), HistoryError> {
    let mut seen_ids = HashSet::with_capacity(history.len());
    for op in history {
        if !seen_ids.insert(op.id) {
            return Err(HistoryError::DuplicateId { id: op.id });
        }
        if let Some(ret) = op.ret {
            if ret < op.call {
                return Err(HistoryError::ReturnBeforeCall {
                    id: op.id,
                    call: op.call,
                    ret,
                });
            }
        }
        if let Some(output) = &op.output {
            if op.ret.is_none() {
                return Err(HistoryError::OutputWithoutReturn { id: op.id });
            }
            if output.kind() != op.input.kind() {
                return Err(HistoryError::OutputMismatch {
                    id: op.id,
                    input: op.input.kind(),
                    output: output.kind(),
                });
            }
        }
    }
    Ok(())
}

/// Writes one JSON object per line.
pub fn write_jsonl(history: &[Operation], mut w: impl Write) -> io::Result<()> {
    for op in history {
        serde_json::to_writer(&mut w, op)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Reads one JSON object per line (blank lines are skipped). Errors carry
/// the 1-based line number. Only the syntax is checked here; use
/// [`validate`] (or [`crate::check`], which calls it) for consistency.
pub fn read_jsonl(r: impl BufRead) -> Result<Vec<Operation>, HistoryError> {
    let mut history = Vec::new();
    for (index, line) in r.lines().enumerate() {
        let line_number = index + 1;
        let line = line.map_err(|source| HistoryError::Io {
            line: line_number,
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
            line: line_number,
            source,
        })?;
        history.push(op);
    }
    Ok(history)
}

/// `Some("a")` prints as `"a"`, `None` as `absent`.
pub(crate) struct DisplayValue<'a>(pub Option<&'a str>);

impl fmt::Display for DisplayValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(f, "{value:?}"),
            None => f.write_str("absent"),
        }
    }
}

impl fmt::Display for KvInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvInput::Get { key } => write!(f, "get({key:?})"),
            KvInput::Put { key, value } => write!(f, "put({key:?}, {value:?})"),
            KvInput::Delete { key } => write!(f, "delete({key:?})"),
            KvInput::Cas { key, expected, new } => write!(
                f,
                "cas({key:?}, expected {}, new {new:?})",
                DisplayValue(expected.as_deref())
            ),
        }
    }
}

impl fmt::Display for KvOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvOutput::Get { value } => write!(f, "{}", DisplayValue(value.as_deref())),
            KvOutput::Put => f.write_str("ok"),
            KvOutput::Delete { existed } => write!(f, "existed={existed}"),
            KvOutput::Cas { swapped } => write!(f, "swapped={swapped}"),
        }
    }
}

/// One line: `#7 client 2 [10, 15] put("x", "a") -> ok`.
impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} client {} ", self.id, self.client)?;
        match (&self.output, self.ret) {
            (Some(_), Some(ret)) => write!(f, "[{}, {ret}]", self.call)?,
            (None, Some(gave_up)) => write!(f, "[{}, ∞) (gave up at {gave_up})", self.call)?,
            (_, None) => write!(f, "[{}, ∞)", self.call)?,
        }
        write!(f, " {} -> ", self.input)?;
        match &self.output {
            Some(output) => write!(f, "{output}"),
            None => f.write_str("unknown outcome"),
        }
    }
}
