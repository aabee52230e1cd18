//! The randomized simulator: determinism, a short clean batch, and the saved regressions.

use raftsim::fuzz::{replay, run_seed, FuzzOptions};
use raftsim::scenario;

#[test]
fn the_same_seed_gives_the_same_run() {
    let options = FuzzOptions::new(3, 400);
    for seed in [3, 41] {
        let (a, b) = (run_seed(seed, options), run_seed(seed, options));
        assert_eq!(a.commands, b.commands);
        assert_eq!(a.violation, b.violation);
        assert_eq!(a.operations, b.operations);
    }
}

#[test]
fn a_short_batch_passes_every_check() {
    for nodes in [3, 5] {
        let options = FuzzOptions::new(nodes, 600);
        for seed in 0..12 {
            let report = run_seed(seed, options);
            assert!(
                report.operations > 0,
                "seed {seed} issued no client operation"
            );
            if let Some(v) = report.violation {
                panic!("seed {seed} ({nodes} nodes): {v}");
            }
        }
    }
}

#[test]
fn runs_include_every_kind_of_fault() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..40 {
        for command in run_seed(seed, FuzzOptions::new(3, 1000)).commands {
            if let Some(line) = command.to_line() {
                seen.insert(line.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    }
    for kind in [
        "deliver",
        "drop",
        "duplicate",
        "send",
        "tick",
        "command",
        "read",
        "crash",
        "restart",
        "split",
        "heal",
        "cut",
        "restore-links",
        "disk",
        "sync",
        "transfer",
        "snapshot",
        "member",
    ] {
        assert!(seen.contains(kind), "no `{kind}` in 40 seeds: {seen:?}");
    }
}

#[test]
fn saved_regressions_pass_every_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/regressions");
    let mut checked = 0;
    for file in std::fs::read_dir(&dir).expect("scenarios/regressions exists") {
        let path = file.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("scn") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let parsed = scenario::parse(&path.display().to_string(), &text).expect("parses");
        let commands: Vec<_> = parsed.steps.into_iter().map(|s| s.command).collect();
        if let Some(v) = replay(&parsed.settings, &commands) {
            panic!("{}: {v}", path.display());
        }
        checked += 1;
    }
    assert!(checked > 0);
}

/// Lease reads rest on bounded clock drift (`Config::lease_ticks`). In the labelled mode whose
/// clocks drift beyond that bound, the checker finds the stale reads that follow; within the
/// bound (every other test here), it finds none.
#[test]
fn beyond_the_lease_drift_bound_stale_reads_are_found() {
    let options = FuzzOptions::new(3, 1000).with_lease_beyond_drift_bound();
    let found = (0..100).find_map(|seed| {
        run_seed(seed, options)
            .violation
            .filter(|v| v.property == "linearizability")
            .map(|v| (seed, v))
    });
    assert!(
        found.is_some(),
        "no stale read found in 100 seeds beyond the lease's drift bound"
    );
}
