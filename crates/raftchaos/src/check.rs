//! The verdict on a history: registers must be linearizable (the `lincheck` crate), counters
//! must be consistent with every INCR acknowledged and every read, and the final reads of every
//! key from every node must agree.
//!
//! Counters are checked as Jepsen's counter checker does, strengthened by INCR's answer: an
//! operation that observes a value (a read, or an INCR's new value) must see at least the value
//! of every operation that completed before it was called (one more for an INCR), and at most
//! the number of INCRs called before it returned; two acknowledged INCRs never return the same
//! value. These are necessary conditions of linearizability, checked in `O(n log n)`.

use crate::model::{Op, OpResult, Outcome, Record};
use lincheck::{CheckOptions, CheckResult, KvInput, KvOutput, Operation};
use std::collections::{BTreeMap, HashMap};

/// One failed check, in words, with the operations that show it.
pub type Finding = String;

/// Checks the registers with lincheck. `Err` carries the violation (or why it could not decide).
pub fn registers(history: &[Record], is_counter: impl Fn(&str) -> bool) -> Result<(), Finding> {
    let ops: Vec<Operation> = history
        .iter()
        .filter(|r| !is_counter(r.op.key()))
        .filter_map(to_lincheck)
        .collect();
    match lincheck::check_with(&ops, CheckOptions::default()) {
        CheckResult::Linearizable => Ok(()),
        CheckResult::NotLinearizable(violation) => Err(violation.to_string()),
        CheckResult::Unknown { key, reason } => Err(format!(
            "the linearizability search gave up on key {key:?}: {reason}"
        )),
        CheckResult::Invalid(e) => Err(format!("the history is malformed: {e}")),
    }
}

/// A record as lincheck sees it; `None` for operations that cannot have had an effect (a failed
/// write or any failed read).
fn to_lincheck(record: &Record) -> Option<Operation> {
    let input = match &record.op {
        Op::Get { key } => KvInput::Get { key: key.clone() },
        Op::Set { key, value } => KvInput::Put {
            key: key.clone(),
            value: value.clone(),
        },
        Op::Cas { key, expected, new } => KvInput::Cas {
            key: key.clone(),
            expected: expected.clone(),
            new: new.clone(),
        },
        Op::Incr { .. } => return None,
    };
    let (ret, output) = match &record.outcome {
        Outcome::Fail { .. } => return None,
        Outcome::Unknown { .. } => (Some(record.ret_us), None),
        Outcome::Ok(result) => (
            Some(record.ret_us),
            Some(match result {
                OpResult::Value { value } => KvOutput::Get {
                    value: value.clone(),
                },
                OpResult::Written => KvOutput::Put,
                OpResult::Swapped { swapped } => KvOutput::Cas { swapped: *swapped },
                OpResult::Counter { .. } => return None,
            }),
        ),
    };
    Some(Operation {
        id: record.id,
        client: record.client,
        call: record.call_us,
        ret,
        input,
        output,
    })
}

/// An observation of a counter: when, what value, and whether it incremented.
#[derive(Debug, Clone, Copy)]
struct Seen {
    id: u64,
    call: u64,
    ret: u64,
    value: i64,
    incr: bool,
}

/// Checks every counter key; returns the findings (empty: consistent).
pub fn counters(history: &[Record], is_counter: impl Fn(&str) -> bool) -> Vec<Finding> {
    let mut by_key: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for record in history.iter().filter(|r| is_counter(r.op.key())) {
        by_key.entry(record.op.key()).or_default().push(record);
    }
    let mut findings = Vec::new();
    for (key, records) in by_key {
        findings.extend(counter(key, &records));
    }
    findings
}

