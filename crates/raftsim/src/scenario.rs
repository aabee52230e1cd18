//! The scenario language: one command per line, `#` comments, in the spirit of etcd raft's
//! datadriven testdata. Parsing only; `runner.rs` executes.

use crate::cluster::{ClusterSettings, Trigger};
use std::fmt;
use thiserror::Error;

/// A parse or run failure, located in the scenario file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{file}:{line}: {message}")]
pub struct ScenarioError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub file: String,
    pub name: String,
    pub source: String,
    pub description: Vec<String>,
    pub features: Vec<String>,
    pub settings: ClusterSettings,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Section {
        title: String,
    },
    SectionText(String),
    SectionFeatures(Vec<String>),
    Campaign {
        node: usize,
        transfer: bool,
    },
    Follower(usize),
    Transfer {
        node: usize,
        target: usize,
    },
    SetTerm {
        node: usize,
        term: u64,
    },
    Heartbeat(usize),
    ClearQueues(usize),
    Send {
        node: usize,
        all: bool,
    },
    Deliver {
        node: usize,
        all: bool,
    },
    Pump(Option<Trigger>),
    Run(Option<Trigger>),
    Submit {
        node: usize,
        command: String,
    },
    WaitResult(usize),
    /// A membership change asked at `node`.
    Member {
        node: usize,
        change: MemberChange,
    },
    Read {
        node: usize,
        key: Option<String>,
    },
    /// Handle, lose, or handle a copy of the inbound message at a position (0 = oldest).
    DeliverAt {
        node: usize,
        at: usize,
    },
    DropAt {
        node: usize,
        at: usize,
    },
    DuplicateAt {
        node: usize,
        at: usize,
    },
    Tick(usize),
    Snapshot(usize),
    CutLink {
        from: usize,
        to: usize,
    },
    RestoreLinks,
    Crash(usize),
    /// A crash whose disk lied: synced entries from `from` on are lost too.
    CrashLosing {
        node: usize,
        from: u64,
    },
    /// A peer message with a term or index beyond the protocol's limits reaches the node (it
    /// must be refused, changing nothing).
    InjectExtreme(usize),
    /// The driver misuses the node: reports a batch never issued as durable, and one out of
    /// order (both must be refused, changing nothing).
    Misuse(usize),
    Restart {
        node: usize,
        empty: bool,
    },
    ClearBroken(usize),
    Disk {
        node: usize,
        manual: bool,
    },
    Sync(usize),
    Block {
        node: usize,
        drop: bool,
    },
    Unblock(usize),
    Split(Vec<Vec<usize>>),
    Heal,
    Timers {
        nodes: Vec<usize>,
        on: bool,
        range: Option<(u64, u64)>,
    },
    Advance(u64),
    Expect {
        node: usize,
        checks: Vec<(String, String)>,
    },
    ExpectResult {
        node: usize,
        outcome: String,
    },
    ExpectQueued {
        node: usize,
        inbound: usize,
        outbound: usize,
    },
}

/// A membership change in scenario terms (nodes by number; a node's address is its label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    Learner(usize),
    Add(usize),
    Remove(usize),
    Joint { add: Vec<usize>, remove: Vec<usize> },
}

impl MemberChange {
    pub fn to_core(&self) -> raftengine::MembershipChange {
        use raftengine::{MembershipChange, NodeId};
        let id = |n: &usize| NodeId(*n as u64);
        let address = |n: &usize| format!("N-{n}");
        match self {
            MemberChange::Learner(n) => MembershipChange::AddLearner {
                node: id(n),
                address: address(n),
            },
            MemberChange::Add(n) => MembershipChange::AddVoter {
                node: id(n),
                address: address(n),
            },
            MemberChange::Remove(n) => MembershipChange::Remove { node: id(n) },
            MemberChange::Joint { add, remove } => MembershipChange::Joint {
                add: add.iter().map(|n| (id(n), address(n))).collect(),
                remove: remove.iter().map(id).collect(),
            },
        }
    }

