//! Runs a parsed scenario on a [`Cluster`] and returns its trace.

use crate::cluster::{Block, Cluster, CommandOutcome, HarnessError};
use crate::disk::SyncMode;
use crate::recorder::config_text;
use crate::scenario::{node_ref, Command, Scenario, ScenarioError};
use crate::trace::Trace;
use raftengine::RoleKind;

/// Runs every step. On failure the trace recorded so far is returned beside the error, so a
/// failing scenario can still be read.
pub fn run(scenario: &Scenario) -> (Trace, Result<(), ScenarioError>) {
    let fail = |line: usize, message: String| ScenarioError {
        file: scenario.file.clone(),
        line,
        message,
    };
    let mut cluster = match Cluster::new(&scenario.settings) {
        Ok(c) => c,
        Err(e) => return (Trace::default(), Err(fail(1, e.to_string()))),
    };
    let mut result = Ok(());
    for step in &scenario.steps {
        if let Err(message) = execute(&mut cluster, &step.command) {
            result = Err(fail(step.line, message));
            break;
        }
        if let Some((node, e)) = cluster.step_errors.first() {
            result = Err(fail(step.line, format!("N-{node} refused a message: {e}")));
            break;
        }
        if let Some(problem) = harness_problem(&cluster) {
            result = Err(fail(step.line, problem));
            break;
        }
    }
    let mut trace = std::mem::take(&mut cluster.recorder.trace);
    trace.name = scenario.name.clone();
    trace.source = scenario.source.clone();
    trace.description = scenario.description.join("\n");
    trace.features = scenario.features.clone();
    trace.node_count = scenario.settings.nodes;
    (trace, result)
}

/// A report the driver made that a node refused, or bad input a node did not refuse cleanly.
pub(crate) fn harness_problem(cluster: &Cluster) -> Option<String> {
    if let Some((node, e)) = cluster.driver_errors.first() {
        return Some(format!("N-{node} refused the driver's report: {e}"));
    }
    let (node, what) = cluster.misuse_failures.first()?;
    Some(format!("N-{node}: {what}"))
}

pub(crate) fn execute(c: &mut Cluster, command: &Command) -> Result<(), String> {
    let h = |r: Result<(), HarnessError>| r.map_err(|e| e.to_string());
    match command {
        Command::Section { title } => c.recorder.start_section(title),
        Command::SectionText(text) => {
            let section = c.recorder.current_section();
            if !section.description.is_empty() {
                section.description.push('\n');
            }
            section.description.push_str(text);
        }
        Command::SectionFeatures(f) => c
            .recorder
            .current_section()
            .features
            .extend(f.iter().cloned()),
        Command::Campaign { node, transfer } => h(c.campaign(*node, *transfer))?,
        Command::Follower(node) => h(c.force_follower(*node))?,
        Command::Transfer { node, target } => h(c.transfer(*node, *target))?,
        Command::SetTerm { node, term } => h(c.force_term(*node, *term))?,
        Command::Heartbeat(node) => h(c.heartbeat(*node))?,
        Command::ClearQueues(node) => h(c.clear_queues(*node))?,
        Command::Send { node, all: false } => moved(c.forward_one(*node), "forward")?,
        Command::Send { node, all: true } => h(c.forward_all(*node).map(drop))?,
        Command::Deliver { node, all: false } => moved(c.handle_one(*node), "handle")?,
        Command::Deliver { node, all: true } => {
            while c.handle_one(*node).map_err(|e| e.to_string())? {}
        }
        Command::Pump(trigger) => h(c.pump(trigger.as_ref()).map(drop))?,
        Command::Run(trigger) => h(c.run(trigger.as_ref()).map(drop))?,
        Command::Submit { node, command } => h(c.submit(*node, command).map(drop))?,
        Command::WaitResult(node) => h(c.wait_result(*node).map(drop))?,
        Command::Member { node, change } => {
            h(c.change_membership(*node, change.to_core()).map(drop))?
        }
        Command::Read { node, key: None } => h(c.read(*node).map(drop))?,
        Command::Read {
            node,
            key: Some(key),
        } => h(c.read_key(*node, key).map(drop))?,
        Command::DeliverAt { node, at } => h(c.handle_at(*node, *at).map(drop))?,
        Command::DropAt { node, at } => h(c.drop_at(*node, *at).map(drop))?,
        Command::DuplicateAt { node, at } => h(c.duplicate_at(*node, *at).map(drop))?,
        Command::Tick(node) => h(c.tick(*node))?,
        Command::Snapshot(node) => h(c.snapshot(*node))?,
        Command::CutLink { from, to } => h(c.cut_link(*from, *to))?,
        Command::RestoreLinks => c.restore_links(),
        Command::Crash(node) => h(c.crash(*node))?,
        Command::CrashLosing { node, from } => {
            h(c.crash_losing(*node, raftengine::LogIndex(*from)))?
        }
        Command::InjectExtreme(node) => h(c.inject_extreme(*node))?,
        Command::Misuse(node) => h(c.misuse(*node))?,
        Command::Restart { node, empty } => h(c.restart(*node, *empty))?,
        Command::ClearBroken(node) => h(c.clear_broken(*node))?,
        Command::Disk { node, manual } => {
            let mode = if *manual {
                SyncMode::Manual
            } else {
                SyncMode::Immediate
            };
            h(c.set_disk(*node, mode))?
        }
        Command::Sync(node) => h(c.sync(*node))?,
        Command::Block { node, drop } => {
            h(c.block(*node, if *drop { Block::Drop } else { Block::Hold }))?
        }
        Command::Unblock(node) => h(c.block(*node, Block::None))?,
        Command::Split(segments) => h(c.split(segments.clone()))?,
        Command::Heal => h(c.heal())?,
        Command::Timers { nodes, on, range } => {
            let all: Vec<usize> = if nodes.is_empty() {
                (1..=c.node_count()).collect()
            } else {
                nodes.clone()
            };
            for node in all {
                h(c.set_timers(node, *on, *range))?;
            }
        }
        Command::Advance(ticks) => h(c.advance(*ticks))?,
        Command::Expect { node, checks } => expect_state(c, *node, checks)?,
        Command::ExpectResult { node, outcome } => expect_outcome(c, *node, outcome)?,
        Command::ExpectQueued {
            node,
            inbound,
            outbound,
        } => {
            let got = c.queued(*node).map_err(|e| e.to_string())?;
            if got != (*inbound, *outbound) {
                return Err(format!(
                    "expected N-{node} queued in={inbound} out={outbound}, found in={} out={}",
                    got.0, got.1
                ));
            }
        }
    }
    Ok(())
}

