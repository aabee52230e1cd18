//! Small hand-written histories with known verdicts.

mod common;

use common::{cas, delete, get, put, Builder};
use lincheck::{
    check, check_with, validate, CheckOptions, CheckResult, HistoryError, KvOutput, Operation,
    Violation,
};

fn assert_linearizable(history: &[Operation]) {
    match check(history) {
        CheckResult::Linearizable => {}
        CheckResult::NotLinearizable(violation) => panic!("unexpected violation:\n{violation}"),
        other => panic!("expected Linearizable, got {other:?}"),
    }
}

fn expect_violation(history: &[Operation]) -> Violation {
    match check(history) {
        CheckResult::NotLinearizable(violation) => violation,
        other => panic!("expected NotLinearizable, got {other:?}"),
    }
}

// ---- linearizable ----

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn sequential_history_is_linearizable() {
    let history = Builder::new()
        .get(0, 1, "x", None)
        .put(2, 3, "x", "1")
        .get(4, 5, "x", Some("1"))
        .put(6, 7, "x", "2")
        .get(8, 9, "x", Some("2"))
        .delete(10, 11, "x", true)
        .get(12, 13, "x", None)
        .build();
    assert_linearizable(&history);
}

#[test]
fn concurrent_writes_may_be_read_in_either_order() {
    for seen in ["a", "b"] {
        let history = Builder::new()
            .put(0, 10, "x", "a")
            .put(0, 10, "x", "b")
            .get(5, 15, "x", Some(seen))
            .get(16, 17, "x", Some(seen))
            .build();
        assert_linearizable(&history);
    }
}

#[test]
fn read_concurrent_with_a_write_may_see_old_or_new_value() {
    for seen in [None, Some("1")] {
        let history = Builder::new()
            .put(0, 10, "x", "1")
            .get(2, 3, "x", seen)
            .build();
        assert_linearizable(&history);
    }
}

#[test]
fn cas_success_and_failure() {
    let history = Builder::new()
        .cas(0, 1, "x", None, "1", true) // absent -> "1"
        .cas(2, 3, "x", None, "9", false) // no longer absent
        .cas(4, 5, "x", Some("1"), "2", true)
        .cas(6, 7, "x", Some("1"), "3", false) // stale expectation
        .get(8, 9, "x", Some("2"))
        .build();
    assert_linearizable(&history);
}

#[test]
fn concurrent_cas_from_same_value_one_wins() {
    let history = Builder::new()
        .put(0, 1, "x", "0")
        .cas(2, 6, "x", Some("0"), "a", false)
        .cas(3, 5, "x", Some("0"), "b", true)
        .get(7, 8, "x", Some("b"))
        .build();
    assert_linearizable(&history);
}

#[test]
fn delete_reports_whether_the_key_existed() {
    let history = Builder::new()
        .delete(0, 1, "x", false)
        .put(2, 3, "x", "a")
        .delete(4, 5, "x", true)
        .delete(6, 7, "x", false)
        .get(8, 9, "x", None)
        .build();
    assert_linearizable(&history);
}

#[test]
fn unknown_outcome_write_observed_later() {
    let history = Builder::new()
        .unknown(0, put("x", "a"))
        .get(5, 6, "x", Some("a"))
        .build();
    assert_linearizable(&history);
}

#[test]
fn timed_out_write_may_take_effect_after_the_client_gave_up() {
    let history = Builder::new()
        .timed_out(0, 3, put("x", "a"))
        .get(4, 5, "x", None)
        .get(10, 11, "x", Some("a"))
        .build();
    assert_linearizable(&history);
}

#[test]
fn unknown_outcome_write_nobody_observes() {
    let history = Builder::new()
        .unknown(0, put("x", "a"))
        .unknown(1, cas("x", None, "b"))
        .unknown(2, delete("x"))
        .unknown(3, get("x"))
        .get(5, 6, "x", None)
        .get(7, 8, "x", None)
        .build();
    assert_linearizable(&history);
}