    fn to_words(&self) -> String {
        match self {
            MemberChange::Learner(n) => format!("learner N-{n}"),
            MemberChange::Add(n) => format!("add N-{n}"),
            MemberChange::Remove(n) => format!("remove N-{n}"),
            MemberChange::Joint { add, remove } => {
                let mut words = vec!["joint".to_string()];
                words.extend(add.iter().map(|n| format!("+N-{n}")));
                words.extend(remove.iter().map(|n| format!("-N-{n}")));
                words.join(" ")
            }
        }
    }
}

/// `member N-k add|learner|remove N-j` or `member N-k joint +N-a -N-b ...`.
fn parse_member(args: &[&str]) -> Result<Command, String> {
    let usage = "expected `member N-k add|learner|remove N-j` or `member N-k joint +N-a -N-b ...`";
    let node = node_ref(args.first().ok_or(usage)?)?;
    let target = || node_ref(args.get(2).ok_or(usage)?);
    let change = match args.get(1).copied() {
        Some("add") => MemberChange::Add(target()?),
        Some("learner") => MemberChange::Learner(target()?),
        Some("remove") => MemberChange::Remove(target()?),
        Some("joint") => {
            let (mut add, mut remove) = (Vec::new(), Vec::new());
            for word in &args[2..] {
                match (word.strip_prefix('+'), word.strip_prefix('-')) {
                    (Some(n), _) => add.push(node_ref(n)?),
                    (_, Some(n)) => remove.push(node_ref(n)?),
                    _ => return Err(format!("expected +N-k or -N-k, found `{word}`")),
                }
            }
            MemberChange::Joint { add, remove }
        }
        _ => return Err(usage.into()),
    };
    Ok(Command::Member { node, change })
}

/// Parses a scenario file's text. `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let stem = std::path::Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(file);
    let mut scenario = Scenario {
        file: file.to_string(),
        name: stem.to_string(),
        source: file.to_string(),
        description: Vec::new(),
        features: Vec::new(),
        settings: ClusterSettings::default(),
        steps: Vec::new(),
    };
    let mut cluster_seen = false;
    let mut in_section = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| ScenarioError {
            file: file.to_string(),
            line,
            message,
        };
        if let Some(prose) = raw.strip_prefix('>') {
            let prose = prose.strip_prefix(' ').unwrap_or(prose).to_string();
            if in_section {
                scenario.steps.push(Step {
                    line,
                    command: Command::SectionText(prose),
                });
            } else {
                scenario.description.push(prose);
            }
            continue;
        }
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let (word, rest) = content
            .split_once(char::is_whitespace)
            .unwrap_or((content, ""));
        let rest = rest.trim();
        match word {
            "name" => scenario.name = rest.to_string(),
            "source" => scenario.source = rest.to_string(),
            "features" if !in_section => scenario.features.extend(feature_list(rest)),
            "features" => {
                let command = Command::SectionFeatures(feature_list(rest));
                scenario.steps.push(Step { line, command });
            }
            "cluster" => {
                if cluster_seen {
                    return Err(err("the cluster is already defined".into()));
                }
                cluster_seen = true;
                scenario.settings = parse_cluster(rest).map_err(err)?;
            }
            _ => {
                if !cluster_seen {
                    return Err(err(format!("expected `cluster N` before `{word}`")));
                }
                let command = parse_command(word, rest).map_err(err)?;
                in_section |= matches!(command, Command::Section { .. });
                scenario.steps.push(Step { line, command });
            }
        }
    }
    if !cluster_seen {
        return Err(ScenarioError {
            file: file.into(),
            line: 1,
            message: "no `cluster N` line".into(),
        });
    }
    Ok(scenario)
}

