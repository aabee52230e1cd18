//! The checkers catch known protocol bugs: with each mutation switched on, some seed of a bounded
//! batch of randomized runs fails, or the regression scenario of the defect fails; with none
//! switched on, the same seeds and scenarios pass. Every mutation is caught by one or both
//! (`docs/testing.md` lists which check catches which).
#![cfg(feature = "mutations")]

use raftengine::Mutation;
use raftsim::fuzz::{run_seed, FuzzOptions};

/// Seeds each mutation gets to show itself (alternating 3- and 5-node clusters).
const SEEDS: u64 = 600;

fn first_failure(mutation: Option<Mutation>) -> Option<(u64, String)> {
    (0..SEEDS).find_map(|seed| {
        let nodes = if seed.is_multiple_of(2) { 3 } else { 5 };
        let options = FuzzOptions::new(nodes, 1500).with_mutation(mutation);
        run_seed(seed, options)
            .violation
            .map(|v| (seed, v.to_string()))
    })
}

#[test]
fn the_same_seeds_pass_without_a_mutation() {
    assert_eq!(first_failure(None), None);
}

/// The mutations the randomized runs catch. (The others need an interleaving too rare for a
/// bounded batch, such as a `TimeoutNow` delayed past an aborted transfer: their regression
/// scenarios catch them, in `SCENARIO_MUTATIONS`.)
const FUZZ_MUTATIONS: [Mutation; 11] = [
    Mutation::CommitPreviousTerm,
    Mutation::VoteNotPersisted,
    Mutation::TwoVotesPerTerm,
    Mutation::ApplyBeforeCommit,
    Mutation::TruncateCommitted,
    Mutation::ReadWithoutQuorum,
    Mutation::ForwardedLostInSnapshot,
    Mutation::ChunkPerHeartbeat,
    Mutation::RemovedForever,
    Mutation::UncheckedPersisted,
    Mutation::IgnoreDataLoss,
];

#[test]
fn every_mutation_has_a_check_that_catches_it() {
    let checked: Vec<Mutation> = FUZZ_MUTATIONS
        .iter()
        .chain(SCENARIO_MUTATIONS.iter().map(|(m, _)| m))
        .copied()
        .collect();
    let unchecked: Vec<Mutation> = Mutation::ALL
        .into_iter()
        .filter(|m| !checked.contains(m))
        .collect();
    assert!(unchecked.is_empty(), "no check for {unchecked:?}");
}

#[test]
fn every_mutation_is_caught_within_the_batch() {
    let mut report = Vec::new();
    let mut missed = Vec::new();
    for mutation in FUZZ_MUTATIONS {
        match first_failure(Some(mutation)) {
            Some((seed, violation)) => {
                report.push(format!("{mutation:?}: seed {seed}: {violation}"))
            }
            None => missed.push(mutation),
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(missed.is_empty(), "not caught in {SEEDS} seeds: {missed:?}");
}

#[test]
fn a_failure_shrinks_to_a_shorter_run_that_still_fails() {
    let options = FuzzOptions::new(3, 1500).with_mutation(Some(Mutation::TwoVotesPerTerm));
    let (seed, report) = (0..SEEDS)
        .map(|seed| (seed, run_seed(seed, options)))
        .find(|(_, r)| r.violation.is_some())
        .expect("the mutation is caught");
    let violation = report.violation.expect("checked above");
    let (shrunk, again) =
        raftsim::fuzz::shrink(&report.settings, &report.commands, &violation, 2000);
    assert!(
        shrunk.len() < report.commands.len() / 2,
        "seed {seed}: {} -> {}",
        report.commands.len(),
        shrunk.len()
    );
    assert_eq!(again.property, violation.property);
    assert_eq!(
        raftsim::fuzz::replay(&report.settings, &shrunk).map(|v| v.property),
        Some(violation.property)
    );
}

/// The regression scenario of each defect the safety review found: with the defect put back
/// (its mutation), the scenario fails; without it, it passes (`raftsim check` runs it).
const SCENARIO_MUTATIONS: [(Mutation, &str); 11] = [
    (
        Mutation::LeaseDuringTransfer,
        "reads/lease_read_refused_once_transfer_starts.scn",
    ),
    (
        Mutation::LeaseDuringTransfer,
        "transfer/late_timeout_now_ignored_after_abort.scn",
    ),
    (
        Mutation::StaleTimeoutNow,
        "transfer/late_timeout_now_ignored_after_abort.scn",
    ),
    (
        Mutation::IgnoreDataLoss,
        "persistence/lost_synced_entries_repaired_before_voting.scn",
    ),
    (
        Mutation::UncheckedPersisted,
        "persistence/driver_misuse_and_extreme_values_refused.scn",
    ),
    (
        Mutation::VoteRightAfterRestart,
        "reads/lease_holds_across_a_follower_restart.scn",
    ),
    (
        Mutation::ForwardedLostInSnapshot,
        "commands/forwarded_command_committed_in_snapshot.scn",
    ),
    (
        Mutation::ChunkPerHeartbeat,
        "snapshots/snapshot_chunks_one_in_flight.scn",
    ),
    (
        Mutation::SnapshotRestartsOnCompaction,
        "snapshots/snapshot_chunks_one_in_flight.scn",
    ),
    (
        Mutation::RemovedForever,
        "membership/removed_node_added_back.scn",
    ),
    (
        Mutation::AnswersAcrossDataLoss,
        "regressions/ghost_acknowledgement_after_data_loss.scn",
    ),
];

#[test]
fn each_regression_scenario_fails_with_its_defect_put_back() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    // A scenario fails when one of its steps or expectations does, or when a replay with every
    // check of the randomized runs finds a violation (the scenarios the fuzzer found carry no
    // expectations of their own).
    let fails = |scenario: &raftsim::scenario::Scenario| {
        let commands: Vec<_> = scenario.steps.iter().map(|s| s.command.clone()).collect();
        raftsim::runner::run(scenario).1.is_err()
            || raftsim::fuzz::replay(&scenario.settings, &commands).is_some()
    };
    let mut passed = Vec::new();
    for (mutation, file) in SCENARIO_MUTATIONS {
        let path = root.join(file);
        let text = std::fs::read_to_string(&path).expect("scenario file");
        let mut scenario = raftsim::scenario::parse(file, &text).expect("scenario parses");
        assert!(!fails(&scenario), "{file} passes as it is");
        scenario.settings.mutation = Some(mutation);
        if !fails(&scenario) {
            passed.push(format!("{file} with {mutation:?}"));
        }
    }
    assert!(passed.is_empty(), "not caught: {passed:?}");
}
