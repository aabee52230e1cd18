//! A conformance suite every [`LogStorage`] must pass, for the stores in this workspace and for
//! users who write their own. Call [`check_log_storage`] from a test:
//!
//! ```
//! use raftengine::{conformance::check_log_storage, MemoryStorage};
//! check_log_storage(MemoryStorage::new, |storage| storage).expect("MemoryStorage conforms");
//! ```
//!
//! `create` makes a fresh, empty store; `reopen` simulates a restart (drop the store and open it
//! again from its files; the identity for an in-memory store). Every case compares the store with
//! [`MemoryStorage`] after each step and after every reopen.

use crate::storage::{LogId, LogStorage, LogWrite, MemoryStorage, StorageError};
use crate::types::{Entry, EntryPayload, HardState, LogIndex, NodeId, Term};
use std::fmt;

/// The first case a store failed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConformanceFailure {
    /// The case's name.
    pub case: &'static str,
    /// What differed from the model, and at which step.
    pub detail: String,
}

impl fmt::Display for ConformanceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "log storage conformance case `{}` failed: {}",
            self.case, self.detail
        )
    }
}

impl std::error::Error for ConformanceFailure {}

type CaseResult = Result<(), String>;
type Case = (&'static str, fn(&mut dyn Harness) -> CaseResult);

/// Runs every case; stops at the first failure.
pub fn check_log_storage<S: LogStorage>(
    mut create: impl FnMut() -> S,
    mut reopen: impl FnMut(S) -> S,
) -> Result<(), ConformanceFailure> {
    let cases: [Case; 12] = [
        ("empty store", empty_store),
        ("append, sync, reopen", append_sync_reopen),
        ("hard state", hard_state),
        ("truncate then append", truncate_then_append),
        ("append leaving a gap is refused", gap_refused),
        ("range reads", range_reads),
        ("unsynced writes are readable", unsynced_readable),
        ("purge a prefix", purge_prefix),
        ("purge beyond the last entry", purge_beyond_last),
        ("broken mark survives restarts", broken_mark),
        ("large and term-start entries", payload_shapes),
        ("random operations against the model", random_against_model),
    ];
    for (case, run) in cases {
        let mut harness = Pair {
            store: Some(create()),
            model: MemoryStorage::new(),
            reopen: &mut reopen,
        };
        run(&mut harness).map_err(|detail| ConformanceFailure { case, detail })?;
    }
    Ok(())
}

/// The store under test next to the model; the cases talk to this object-safe view.
trait Harness {
    /// Writes to both; the results (ok or refused) must agree.
    fn write(&mut self, writes: &[LogWrite]) -> CaseResult;
    fn sync(&mut self) -> CaseResult;
    fn reopen(&mut self) -> CaseResult;
    /// Compares `load` and every range read with the model.
    fn compare(&mut self) -> CaseResult;
    fn range(&self, from: u64, to: u64) -> Result<Vec<Entry>, StorageError>;
    fn load_error(&self) -> Option<StorageError>;
    fn mark_broken(&mut self, reason: &str) -> CaseResult;
    fn clear_broken(&mut self) -> CaseResult;
}

struct Pair<'a, S> {
    /// Always `Some` between calls; taken only while reopening.
    store: Option<S>,
    model: MemoryStorage,
    reopen: &'a mut dyn FnMut(S) -> S,
}

impl<S: LogStorage> Pair<'_, S> {
    fn store(&self) -> &S {
        // Invariant: `store` is `None` only inside `reopen`.
        self.store.as_ref().expect("store present outside reopen")
    }

    fn store_mut(&mut self) -> &mut S {
        self.store.as_mut().expect("store present outside reopen")
    }
}