fn feature_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The `cluster` line that gives `settings` (what a shrunk failure is written with).
pub fn cluster_line(settings: &ClusterSettings) -> String {
    let on_off = |on: bool| if on { "on" } else { "off" };
    let defaults = ClusterSettings::default();
    let mut line = format!(
        "cluster {} pre_vote={} check_quorum={} forward={} max_entries={} election={}..{} heartbeat={}",
        settings.nodes,
        on_off(settings.pre_vote),
        on_off(settings.check_quorum),
        on_off(settings.forward_proposals),
        settings.max_entries_per_message,
        settings.election_timeout_ticks.0,
        settings.election_timeout_ticks.1,
        settings.heartbeat_interval_ticks
    );
    let mut option = |key: &str, value: u64, default: u64| {
        if value != default {
            line.push_str(&format!(" {key}={value}"));
        }
    };
    option("members", settings.members as u64, defaults.members as u64);
    option(
        "snapshot_every",
        settings.snapshot_after_entries,
        defaults.snapshot_after_entries,
    );
    option(
        "snapshot_bytes",
        settings.snapshot_after_log_bytes,
        defaults.snapshot_after_log_bytes,
    );
    option(
        "chunk",
        settings.max_snapshot_chunk_bytes as u64,
        defaults.max_snapshot_chunk_bytes as u64,
    );
    if settings.log_retention_bytes > 0 {
        option("retain", settings.log_retention_entries, u64::MAX);
    }
    option("lease", settings.lease_ticks, defaults.lease_ticks);
    line
}

fn parse_cluster(rest: &str) -> Result<ClusterSettings, String> {
    let mut words = rest.split_whitespace();
    let count = words
        .next()
        .ok_or("expected the node count after `cluster`")?;
    let mut settings = ClusterSettings {
        nodes: number(count)? as usize,
        ..ClusterSettings::default()
    };
    for option in words {
        let (key, value) = option
            .split_once('=')
            .ok_or(format!("expected key=value, found `{option}`"))?;
        match key {
            "pre_vote" => settings.pre_vote = on_off(value)?,
            "check_quorum" => settings.check_quorum = on_off(value)?,
            "forward" => settings.forward_proposals = on_off(value)?,
            "snapshot_every" => settings.snapshot_after_entries = number(value)?,
            "snapshot_bytes" => settings.snapshot_after_log_bytes = number(value)?,
            "chunk" => settings.max_snapshot_chunk_bytes = number(value)? as usize,
            "retain" => {
                // A tail of K entries, and what followers need, without a byte limit.
                settings.log_retention_entries = number(value)?;
                settings.log_retention_bytes = u64::MAX;
            }
            "max_entries" => settings.max_entries_per_message = number(value)? as usize,
            "election" => settings.election_timeout_ticks = range(value)?,
            "members" => settings.members = number(value)? as usize,
            "catch_up_rounds" => settings.catch_up_rounds = number(value)? as u32,
            "catch_up_stall" => settings.catch_up_stall_ticks = number(value)?,
            "heartbeat" => settings.heartbeat_interval_ticks = number(value)?,
            "lease" => settings.lease_ticks = number(value)?,
            _ => return Err(format!("unknown cluster option `{key}` (expected pre_vote, check_quorum, forward, snapshot_every, snapshot_bytes, chunk, retain, max_entries, election, heartbeat, lease, members, catch_up_rounds or catch_up_stall)")),
        }
    }
    Ok(settings)
}