fn counter(key: &str, records: &[&Record]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut seen = Vec::new();
    // Calls of INCRs that may have happened (acknowledged or unknown), sorted.
    let mut incr_calls = Vec::new();
    for record in records {
        let incr = matches!(record.op, Op::Incr { .. });
        if incr && !matches!(record.outcome, Outcome::Fail { .. }) {
            incr_calls.push(record.call_us);
        }
        let value = match &record.outcome {
            Outcome::Ok(OpResult::Counter { value }) => *value,
            Outcome::Ok(OpResult::Value { value }) => match value.as_deref().map(str::parse) {
                None => 0,
                Some(Ok(v)) => v,
                Some(Err(_)) => {
                    findings.push(format!(
                        "counter {key}: op {} read a value that is not a number: {value:?}",
                        record.id
                    ));
                    continue;
                }
            },
            _ => continue,
        };
        seen.push(Seen {
            id: record.id,
            call: record.call_us,
            ret: record.ret_us,
            value,
            incr,
        });
    }
    incr_calls.sort_unstable();
    // Upper bound: no more increments than were called before the observation returned.
    for s in &seen {
        let possible = incr_calls.partition_point(|&call| call <= s.ret) as i64;
        if s.value > possible {
            findings.push(format!(
                "counter {key}: op {} saw {} but only {possible} INCRs had been called by then",
                s.id, s.value
            ));
        }
    }
    // Lower bound: at least what anything that finished before it saw (+1 for an INCR).
    let mut by_ret: Vec<Seen> = seen.clone();
    by_ret.sort_by_key(|s| s.ret);
    let mut by_call: Vec<Seen> = seen.clone();
    by_call.sort_by_key(|s| s.call);
    let (mut next, mut best): (usize, Option<Seen>) = (0, None);
    for s in &by_call {
        while next < by_ret.len() && by_ret[next].ret < s.call {
            if best.is_none_or(|b| by_ret[next].value > b.value) {
                best = Some(by_ret[next]);
            }
            next += 1;
        }
        if let Some(before) = best {
            let least = before.value + i64::from(s.incr);
            if s.value < least {
                findings.push(format!(
                    "counter {key}: op {} saw {} after op {} had seen {} (it must see at least {least})",
                    s.id, s.value, before.id, before.value
                ));
            }
        }
    }
    // Each acknowledged INCR took its own step.
    let mut returned: HashMap<i64, u64> = HashMap::new();
    for s in seen.iter().filter(|s| s.incr) {
        if let Some(other) = returned.insert(s.value, s.id) {
            findings.push(format!(
                "counter {key}: INCRs {other} and {} both returned {}",
                s.id, s.value
            ));
        }
    }
    findings
}