impl<S: LogStorage> Harness for Pair<'_, S> {
    fn write(&mut self, writes: &[LogWrite]) -> CaseResult {
        let expected = self.model.write(writes);
        let got = self.store_mut().write(writes);
        match (&expected, &got) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(_), Err(StorageError::Corrupt(_))) => Ok(()),
            _ => Err(format!(
                "write {writes:?}: model gave {expected:?}, store gave {got:?}"
            )),
        }
    }

    fn sync(&mut self) -> CaseResult {
        self.store_mut()
            .sync()
            .map_err(|e| format!("sync failed: {e}"))
    }

    fn reopen(&mut self) -> CaseResult {
        let store = self.store.take().ok_or("store missing")?;
        self.store = Some((self.reopen)(store));
        Ok(())
    }

    fn compare(&mut self) -> CaseResult {
        let expected = self.model.load().map_err(|e| format!("model load: {e}"))?;
        let got = self
            .store()
            .load()
            .map_err(|e| format!("load failed: {e}"))?;
        if got != expected {
            return Err(format!("load gave {got:?}, expected {expected:?}"));
        }
        let last = self.model.last_index().0;
        let start = self.model.log_start().index.0;
        let probes = [
            (0, last + 2),
            (start, start + 1),
            (start + 1, last),
            (last, last + 5),
        ];
        for (from, to) in probes {
            let expected = LogStorage::entries(&self.model, LogIndex(from), LogIndex(to));
            let got = self.range(from, to);
            if got != expected {
                return Err(format!(
                    "entries({from}, {to}) gave {got:?}, expected {expected:?}"
                ));
            }
        }
        Ok(())
    }

    fn range(&self, from: u64, to: u64) -> Result<Vec<Entry>, StorageError> {
        self.store().entries(LogIndex(from), LogIndex(to))
    }

    fn load_error(&self) -> Option<StorageError> {
        self.store().load().err()
    }

    fn mark_broken(&mut self, reason: &str) -> CaseResult {
        self.store_mut()
            .mark_broken(reason)
            .map_err(|e| e.to_string())
    }

    fn clear_broken(&mut self) -> CaseResult {
        self.store_mut().clear_broken().map_err(|e| e.to_string())
    }
}

fn command(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(format!("cmd {index}/{term}").into_bytes()),
    }
}

fn append(indexes: std::ops::RangeInclusive<u64>, term: u64) -> LogWrite {
    LogWrite::Append(indexes.map(|i| command(i, term)).collect())
}

fn hard(term: u64, voted_for: Option<u64>) -> LogWrite {
    LogWrite::HardState(HardState {
        term: Term(term),
        voted_for: voted_for.map(NodeId),
    })
}

fn persist_and_reopen(h: &mut dyn Harness) -> CaseResult {
    h.sync()?;
    h.compare()?;
    h.reopen()?;
    h.compare()
}

fn empty_store(h: &mut dyn Harness) -> CaseResult {
    h.compare()?;
    h.reopen()?;
    h.compare()
}

fn append_sync_reopen(h: &mut dyn Harness) -> CaseResult {
    h.write(&[append(1..=5, 1)])?;
    persist_and_reopen(h)?;
    h.write(&[append(6..=6, 1), append(7..=9, 2)])?;
    persist_and_reopen(h)
}

fn hard_state(h: &mut dyn Harness) -> CaseResult {
    h.write(&[hard(1, Some(1))])?;
    persist_and_reopen(h)?;
    h.write(&[hard(2, None), append(1..=1, 2), hard(3, Some(2))])?;
    persist_and_reopen(h)
}

fn truncate_then_append(h: &mut dyn Harness) -> CaseResult {
    h.write(&[append(1..=10, 1)])?;
    persist_and_reopen(h)?;
    h.write(&[LogWrite::TruncateFrom(LogIndex(6)), append(6..=8, 2)])?;
    persist_and_reopen(h)?;
    // Truncate and re-append the same index twice in one batch: the last version wins.
    h.write(&[
        LogWrite::TruncateFrom(LogIndex(8)),
        append(8..=8, 3),
        LogWrite::TruncateFrom(LogIndex(8)),
        append(8..=9, 4),
    ])?;
    persist_and_reopen(h)?;
    h.write(&[LogWrite::TruncateFrom(LogIndex(1))])?;
    persist_and_reopen(h)
}

fn gap_refused(h: &mut dyn Harness) -> CaseResult {
    h.write(&[append(1..=3, 1)])?;
    h.write(&[append(5..=5, 1)])?;
    h.write(&[append(3..=3, 1)])?;
    persist_and_reopen(h)
}

fn range_reads(h: &mut dyn Harness) -> CaseResult {
    for batch in 0..10 {
        h.write(&[append(batch * 10 + 1..=batch * 10 + 10, 1 + batch / 3)])?;
        h.sync()?;
    }
    for (from, to, expected) in [(10, 20, 11), (95, 200, 6), (0, 3, 3), (50, 40, 0)] {
        let got = h.range(from, to).map_err(|e| e.to_string())?;
        let indexes: Vec<u64> = got.iter().map(|e| e.index.0).collect();
        let first = from.max(1);
        let wanted: Vec<u64> = (first..first + expected).collect();
        if indexes != wanted {
            return Err(format!(
                "entries({from}, {to}) returned indexes {indexes:?}"
            ));
        }
    }
    persist_and_reopen(h)
}

