//! Performance sanity, measured in search steps rather than time so that it
//! is deterministic: realistic simulator-sized histories must be decided
//! well within the default budget.

mod common;

use common::{generate, GenConfig};
use lincheck::{check, check_with, CheckOptions, CheckResult, KvOutput};

fn simulator_sized(hot_key_per_mille: u64) -> GenConfig {
    GenConfig {
        clients: 8,
        keys: 100,
        ops: 10_000,
        unknown_per_mille: 20,
        max_latency: 10,
        hot_key_per_mille,
    }
}

/// A hundredth of the default: decisions must not depend on the budget
/// being generous.
const TIGHT: CheckOptions = CheckOptions {
    max_steps_per_key: CheckOptions::DEFAULT_MAX_STEPS_PER_KEY / 100,
};

#[test]
fn ten_thousand_operations_over_a_hundred_keys_are_linearizable() {
    let history = generate(1, simulator_sized(0));
    assert_eq!(history.len(), 10_000);
    assert!(matches!(check(&history), CheckResult::Linearizable));
    assert!(matches!(
        check_with(&history, TIGHT),
        CheckResult::Linearizable
    ));
}

#[test]
fn a_hot_key_with_thousands_of_operations_is_linearizable() {
    // About 3,000 of the operations hit one key, 8 clients concurrently.
    let history = generate(2, simulator_sized(300));
    let on_hot_key = history.iter().filter(|op| op.input.key() == "k0").count();
    assert!(on_hot_key > 2_500, "{on_hot_key} operations on k0");
    assert!(matches!(check(&history), CheckResult::Linearizable));
}

#[test]
fn a_late_corrupted_read_in_a_large_history_is_found() {
    let mut history = generate(3, simulator_sized(0));
    let late_read = history
        .iter()
        .rposition(|op| matches!(op.output, Some(KvOutput::Get { .. })))
        .expect("the generator produces reads");
    history[late_read].output = Some(KvOutput::Get {
        value: Some("never-written".into()),
    });
    let key = history[late_read].input.key().to_owned();
    match check(&history) {
        CheckResult::NotLinearizable(violation) => {
            assert_eq!(violation.key, key);
            assert_eq!(violation.blocking_op, history[late_read].id);
        }
        other => panic!("expected a violation on {key}, got {other:?}"),
    }
}