#[test]
fn unknown_outcome_cas_applies_only_if_expected_matches() {
    // The CAS may have happened (after the put) and left "b".
    let history = Builder::new()
        .put(0, 1, "x", "a")
        .unknown(2, cas("x", Some("a"), "b"))
        .get(5, 6, "x", Some("b"))
        .build();
    assert_linearizable(&history);
}

#[test]
fn return_at_same_time_as_call_is_concurrent() {
    // put returns at 5 and get is called at 5: not ordered, so the get may
    // be linearized before the put.
    let history = Builder::new()
        .put(0, 5, "x", "1")
        .get(5, 6, "x", None)
        .build();
    assert_linearizable(&history);
}

#[test]
fn instantaneous_operations_are_allowed() {
    let history = Builder::new()
        .put(3, 3, "x", "1")
        .get(3, 3, "x", Some("1"))
        .build();
    assert_linearizable(&history);
}

#[test]
fn keys_are_independent() {
    // Interleaved in time but on different keys: each key alone is fine.
    let history = Builder::new()
        .put(0, 1, "x", "1")
        .put(0, 1, "y", "2")
        .get(2, 3, "x", Some("1"))
        .get(2, 3, "y", Some("2"))
        .get(2, 3, "z", None)
        .build();
    assert_linearizable(&history);
}

// ---- not linearizable ----

#[test]
fn stale_read_after_completed_write() {
    let history = Builder::new()
        .put(0, 1, "x", "1")
        .put(2, 3, "x", "2")
        .get(4, 5, "x", Some("1"))
        .build();
    let violation = expect_violation(&history);
    assert_eq!(violation.key, "x");
    assert_eq!(violation.longest_prefix, vec![1, 2]);
    assert_eq!(violation.value_after_prefix.as_deref(), Some("2"));
    assert_eq!(violation.blocking_op, 3);
}

#[test]
fn read_of_a_value_never_written() {
    let history = Builder::new()
        .put(0, 1, "x", "1")
        .get(2, 3, "x", Some("ghost"))
        .build();
    let violation = expect_violation(&history);
    assert_eq!(violation.blocking_op, 2);
}

#[test]
fn lost_update_two_cas_succeed_from_same_value() {
    let history = Builder::new()
        .put(0, 1, "x", "0")
        .cas(2, 6, "x", Some("0"), "a", true)
        .cas(3, 5, "x", Some("0"), "b", true)
        .build();
    expect_violation(&history);
}

#[test]
fn read_going_back_in_time() {
    let history = Builder::new()
        .put(0, 1, "x", "1")
        .put(2, 10, "x", "2")
        .get(3, 4, "x", Some("2"))
        .get(5, 6, "x", Some("1"))
        .build();
    expect_violation(&history);
}

#[test]
fn delete_reported_as_existed_on_absent_key() {
    let history = Builder::new().delete(0, 1, "x", true).build();
    expect_violation(&history);

    let history = Builder::new()
        .put(0, 1, "x", "a")
        .delete(2, 3, "x", true)
        .delete(4, 5, "x", true)
        .build();
    expect_violation(&history);
}

#[test]
fn unknown_outcome_write_observed_before_its_call() {
    let history = Builder::new()
        .get(0, 1, "x", Some("a"))
        .unknown(5, put("x", "a"))
        .build();
    expect_violation(&history);
}

#[test]
fn return_strictly_before_call_orders_operations() {
    // put returns at 4, get is called at 5: the get must see the put.
    let history = Builder::new()
        .put(0, 4, "x", "1")
        .get(5, 6, "x", None)
        .build();
    expect_violation(&history);
}

#[test]
fn failed_cas_that_should_have_succeeded() {
    let history = Builder::new()
        .put(0, 1, "x", "a")
        .cas(2, 3, "x", Some("a"), "b", false)
        .build();
    expect_violation(&history);
}

