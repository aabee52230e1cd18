//! Linearizability checker for key-value histories.
//!
//! A fault simulator records what its clients saw — which operation was
//! invoked when, and what (if anything) came back — and asks [`check`]
//! whether some sequential execution of a single key-value map explains it.
//!
//! # Model
//!
//! Every operation touches one key ([`KvInput`]): `get` returns the value or
//! absent, `put` overwrites, `delete` reports whether the key existed, and
//! `cas` replaces the value if it equals `expected` (`None` = absent) and
//! reports whether it did. Every key starts absent. Keys are independent,
//! so the history is split per key and each key is checked on its own
//! (linearizability is compositional); the first failing key, in key order,
//! is reported.
//!
//! # Unknown outcomes
//!
//! An operation whose `output` is `None` (timeout, lost leadership, crash)
//! may or may not have taken effect. As in Porcupine, its return time is
//! taken as +infinity and any output is accepted, so it may be linearized
//! anywhere after its call; placing it after everything else is the same as
//! it never having happened. Its `ret`, if recorded, is only when the client
//! gave up and does not bound it. Unknown-outcome reads are dropped since
//! they cannot affect anything.
//!
//! # Time
//!
//! Times are virtual `u64` ticks. Operation A happened before B exactly when
//! `A.ret < B.call` (strict). If `A.ret == B.call` the two are concurrent
//! and may be linearized in either order; in the event list calls therefore
//! sort before returns at equal times. A completed operation must be
//! linearized at some point in `[call, ret]`; `call == ret` is allowed.
//!
//! # Algorithm
//!
//! Per key, the Wing & Gong / Lowe just-in-time search as improved by
//! Porcupine. Call and return events sit in doubly linked lists sorted by
//! time. Walking from the front, the search linearizes the first pending
//! call whose output fits the current state, unlinks it and restarts from
//! the front; on reaching a return whose operation is not yet linearized
//! (the deadline), it backtracks the most recent choice. A cache of failed
//! configurations (linearized set, state) prunes branches already explored.
//!
//! Unknown outcomes, which may be placed anywhere after their call, are
//! what makes this search blow up; four sound reductions keep them cheap:
//!
//! - they are tried only after the completed candidates of a configuration,
//!   and the cache lets a failed configuration that used fewer of them
//!   (same completed set and state) prune one that used more (dominance);
//! - one is applied only if some later output observes its effect before
//!   it is overwritten (a shortest linearization never contains one that
//!   is not), which also rules out those that would change nothing;
//! - values that nothing reads or compares against are merged into one,
//!   which changes no output;
//! - unknown outcomes with identical effects are interchangeable, so only
//!   the earliest unused one is tried.
//!
//! The completed part of a configuration is stored as its deadline plus the
//! pending calls before it, so cache entries grow with the concurrency, not
//! with the history. Linearizability checking is NP-complete, so some
//! histories stay expensive (many concurrent unknown-outcome writes on one
//! hot key, or a violation far into a long, highly concurrent one): each
//! key gets a budget of search steps ([`CheckOptions::max_steps_per_key`])
//! and the result is [`CheckResult::Unknown`] when it runs out, so the
//! checker never hangs. The cache gains at most one entry per step, which
//! also bounds memory.
//!
//! # Files
//!
//! [`write_jsonl`] and [`read_jsonl`] store a history as one JSON
//! [`Operation`] per line, for example
//!
//! ```json
//! {"id":1,"client":0,"call":3,"ret":7,"input":{"op":"put","key":"x","value":"a"},"output":{"op":"put"}}
//! {"id":2,"client":1,"call":4,"ret":null,"input":{"op":"cas","key":"x","expected":null,"new":"b"},"output":null}
//! ```

#![deny(missing_docs)]

mod history;
mod search;

use std::collections::BTreeMap;
use std::fmt;

use history::DisplayValue;
pub use history::{read_jsonl, validate, write_jsonl, HistoryError, KvInput, KvOutput, Operation};
use search::{KeyHistory, SearchOutcome};

/// Tuning for [`check_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Search steps (one per event the search visits) allowed for each key
    /// before giving up on it with [`CheckResult::Unknown`].
    pub max_steps_per_key: u64,
}

impl CheckOptions {
    /// Enough for thousands of operations per key at the concurrency of a
    /// typical simulation (a few thousand steps per hundred operations),
    /// while a key that exhausts it costs on the order of a second and
    /// 100 MB.
    pub const DEFAULT_MAX_STEPS_PER_KEY: u64 = 10_000_000;
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_steps_per_key: Self::DEFAULT_MAX_STEPS_PER_KEY,
        }
    }
}

/// The verdict on a history.
#[derive(Debug)]
pub enum CheckResult {
    /// Some sequential execution explains every key's history.
    Linearizable,
    /// A key's history has no explanation; the first such key, in key order.
    NotLinearizable(Violation),
    /// The search budget ran out on `key`; no violation was found on any
    /// key, but `key` was not fully checked.
    Unknown {
        /// The key not fully checked.
        key: String,
        /// Which budget ran out.
        reason: String,
    },
    /// The history is malformed; nothing was checked.
    Invalid(HistoryError),
}