fn parse_command(word: &str, rest: &str) -> Result<Command, String> {
    let args: Vec<&str> = rest.split_whitespace().collect();
    let node = || {
        args.first()
            .ok_or(format!("expected a node (N-k) after `{word}`"))
            .and_then(|a| node_ref(a))
    };
    let flag = |name: &str| args.get(1) == Some(&name);
    Ok(match word {
        "section" if !rest.is_empty() => Command::Section {
            title: rest.to_string(),
        },
        "section" => return Err("expected a title after `section`".into()),
        "campaign" => Command::Campaign {
            node: node()?,
            transfer: flag("transfer"),
        },
        "follower" => Command::Follower(node()?),
        "transfer" => Command::Transfer {
            node: node()?,
            target: node_ref(args.get(1).ok_or("expected `transfer N-leader N-target`")?)?,
        },
        "set-term" => Command::SetTerm {
            node: node()?,
            term: number(args.get(1).ok_or("expected a term")?)?,
        },
        "heartbeat" => Command::Heartbeat(node()?),
        "clear-queues" => Command::ClearQueues(node()?),
        "send" => Command::Send {
            node: node()?,
            all: flag("all"),
        },
        "deliver" if args.get(1).is_some_and(|a| a.starts_with("at=")) => Command::DeliverAt {
            node: node()?,
            at: at_position(&args)?,
        },
        "deliver" => Command::Deliver {
            node: node()?,
            all: flag("all"),
        },
        "pump" => Command::Pump(parse_until(&args)?),
        "run" => Command::Run(parse_until(&args)?),
        "command" => {
            let text = rest
                .split_once(char::is_whitespace)
                .map(|(_, c)| c.trim())
                .unwrap_or("");
            if text.is_empty() {
                return Err("expected `command N-k <text>`".into());
            }
            Command::Submit {
                node: node()?,
                command: text.to_string(),
            }
        }
        "wait-result" => Command::WaitResult(node()?),
        "member" => parse_member(&args)?,
        "read" => Command::Read {
            node: node()?,
            key: args.get(1).map(|k| k.to_string()),
        },
        "drop" => Command::DropAt {
            node: node()?,
            at: at_position(&args)?,
        },
        "duplicate" => Command::DuplicateAt {
            node: node()?,
            at: at_position(&args)?,
        },
        "tick" => Command::Tick(node()?),
        "snapshot" => Command::Snapshot(node()?),
        "cut" => Command::CutLink {
            from: node()?,
            to: node_ref(args.get(1).ok_or("expected `cut N-a N-b`")?)?,
        },
        "restore-links" => Command::RestoreLinks,
        "crash" => match args.get(1) {
            None => Command::Crash(node()?),
            Some(word) => Command::CrashLosing {
                node: node()?,
                from: number(word.strip_prefix("lose-from=").ok_or(format!(
                    "expected `crash N-k [lose-from=I]`, found `{word}`"
                ))?)?,
            },
        },
        "inject-extreme" => Command::InjectExtreme(node()?),
        "misuse" => Command::Misuse(node()?),
        "restart" => Command::Restart {
            node: node()?,
            empty: flag("empty"),
        },
        "clear-broken" => Command::ClearBroken(node()?),
        "disk" => Command::Disk {
            node: node()?,
            manual: match args.get(1).copied() {
                Some("manual") => true,
                Some("immediate") => false,
                other => {
                    return Err(format!(
                        "expected `disk N-k manual|immediate`, found {:?}",
                        other.unwrap_or("nothing")
                    ))
                }
            },
        },
        "sync" => Command::Sync(node()?),
        "block" => Command::Block {
            node: node()?,
            drop: flag("drop"),
        },
        "unblock" => Command::Unblock(node()?),
        "split" => Command::Split(parse_segments(rest)?),
        "heal" => Command::Heal,
        "timers" => parse_timers(&args)?,
        "advance" => Command::Advance(number(args.first().ok_or("expected a tick count")?)?),
        "expect" => parse_expect(&args)?,
        _ => return Err(format!("unknown command `{word}`")),
    })
}