fn unsynced_readable(h: &mut dyn Harness) -> CaseResult {
    h.write(&[append(1..=3, 1)])?;
    h.sync()?;
    h.write(&[append(4..=6, 1), hard(1, Some(1))])?;
    h.compare()?;
    persist_and_reopen(h)
}

fn purge_prefix(h: &mut dyn Harness) -> CaseResult {
    h.write(&[append(1..=10, 1), append(11..=20, 2)])?;
    h.sync()?;
    h.write(&[LogWrite::Purge {
        through: LogIndex(12),
        term: Term(2),
    }])?;
    persist_and_reopen(h)?;
    // At or below the purged prefix: a truncation is refused, a smaller purge changes nothing.
    h.write(&[LogWrite::TruncateFrom(LogIndex(12))])?;
    h.write(&[LogWrite::Purge {
        through: LogIndex(5),
        term: Term(1),
    }])?;
    h.write(&[LogWrite::TruncateFrom(LogIndex(15)), append(15..=25, 3)])?;
    persist_and_reopen(h)
}

fn purge_beyond_last(h: &mut dyn Harness) -> CaseResult {
    h.write(&[append(1..=5, 1)])?;
    h.write(&[LogWrite::Purge {
        through: LogIndex(40),
        term: Term(3),
    }])?;
    persist_and_reopen(h)?;
    h.write(&[append(20..=20, 3)])?;
    h.write(&[append(41..=45, 3)])?;
    persist_and_reopen(h)
}

fn broken_mark(h: &mut dyn Harness) -> CaseResult {
    h.write(&[append(1..=2, 1)])?;
    h.sync()?;
    h.mark_broken("state machine failed at index 2")?;
    for _ in 0..2 {
        match h.load_error() {
            Some(StorageError::Broken(reason)) if reason.contains("index 2") => {}
            other => return Err(format!("load of a broken store gave {other:?}")),
        }
        h.reopen()?;
    }
    h.clear_broken()?;
    h.compare()?;
    h.reopen()?;
    h.compare()
}

fn payload_shapes(h: &mut dyn Harness) -> CaseResult {
    let big = Entry {
        term: Term(1),
        index: LogIndex(2),
        payload: EntryPayload::Command(vec![0xA5; 1 << 20]),
    };
    let empty = Entry {
        term: Term(1),
        index: LogIndex(3),
        payload: EntryPayload::Command(Vec::new()),
    };
    let term_start = Entry {
        term: Term(1),
        index: LogIndex(1),
        payload: EntryPayload::TermStart,
    };
    h.write(&[LogWrite::Append(vec![term_start, big, empty])])?;
    persist_and_reopen(h)
}

/// A fixed pseudo-random walk (the same on every run) through appends, truncations, purges,
/// hard-state changes, syncs and reopens.
fn random_against_model(h: &mut dyn Harness) -> CaseResult {
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let (mut start, mut last, mut term) = (LogId::default(), 0u64, 1u64);
    for step in 0..400 {
        let write = match next(10) {
            0..=4 => {
                let n = 1 + next(20);
                let write = append(last + 1..=last + n, term);
                last += n;
                write
            }
            5 if last > start.index.0 + 1 => {
                let from = start.index.0 + 1 + next(last - start.index.0);
                term += 1;
                last = from - 1;
                LogWrite::TruncateFrom(LogIndex(from))
            }
            6 if last > start.index.0 => {
                let through = start.index.0 + 1 + next(last - start.index.0);
                start = LogId {
                    index: LogIndex(through),
                    term: Term(term),
                };
                LogWrite::Purge {
                    through: start.index,
                    term: start.term,
                }
            }
            7 => {
                term += next(2);
                hard(term, Some(next(3)))
            }
            _ => {
                h.sync()?;
                if next(3) == 0 {
                    h.reopen()?;
                }
                h.compare().map_err(|e| format!("step {step}: {e}"))?;
                continue;
            }
        };
        // Purged entries keep whatever term they had; the model only checks positions.
        if let LogWrite::Purge { through, .. } = &write {
            let real_term = h
                .range(through.0, through.0)
                .map_err(|e| e.to_string())?
                .first()
                .map_or(start.term, |e| e.term);
            start.term = real_term;
            h.write(&[LogWrite::Purge {
                through: *through,
                term: real_term,
            }])?;
        } else {
            h.write(&[write])?;
        }
    }
    persist_and_reopen(h)
}