impl CheckResult {
    /// The verdict is [`CheckResult::Linearizable`] (unknown and invalid are not).
    pub fn is_linearizable(&self) -> bool {
        matches!(self, CheckResult::Linearizable)
    }
}

/// Why a key's history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key whose history cannot be explained.
    pub key: String,
    /// All operations on `key`, by call time.
    pub operations: Vec<Operation>,
    /// Ids of the longest sequence of operations the search could
    /// linearize, in linearization order.
    pub longest_prefix: Vec<u64>,
    /// The value of `key` after `longest_prefix` (`None` = absent).
    pub value_after_prefix: Option<String>,
    /// The operation that returned next and could not be linearized after
    /// `longest_prefix`, whatever order the concurrent operations took.
    pub blocking_op: u64,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by_id = |id: u64| self.operations.iter().find(|op| op.id == id);
        writeln!(
            f,
            "key {:?} is not linearizable: no order of its operations respects both \
             real time and the outputs.",
            self.key
        )?;
        writeln!(
            f,
            "Longest linearizable prefix found ({} of {} operations), leaving the key {}:",
            self.longest_prefix.len(),
            self.operations.len(),
            DisplayValue(self.value_after_prefix.as_deref()),
        )?;
        for (position, id) in self.longest_prefix.iter().enumerate() {
            match by_id(*id) {
                Some(op) => writeln!(f, "  {:>3}. {op}", position + 1)?,
                None => writeln!(f, "  {:>3}. #{id}", position + 1)?,
            }
        }
        writeln!(
            f,
            "It cannot be extended by the operation that must take effect next:"
        )?;
        match by_id(self.blocking_op) {
            Some(op) => writeln!(f, "       {op}")?,
            None => writeln!(f, "       #{}", self.blocking_op)?,
        }
        writeln!(f, "All operations on key {:?}, by call time:", self.key)?;
        for op in &self.operations {
            writeln!(f, "  {op}")?;
        }
        Ok(())
    }
}

/// The value of a key after applying `inputs` to an absent key. The checker
/// merges values nobody reads, so reports recompute the real one.
fn replay<'a>(inputs: impl Iterator<Item = &'a KvInput>) -> Option<String> {
    let mut value: Option<&str> = None;
    for input in inputs {
        match input {
            KvInput::Get { .. } => {}
            KvInput::Put { value: new, .. } => value = Some(new),
            KvInput::Delete { .. } => value = None,
            KvInput::Cas { expected, new, .. } => {
                if value == expected.as_deref() {
                    value = Some(new);
                }
            }
        }
    }
    value.map(str::to_owned)
}

/// Checks `history` with the default [`CheckOptions`].
pub fn check(history: &[Operation]) -> CheckResult {
    check_with(history, CheckOptions::default())
}

/// Checks `history`. A violation on any key wins over a budget exhaustion on
/// another; among several, the first key in lexicographic order is reported.
pub fn check_with(history: &[Operation], options: CheckOptions) -> CheckResult {
    if let Err(error) = validate(history) {
        return CheckResult::Invalid(error);
    }

    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.input.key()).or_default().push(op);
    }

    let mut first_unknown = None;
    for (key, ops) in by_key {
        let key_history = KeyHistory::new(&ops);
        match search::search(&key_history, options.max_steps_per_key) {
            SearchOutcome::Linearizable => {}
            SearchOutcome::Violation(stuck) => {
                let op_id = |index: usize| key_history.ops.get(index).map(|op| op.original.id);
                let mut operations: Vec<Operation> = ops.into_iter().cloned().collect();
                operations.sort_by_key(|op| (op.call, op.id));
                return CheckResult::NotLinearizable(Violation {
                    key: key.to_owned(),
                    operations,
                    longest_prefix: stuck.prefix.iter().filter_map(|&i| op_id(i)).collect(),
                    value_after_prefix: replay(
                        stuck
                            .prefix
                            .iter()
                            .filter_map(|&i| key_history.ops.get(i).map(|op| &op.original.input)),
                    ),
                    blocking_op: op_id(stuck.blocking).unwrap_or_default(),
                });
            }
            SearchOutcome::BudgetExhausted { longest_prefix } => {
                if first_unknown.is_none() {
                    first_unknown = Some(CheckResult::Unknown {
                        key: key.to_owned(),
                        reason: format!(
                            "search budget of {} steps exhausted on {} operations \
                             (longest linearizable prefix found: {longest_prefix})",
                            options.max_steps_per_key,
                            key_history.ops.len(),
                        ),
                    });
                }
            }
        }
    }
    first_unknown.unwrap_or(CheckResult::Linearizable)
}