/// The final reads: every node must have answered every key, all alike.
pub fn agreement(finals: &[Record]) -> Vec<Finding> {
    let mut by_key: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for record in finals {
        by_key.entry(record.op.key()).or_default().push(record);
    }
    let mut findings = Vec::new();
    for (key, records) in by_key {
        let answers: Vec<(u64, Option<&Option<String>>)> = records
            .iter()
            .map(|r| match &r.outcome {
                Outcome::Ok(OpResult::Value { value }) => (r.node, Some(value)),
                _ => (r.node, None),
            })
            .collect();
        for (node, answer) in &answers {
            if answer.is_none() {
                findings.push(format!("final read of {key} at node {node} failed"));
            }
        }
        let values: Vec<_> = answers.iter().filter_map(|(_, a)| *a).collect();
        if values.windows(2).any(|w| w[0] != w[1]) {
            findings.push(format!(
                "nodes disagree on {key}: {}",
                answers
                    .iter()
                    .map(|(n, a)| format!("node {n} = {a:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    findings
}

/// Every acknowledged INCR is counted in the final value (the final reads come after every
/// operation, so a lower value lost an acknowledged write).
pub fn acknowledged_increments(history: &[Record], finals: &[Record]) -> Vec<Finding> {
    let mut acked: BTreeMap<&str, i64> = BTreeMap::new();
    for record in history {
        if let (Op::Incr { key }, Outcome::Ok(_)) = (&record.op, &record.outcome) {
            *acked.entry(key).or_default() += 1;
        }
    }
    let mut findings = Vec::new();
    for record in finals {
        let Some(&count) = acked.get(record.op.key()) else {
            continue;
        };
        if let Outcome::Ok(OpResult::Value { value }) = &record.outcome {
            let value: i64 = value.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
            if value < count {
                findings.push(format!(
                    "counter {} reads {value} at node {} after {count} acknowledged INCRs: acknowledged writes were lost",
                    record.op.key(),
                    record.node
                ));
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, call: u64, ret: u64, op: Op, outcome: Outcome) -> Record {
        Record {
            id,
            client: id,
            node: 1,
            call_us: call,
            ret_us: ret,
            op,
            outcome,
        }
    }
    fn incr(id: u64, call: u64, ret: u64, value: Option<i64>) -> Record {
        let outcome = match value {
            Some(value) => Outcome::Ok(OpResult::Counter { value }),
            None => Outcome::Unknown { error: "t".into() },
        };
        rec(id, call, ret, Op::Incr { key: "n".into() }, outcome)
    }
    fn read(id: u64, call: u64, ret: u64, value: Option<&str>, key: &str) -> Record {
        rec(
            id,
            call,
            ret,
            Op::Get { key: key.into() },
            Outcome::Ok(OpResult::Value {
                value: value.map(str::to_owned),
            }),
        )
    }
    fn is_n(key: &str) -> bool {
        key == "n"
    }

    #[test]
    fn a_consistent_counter_passes() {
        let history = vec![
            incr(1, 0, 10, Some(1)),
            incr(2, 5, 20, None),
            read(3, 12, 14, Some("1"), "n"),
            incr(4, 15, 30, Some(3)),
            read(5, 31, 32, Some("3"), "n"),
        ];
        assert_eq!(counters(&history, is_n), Vec::<String>::new());
    }

    #[test]
    fn counter_anomalies_are_found() {
        // A read going back in time.
        let stale = vec![incr(1, 0, 10, Some(1)), read(2, 11, 12, None, "n")];
        assert_eq!(
            counters(&stale, is_n).len(),
            1,
            "{:?}",
            counters(&stale, is_n)
        );
        // More than was ever called.
        let phantom = vec![incr(1, 0, 10, Some(1)), read(2, 11, 12, Some("2"), "n")];
        assert_eq!(counters(&phantom, is_n).len(), 1);
        // Two acknowledged INCRs with one value.
        let twice = vec![incr(1, 0, 10, Some(1)), incr(2, 0, 10, Some(1))];
        assert_eq!(counters(&twice, is_n).len(), 1);
        // An INCR after a read of 1 must return at least 2.
        let behind = vec![
            incr(1, 0, 5, Some(1)),
            read(2, 6, 7, Some("1"), "n"),
            incr(3, 8, 9, Some(1)),
        ];
        assert!(!counters(&behind, is_n).is_empty());
    }

    #[test]
    fn lost_increments_and_disagreement_are_found() {
        let history = vec![incr(1, 0, 10, Some(1)), incr(2, 11, 20, Some(2))];
        let finals = vec![read(3, 30, 31, Some("1"), "n")];
        assert_eq!(acknowledged_increments(&history, &finals).len(), 1);
        let mut other = read(4, 30, 31, Some("2"), "n");
        other.node = 2;
        assert_eq!(agreement(&[finals[0].clone(), other.clone()]).len(), 1);
        assert!(agreement(&[other.clone(), other]).is_empty());
    }

    #[test]
    fn registers_go_through_lincheck() {
        let put = |id, call, ret, value: &str| {
            rec(
                id,
                call,
                ret,
                Op::Set {
                    key: "r".into(),
                    value: value.into(),
                },
                Outcome::Ok(OpResult::Written),
            )
        };
        let good = vec![put(1, 0, 10, "a"), read(2, 11, 12, Some("a"), "r")];
        assert!(registers(&good, is_n).is_ok());
        let stale = vec![
            put(1, 0, 10, "a"),
            put(2, 11, 20, "b"),
            read(3, 21, 22, Some("a"), "r"),
        ];
        assert!(registers(&stale, is_n).is_err());
        // A failed write is taken at its word: had it happened, the read would be explained.
        let failed = vec![
            rec(
                1,
                0,
                10,
                Op::Set {
                    key: "r".into(),
                    value: "a".into(),
                },
                Outcome::Fail { error: "x".into() },
            ),
            read(2, 11, 12, Some("a"), "r"),
        ];
        assert!(registers(&failed, is_n).is_err());
    }
}