#[test]
fn violation_is_reported_on_the_failing_key_and_explained() {
    let history = Builder::new()
        .put(0, 1, "a", "1")
        .put(0, 1, "b", "1")
        .put(2, 3, "b", "2")
        .get(4, 5, "b", Some("1"))
        .get(4, 5, "a", Some("1"))
        .build();
    let violation = expect_violation(&history);
    assert_eq!(violation.key, "b");
    assert_eq!(
        violation
            .operations
            .iter()
            .map(|op| op.id)
            .collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    let report = violation.to_string();
    assert!(
        report.contains("key \"b\" is not linearizable:"),
        "{report}"
    );
    assert!(report.contains("2 of 3 operations"), "{report}");
    assert!(report.contains("leaving the key \"2\""), "{report}");
    assert!(
        report.contains("#4 client 4 [4, 5] get(\"b\") -> \"1\""),
        "{report}"
    );
}

#[test]
fn violation_wins_over_exhausted_budget_on_another_key() {
    let mut builder = Builder::new();
    // Key "a": plenty of concurrency so a tiny budget cannot finish it.
    for i in 0..6 {
        builder.put(0, 100, "a", &i.to_string());
    }
    builder.get(101, 102, "a", Some("0"));
    // Key "b": obviously wrong.
    builder.get(0, 1, "b", Some("ghost"));
    let history = builder.build();
    let options = CheckOptions {
        max_steps_per_key: 5,
    };
    match check_with(&history, options) {
        CheckResult::NotLinearizable(violation) => assert_eq!(violation.key, "b"),
        other => panic!("expected violation on b, got {other:?}"),
    }
}

#[test]
fn exhausted_budget_gives_unknown_not_a_hang() {
    let mut builder = Builder::new();
    for i in 0..6 {
        builder.put(0, 100, "a", &i.to_string());
    }
    builder.get(101, 102, "a", Some("0"));
    let history = builder.build();
    let options = CheckOptions {
        max_steps_per_key: 5,
    };
    match check_with(&history, options) {
        CheckResult::Unknown { key, reason } => {
            assert_eq!(key, "a");
            assert!(reason.contains("5 steps"), "{reason}");
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
    // With the default budget the same history is decided.
    assert!(check(&history).is_linearizable());
}

#[test]
fn zero_budget_is_unknown_unless_nothing_needs_checking() {
    let options = CheckOptions {
        max_steps_per_key: 0,
    };
    let history = Builder::new().put(0, 1, "x", "1").build();
    assert!(matches!(
        check_with(&history, options),
        CheckResult::Unknown { .. }
    ));
    let only_unknown = Builder::new().unknown(0, put("x", "1")).build();
    assert!(check_with(&only_unknown, options).is_linearizable());
}

// ---- invalid histories ----

#[test]
fn return_before_call_is_invalid() {
    let history = Builder::new().put(5, 4, "x", "1").build();
    assert!(matches!(
        validate(&history),
        Err(HistoryError::ReturnBeforeCall {
            id: 1,
            call: 5,
            ret: 4
        })
    ));
    assert!(matches!(
        check(&history),
        CheckResult::Invalid(HistoryError::ReturnBeforeCall { .. })
    ));
}

#[test]
fn duplicate_ids_are_invalid() {
    let mut history = Builder::new()
        .put(0, 1, "x", "1")
        .get(2, 3, "x", Some("1"))
        .build();
    history[1].id = 1;
    assert!(matches!(
        check(&history),
        CheckResult::Invalid(HistoryError::DuplicateId { id: 1 })
    ));
}

#[test]
fn output_of_another_kind_is_invalid() {
    let mut history = Builder::new().put(0, 1, "x", "1").build();
    history[0].output = Some(KvOutput::Cas { swapped: true });
    let error = validate(&history).expect_err("mismatch must be rejected");
    assert!(matches!(
        error,
        HistoryError::OutputMismatch {
            id: 1,
            input: "put",
            output: "cas"
        }
    ));
    assert_eq!(
        error.to_string(),
        "operation 1: a put operation cannot produce a cas output"
    );
}

#[test]
fn output_without_return_time_is_invalid() {
    let mut history = Builder::new().put(0, 1, "x", "1").build();
    history[0].ret = None;
    assert!(matches!(
        check(&history),
        CheckResult::Invalid(HistoryError::OutputWithoutReturn { id: 1 })
    ));
}