impl Command {
    /// The scenario line for the commands randomized runs use (what a shrunk failure is written
    /// as); `None` for the others.
    pub fn to_line(&self) -> Option<String> {
        let n = |k: &usize| format!("N-{k}");
        Some(match self {
            Command::Send { node, all: true } => format!("send {} all", n(node)),
            Command::Send { node, all: false } => format!("send {}", n(node)),
            Command::Deliver { node, all: true } => format!("deliver {} all", n(node)),
            Command::Deliver { node, all: false } => format!("deliver {}", n(node)),
            Command::DeliverAt { node, at } => format!("deliver {} at={at}", n(node)),
            Command::DropAt { node, at } => format!("drop {} at={at}", n(node)),
            Command::DuplicateAt { node, at } => format!("duplicate {} at={at}", n(node)),
            Command::Tick(node) => format!("tick {}", n(node)),
            Command::Snapshot(node) => format!("snapshot {}", n(node)),
            Command::Submit { node, command } => format!("command {} {command}", n(node)),
            Command::Read { node, key: None } => format!("read {}", n(node)),
            Command::Read {
                node,
                key: Some(key),
            } => format!("read {} {key}", n(node)),
            Command::Crash(node) => format!("crash {}", n(node)),
            Command::CrashLosing { node, from } => format!("crash {} lose-from={from}", n(node)),
            Command::InjectExtreme(node) => format!("inject-extreme {}", n(node)),
            Command::Misuse(node) => format!("misuse {}", n(node)),
            Command::Restart { node, empty } => {
                format!("restart {}{}", n(node), if *empty { " empty" } else { "" })
            }
            Command::Split(segments) => {
                let parts: Vec<String> = segments
                    .iter()
                    .map(|s| s.iter().map(n).collect::<Vec<_>>().join(","))
                    .collect();
                format!("split {}", parts.join(" | "))
            }
            Command::Heal => "heal".into(),
            Command::CutLink { from, to } => format!("cut {} {}", n(from), n(to)),
            Command::RestoreLinks => "restore-links".into(),
            Command::Disk { node, manual } => format!(
                "disk {} {}",
                n(node),
                if *manual { "manual" } else { "immediate" }
            ),
            Command::Sync(node) => format!("sync {}", n(node)),
            Command::Transfer { node, target } => format!("transfer {} {}", n(node), n(target)),
            Command::Member { node, change } => format!("member {} {}", n(node), change.to_words()),
            _ => return None,
        })
    }
}

/// `at=I` as the second word.
fn at_position(args: &[&str]) -> Result<usize, String> {
    let word = args.get(1).ok_or("expected `at=I` after the node")?;
    let value = word
        .strip_prefix("at=")
        .ok_or(format!("expected `at=I`, found `{word}`"))?;
    Ok(number(value)? as usize)
}

fn parse_until(args: &[&str]) -> Result<Option<Trigger>, String> {
    match args.split_first() {
        None => Ok(None),
        Some((&"until", rest)) => parse_trigger(rest).map(Some),
        Some((other, _)) => Err(format!("expected `until <trigger>`, found `{other}`")),
    }
}

fn parse_trigger(args: &[&str]) -> Result<Trigger, String> {
    let arg = |i: usize| {
        args.get(i)
            .copied()
            .ok_or_else(|| format!("trigger `{}` needs more arguments", args.join(" ")))
    };
    let opt_node = |key: &str| -> Result<Option<usize>, String> {
        match args.iter().position(|a| *a == key) {
            Some(i) => node_ref(arg(i + 1)?).map(Some),
            None => Ok(None),
        }
    };
    Ok(match arg(0)? {
        "election-done" => Trigger::ElectionDone,
        "note" => Trigger::Note {
            node: node_ref(arg(1)?)?,
            text: args.get(2..).unwrap_or_default().join(" "),
        },
        "leader" => Trigger::IsLeader(node_ref(arg(1)?)?),
        "has-leader" => Trigger::HasLeader(node_ref(arg(1)?)?),
        "log" => Trigger::LogIndex(node_ref(arg(1)?)?, number(arg(2)?)?),
        "commit" => Trigger::Commit(node_ref(arg(1)?)?, number(arg(2)?)?),
        "applied" => Trigger::Applied(node_ref(arg(1)?)?, number(arg(2)?)?),
        "sent" => Trigger::Sent { code: message_code(arg(1)?)?, from: opt_node("from")?, to: opt_node("to")? },
        "handled" => Trigger::Handled { code: message_code(arg(1)?)?, by: opt_node("by")?, from: opt_node("from")? },
        other => return Err(format!("unknown trigger `{other}` (expected election-done, note, leader, has-leader, log, commit, applied, sent or handled)")),
    })
}

fn message_code(code: &str) -> Result<String, String> {
    const CODES: [&str; 16] = [
        "m_c",
        "m_cr",
        "p_v_r",
        "p_v",
        "poll",
        "vote",
        "ae",
        "ae_reply",
        "t_p",
        "t_pr",
        "fwd",
        "fwd_reply",
        "ri_r",
        "ri",
        "sn",
        "snr",
    ];
    if CODES.contains(&code) {
        Ok(code.to_string())
    } else {
        Err(format!(
            "unknown message code `{code}` (expected one of {})",
            CODES.join(", ")
        ))
    }
}

