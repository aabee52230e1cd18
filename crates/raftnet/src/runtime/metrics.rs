//! Counters, gauges and histograms a node keeps, rendered as Prometheus text by the server.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A count that only grows (from 0 at start; not kept across restarts).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that is set, not accumulated (0 until first set).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Replaces the value.
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
    /// The value last set.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Latency buckets in microseconds (upper bounds), from 50 µs to 5 s.
const BUCKETS_MICROS: [u64; 16] = [
    50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 102_400, 204_800, 409_600,
    1_000_000, 5_000_000,
];

/// A fixed-bucket histogram of durations (lock-free).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_MICROS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Counts one duration (in whole microseconds; one over 5 s counts in the sum and count
    /// but in no bucket, as Prometheus' `+Inf` does).
    pub fn observe(&self, duration: Duration) {
        let micros = duration.as_micros().min(u64::MAX as u128) as u64;
        if let Some(i) = BUCKETS_MICROS.iter().position(|&b| micros <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Durations observed so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_MICROS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Everything a node measures about itself.
#[derive(Debug, Default)]
pub struct Metrics {
    /// The node's current term.
    pub term: Gauge,
    /// 1 while this node leads, else 0.
    pub is_leader: Gauge,
    /// Highest log index known committed.
    pub commit_index: Gauge,
    /// Highest log index applied to the state machine.
    pub applied_index: Gauge,
    /// Writes this node's clients handed to the core.
    pub proposals: Counter,
    /// Linearizable reads this node's clients handed to the core.
    pub reads: Counter,
    /// Times this node became a candidate.
    pub elections_started: Counter,
    /// Elections this node won.
    pub elections_won: Counter,
    /// Durable writes of the log (one `fdatasync` each, for a group of batches).
    pub fsyncs: Counter,
    /// Ticks the raft loop gave the core.
    pub ticks: Counter,
    /// Messages refused because their sender claimed to lead a term another node leads (the
    /// core's `Event::ConflictingLeader`); each also disconnected that peer.
    pub conflicting_leaders: Counter,
    /// From proposal to commit, at the node that took the command.
    pub commit_latency: Histogram,
    /// One group-commit write plus its `fdatasync`.
    pub fsync_latency: Histogram,
}

impl Metrics {
    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauges = [
            ("raft_term", "Current term.", self.term.get()),
            (
                "raft_is_leader",
                "1 if this node leads.",
                self.is_leader.get(),
            ),
            (
                "raft_commit_index",
                "Highest index known committed.",
                self.commit_index.get(),
            ),
            (
                "raft_applied_index",
                "Highest index applied to the state machine.",
                self.applied_index.get(),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let counters = [
            (
                "raft_proposals_total",
                "Commands proposed at this node.",
                self.proposals.get(),
            ),
            (
                "raft_reads_total",
                "Linearizable reads started at this node.",
                self.reads.get(),
            ),
            (
                "raft_elections_started_total",
                "Elections this node started (as candidate).",
                self.elections_started.get(),
            ),
            (
                "raft_elections_won_total",
                "Elections this node won.",
                self.elections_won.get(),
            ),
            (
                "raft_fsyncs_total",
                "Group-commit syncs of the log.",
                self.fsyncs.get(),
            ),
            (
                "raft_ticks_total",
                "Timer ticks given to the consensus core.",
                self.ticks.get(),
            ),
            (
                "raft_conflicting_leaders_total",
                "Messages from a second leader of a term another node leads (peer disconnected).",
                self.conflicting_leaders.get(),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        self.commit_latency.render(
            "raft_append_latency_seconds",
            "From proposal to commit, at the node that took the command.",
            &mut out,
        );
        self.fsync_latency.render(
            "raft_fsync_latency_seconds",
            "One group-commit write plus fdatasync.",
            &mut out,
        );
        out
    }
}