fn moved(r: Result<bool, HarnessError>, what: &str) -> Result<(), String> {
    match r {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("nothing to {what}")),
        Err(e) => Err(e.to_string()),
    }
}

fn expect_state(c: &Cluster, node: usize, checks: &[(String, String)]) -> Result<(), String> {
    let status = c.status(node).map_err(|e| e.to_string())?;
    let counter = c.counter(node).map_err(|e| e.to_string())?;
    for (key, want) in checks {
        let got = match (key.as_str(), &status) {
            ("role", None) => "crashed".to_string(),
            ("role", Some(s)) => role_name(s.role).to_string(),
            (_, None) => return Err(format!("N-{node} is crashed; cannot check {key}")),
            ("term", Some(s)) => s.term.0.to_string(),
            ("last", Some(s)) => s.last_index.0.to_string(),
            ("lastterm", Some(s)) => s.last_term.0.to_string(),
            ("start", Some(_)) => c
                .raft(node)
                .ok()
                .flatten()
                .map_or("none".into(), |r| r.log().start().index.0.to_string()),
            ("commit", Some(s)) => s.commit.0.to_string(),
            ("leader", Some(s)) => s.leader.map_or("none".into(), |l| l.to_string()),
            ("voted", Some(s)) => s.voted_for.map_or("none".into(), |l| l.to_string()),
            ("applied", Some(_)) => counter.applied.0.to_string(),
            ("total", Some(_)) => counter.total.to_string(),
            ("cfg", Some(_)) => c
                .raft(node)
                .ok()
                .flatten()
                .map_or("none".into(), |r| config_text(r.membership())),
            ("removed", Some(_)) => {
                let removed = c.raft(node).ok().flatten().is_some_and(|r| r.is_removed());
                if removed { "yes" } else { "no" }.to_string()
            }
            ("repairing", Some(_)) => {
                let repairing = c.raft(node).ok().flatten().is_some_and(|r| r.is_repairing());
                if repairing { "yes" } else { "no" }.to_string()
            }
            _ => return Err(format!("unknown check `{key}` (expected role, term, last, lastterm, start, commit, leader, voted, applied, total, cfg, removed or repairing)")),
        };
        if &got != want {
            return Err(format!("expected N-{node} {key}={want}, found {key}={got}"));
        }
    }
    Ok(())
}

fn role_name(role: RoleKind) -> &'static str {
    match role {
        RoleKind::Follower => "follower",
        RoleKind::PreCandidate => "precandidate",
        RoleKind::Candidate => "candidate",
        RoleKind::Leader => "leader",
    }
}

fn expect_outcome(c: &Cluster, node: usize, want: &str) -> Result<(), String> {
    let got = c.last_outcome(node).map_err(|e| e.to_string())?;
    let ok = match (want.split_once('='), &got) {
        (Some(("value", v)), CommandOutcome::Value(g)) => v == g,
        (Some(("redirect", n)), CommandOutcome::Redirect(g)) => node_ref(n)? == *g,
        (Some(("error", text)), CommandOutcome::Error(g)) => g.contains(text),
        (None, CommandOutcome::Retry) => want == "retry",
        (None, CommandOutcome::Timeout) => want == "timeout",
        (None, CommandOutcome::Pending) => want == "pending",
        (None, CommandOutcome::Error(_)) => want == "error",
        // The outcome is unknown: the command may or may not have been applied.
        (None, CommandOutcome::LeadershipLost) => want == "leadership-lost" || want == "unknown",
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("expected result {want} at N-{node}, found {got:?}"))
    }
}