fn parse_segments(rest: &str) -> Result<Vec<Vec<usize>>, String> {
    rest.split('|')
        .map(|side| {
            side.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(node_ref)
                .collect()
        })
        .collect()
}

fn parse_timers(args: &[&str]) -> Result<Command, String> {
    let who = args.first().ok_or("expected `timers N-k|all on|off`")?;
    let nodes = if *who == "all" {
        Vec::new()
    } else {
        vec![node_ref(who)?]
    };
    let on = on_off(args.get(1).ok_or("expected on or off")?)?;
    let range = match args.get(2) {
        Some(opt) => Some(range(
            opt.strip_prefix("election=")
                .ok_or(format!("expected election=A..B, found `{opt}`"))?,
        )?),
        None => None,
    };
    Ok(Command::Timers { nodes, on, range })
}

fn parse_expect(args: &[&str]) -> Result<Command, String> {
    match args {
        ["result", node, outcome] => Ok(Command::ExpectResult { node: node_ref(node)?, outcome: outcome.to_string() }),
        ["queued", node, inbound, outbound] => Ok(Command::ExpectQueued {
            node: node_ref(node)?,
            inbound: number(inbound.strip_prefix("in=").ok_or("expected in=K")?)? as usize,
            outbound: number(outbound.strip_prefix("out=").ok_or("expected out=K")?)? as usize,
        }),
        [node, checks @ ..] if !checks.is_empty() => {
            let checks = checks
                .iter()
                .map(|c| c.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or(format!("expected key=value, found `{c}`")))
                .collect::<Result<_, _>>()?;
            Ok(Command::Expect { node: node_ref(node)?, checks })
        }
        _ => Err("expected `expect N-k key=value...`, `expect result N-k OUTCOME` or `expect queued N-k in=A out=B`".into()),
    }
}

pub fn node_ref(text: &str) -> Result<usize, String> {
    text.strip_prefix("N-")
        .and_then(|n| n.parse().ok())
        .filter(|n: &usize| *n > 0)
        .ok_or(format!("expected a node like N-1, found `{text}`"))
}

fn number(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|_| format!("expected a number, found `{text}`"))
}

fn on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected on or off, found `{text}`")),
    }
}

fn range(text: &str) -> Result<(u64, u64), String> {
    let (a, b) = text
        .split_once("..")
        .ok_or(format!("expected a range A..B, found `{text}`"))?;
    Ok((number(a)?, number(b)?))
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} steps)", self.name, self.steps.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_file_line_and_expectation() {
        let e = parse("x.scn", "cluster 3\ncampaign 3\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.scn:2: expected a node like N-1, found `3`"
        );
        let e = parse("x.scn", "campaign N-1\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("expected `cluster N`"));
        let e = parse("x.scn", "cluster 3\npump until sent bogus\n").unwrap_err();
        assert!(e.message.contains("unknown message code `bogus`"));
    }

    #[test]
    fn parses_descriptions_features_and_commands() {
        let text = "> intro\nfeatures a.b, c.d\ncluster 5 pre_vote=off\nsection One\n> more\nrun until election-done\nsplit N-1,N-2 | N-3\n";
        let s = parse("dir/t.scn", text).unwrap();
        assert_eq!(s.name, "t");
        assert_eq!(s.description, vec!["intro"]);
        assert_eq!(s.features, vec!["a.b", "c.d"]);
        assert_eq!(s.settings.nodes, 5);
        assert!(!s.settings.pre_vote);
        assert_eq!(s.steps[1].command, Command::SectionText("more".into()));
        assert_eq!(
            s.steps[2].command,
            Command::Run(Some(Trigger::ElectionDone))
        );
        assert_eq!(
            s.steps[3].command,
            Command::Split(vec![vec![1, 2], vec![3]])
        );
    }
}
