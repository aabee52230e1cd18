//! `raftkv cluster`: membership, leadership and snapshots of a running cluster, through the admin
//! HTTP port of one of its nodes (the API of [`crate::admin_client`]).
//!
//! ```text
//! raftkv serve --join --id 4 --node 4=127.0.0.1:7004,127.0.0.1:6004 --node 1=... (the members)
//! raftkv cluster add-learner 4 127.0.0.1:7004 --admin 127.0.0.1:8001
//! raftkv cluster add 4 --admin 127.0.0.1:8001          # promote (or add a voter directly)
//! raftkv cluster transfer-leader 4 --admin 127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003
//! raftkv cluster remove 2 --admin 127.0.0.1:8001
//! raftkv cluster snapshot --admin 127.0.0.1:8004
//! raftkv cluster show --admin 127.0.0.1:8001
//! raftkv cluster check --admin 127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003
//! ```
//!
//! The `--admin` addresses are tried in order until one answers; a transfer goes on until the
//! leader answers (others say 421), and answers that mean "not now" (503: no leader ready, or
//! leadership changed during the change) are asked again until `--timeout`. Exit status: 0 done, 1 refused or failed (the reason on
//! stderr), 2 bad usage, 3 (`check`) the replicas' states differ.
//!
//! `check` asks *every* address given (list each member's admin port) for its state digest,
//! picks a log index all of them can answer for (the lowest applied index among them, or the
//! digest checkpoint below it), and compares their digests there: replicas that applied the
//! same log must hold the same state.

use crate::admin_client::{
    send_with, AdminAccess, AdminClientError, ChecksumView, ClusterRequest, ClusterView,
    SnapshotView, TransferView,
};
use crate::client::TlsArgs;
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

/// The environment variable holding the admin token when `--token` is not given.
pub const ADMIN_TOKEN_ENV: &str = "RAFTKV_ADMIN_TOKEN";

/// `raftkv cluster`'s options.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Admin address of a node (HOST:PORT); repeat or separate with commas to try several in
    /// order. Required.
    #[arg(
        long = "admin",
        value_name = "HOST:PORT",
        value_delimiter = ',',
        global = true
    )]
    pub admins: Vec<String>,
    /// Longest wait for one node's answer, in seconds (adding a voter waits for its catch-up).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0, global = true)]
    pub timeout: f64,
    /// Print the node's answer as JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The admin token (sent as `Authorization: Bearer`), for nodes with admin_token_hash set
    /// [default: $RAFTKV_ADMIN_TOKEN]. Prefer the environment variable: a flag shows in `ps`.
    #[arg(long, value_name = "TOKEN", global = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ClusterCommand {
    /// The configuration as a node sees it: voters, learners, their addresses, the leader.
    Show,
    /// Add a non-voting member; it receives the log at once. Start it first with `raftkv serve
    /// --join`.
    AddLearner {
        /// The new node's id.
        id: u64,
        /// Its raft (node-to-node) address.
        raft_addr: String,
    },
    /// Add a voter, or promote a learner (then RAFT_ADDR may be left out): the leader catches it
    /// up first, then adds it.
    Add {
        /// The node's id.
        id: u64,
        /// Its raft (node-to-node) address; known already for a learner.
        raft_addr: Option<String>,
    },
    /// Remove a member; a leader that removes itself hands leadership over first.
    Remove {
        /// The member's id.
        id: u64,
    },
    /// Move leadership to a voter (the request must reach the leader: list every node's admin
    /// address and the others are skipped).
    TransferLeader {
        /// The voter that is to lead.
        id: u64,
    },
    /// Snapshot the first answering node's store now and compact its log behind it.
    Snapshot,
    /// Compare the state digests of every listed node at one log index; exit status 3 and the
    /// nodes named when they differ.
    Check,
}

impl ClusterCommand {
    fn request(&self) -> ClusterRequest {
        match self.clone() {
            ClusterCommand::Show => ClusterRequest::Show,
            ClusterCommand::AddLearner { id, raft_addr } => ClusterRequest::AddLearner {
                id,
                raft: raft_addr,
            },
            ClusterCommand::Add { id, raft_addr } => ClusterRequest::AddVoter {
                id,
                raft: raft_addr,
            },
            ClusterCommand::Remove { id } => ClusterRequest::Remove { id },
            ClusterCommand::TransferLeader { id } => ClusterRequest::TransferLeader { id },
            ClusterCommand::Snapshot => ClusterRequest::Snapshot,
            ClusterCommand::Check => ClusterRequest::Checksum { index: None },
        }
    }
}

/// Why `raftkv cluster` failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterCliError {
    #[error("give at least one node's admin address with --admin HOST:PORT")]
    NoAdmin,
    #[error("--timeout must be a positive number of seconds, not {0}")]
    BadTimeout(f64),
    #[error(transparent)]
    Admin(#[from] AdminClientError),
    #[error(transparent)]
    Tls(#[from] raftnet::tls::TlsError),
    /// Some nodes could not be brought to one index they all answer for.
    #[error("the nodes cannot be compared: {0}")]
    NotComparable(String),
    /// The replicas' digests differ: `report` is the table, printed on standard output.
    #[error("{summary}")]
    Diverged { report: String, summary: String },
}

impl ClusterCliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            ClusterCliError::NoAdmin | ClusterCliError::BadTimeout(_) => ExitCode::from(2),
            ClusterCliError::Admin(_)
            | ClusterCliError::NotComparable(_)
            | ClusterCliError::Tls(_) => ExitCode::FAILURE,
            ClusterCliError::Diverged { .. } => ExitCode::from(3),
        }
    }
}

/// Runs the command and prints its outcome: for `main`.
pub fn run_cli(args: ClusterArgs) -> ExitCode {
    match crate::block_on_fresh_runtime(
        "raftkv cluster",
        crate::RuntimeThreads::Exactly(1),
        run(&args),
    ) {
        None => ExitCode::FAILURE,
        Some(Ok(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Some(Err(error)) => {
            if let ClusterCliError::Diverged { report, .. } = &error {
                print!("{report}");
            }
            eprintln!("raftkv cluster: {error}");
            error.exit_code()
        }
    }
}

/// Carries out the command; returns what to print.
pub async fn run(args: &ClusterArgs) -> Result<String, ClusterCliError> {
    if args.admins.is_empty() {
        return Err(ClusterCliError::NoAdmin);
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= 86_400.0) {
        return Err(ClusterCliError::BadTimeout(args.timeout));
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let request = args.command.request();
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var(ADMIN_TOKEN_ENV).ok())
        .filter(|token| !token.is_empty());
    let access = AdminAccess {
        tls: args.tls.client_config()?,
        token,
    };
    match &args.command {
        ClusterCommand::Check => check(&args.admins, args.json, timeout, &access).await,
        ClusterCommand::TransferLeader { .. } => {
            let (at, view) = ask::<TransferView>(&args.admins, &request, timeout, &access).await?;
            Ok(render(args.json, &view, || {
                format!("node {} leads now (asked {at})\n", view.leader)
            }))
        }
        ClusterCommand::Snapshot => {
            let (at, view) = ask::<SnapshotView>(&args.admins, &request, timeout, &access).await?;
            Ok(render(args.json, &view, || {
                format!(
                    "{at}: snapshot taken through log index {}; the log before it is compacted\n",
                    view.index
                )
            }))
        }
        command => {
            let (_, view) = ask::<ClusterView>(&args.admins, &request, timeout, &access).await?;
            let headline = match command {
                ClusterCommand::AddLearner { id, .. } => format!("node {id} added as a learner"),
                ClusterCommand::Add { id, .. } => format!("node {id} is a voter"),
                ClusterCommand::Remove { id } => format!("node {id} removed"),
                _ => String::new(),
            };
            Ok(render(args.json, &view, || {
                let mut text = String::new();
                if !headline.is_empty() {
                    let _ = writeln!(text, "{headline}; the configuration is committed:");
                }
                text.push_str(&describe(&view));
                text
            }))
        }
    }
}

/// Sends `request` to each address in turn until one gives a definitive answer: a success, or a
/// refusal other than "not the leader" (421) and "not now" (503: no leader ready, or the outcome
/// is unknown). While some node answers one of those, goes round again until `timeout` (a
/// membership change is idempotent, so asking again is safe). Returns the address that answered
/// and its answer.
async fn ask<T: DeserializeOwned>(
    admins: &[String],
    request: &ClusterRequest,
    timeout: Duration,
    access: &AdminAccess,
) -> Result<(String, T), AdminClientError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        let mut answered = false;
        for addr in admins {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match send_with::<T>(addr, request, left, access).await {
                Ok(answer) => return Ok((addr.clone(), answer)),
                Err(
                    error @ (AdminClientError::Unreachable { .. }
                    | AdminClientError::Timeout { .. }),
                ) => last = Some(error),
                Err(error) if error.is_not_leader() || error.is_unavailable() => {
                    answered = true;
                    last = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        if !answered || tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
            break;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    // `admins` is not empty (checked by `run`), so some error was recorded.
    Err(last.unwrap_or(AdminClientError::Unreachable {
        addr: String::new(),
        reason: "no address given".into(),
    }))
}

/// The outcome of `cluster check`, for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The log index compared at.
    pub index: u64,
    /// Each node's answer at `index`.
    pub nodes: Vec<ChecksumView>,
    /// The nodes whose digest differs from the largest group's (every node when no digest is
    /// held by more nodes than any other).
    pub divergent: Vec<u64>,
}

/// `cluster check`: every node's digest at one index all of them can answer for. Nodes that
/// are unreachable, or move on (a snapshot installed) before they answer, are asked again
/// until `timeout`.
async fn check(
    admins: &[String],
    as_json: bool,
    timeout: Duration,
    access: &AdminAccess,
) -> Result<String, ClusterCliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let report = loop {
        let why = match compare_once(admins, deadline, access).await {
            Ok(report) => break report,
            Err(why) => why,
        };
        if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
            return Err(match why {
                Attempt::Failed(error) => error.into(),
                Attempt::NotComparable(why) => ClusterCliError::NotComparable(why),
            });
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    };
    let text = render(as_json, &report, || describe_check(&report));
    if report.divergent.is_empty() {
        return Ok(text);
    }
    let names = |ids: &mut dyn Iterator<Item = u64>| {
        ids.map(|id| id.to_string()).collect::<Vec<_>>().join(", ")
    };
    let divergent = names(&mut report.divergent.iter().copied());
    let rest = names(
        &mut report
            .nodes
            .iter()
            .map(|n| n.node)
            .filter(|id| !report.divergent.contains(id)),
    );
    let summary = if rest.is_empty() {
        format!(
            "replicas diverged: no two of nodes {divergent} hold the same state at index {}",
            report.index
        )
    } else {
        format!(
            "replicas diverged: node(s) {divergent} differ from node(s) {rest} at index {}",
            report.index
        )
    };
    Err(ClusterCliError::Diverged {
        report: text,
        summary,
    })
}

/// Why one round of [`check`] compared nothing.
enum Attempt {
    Failed(AdminClientError),
    NotComparable(String),
}

/// One round of [`check`]: where every node is, then every node's digest at the lowest index
/// all of them can answer for.
async fn compare_once(
    admins: &[String],
    deadline: tokio::time::Instant,
    access: &AdminAccess,
) -> Result<CheckReport, Attempt> {
    let ask_all = |index: Option<u64>| async move {
        let mut views = Vec::with_capacity(admins.len());
        for addr in admins {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let request = ClusterRequest::Checksum { index };
            views.push(send_with::<ChecksumView>(addr, &request, left, access).await);
        }
        views
    };
    let mut latest = Vec::with_capacity(admins.len());
    for answer in ask_all(None).await {
        latest.push(answer.map_err(Attempt::Failed)?);
    }
    let ids: std::collections::BTreeSet<u64> = latest.iter().map(|v| v.node).collect();
    if ids.len() != latest.len() {
        return Err(Attempt::NotComparable(
            "two addresses answered as the same node".into(),
        ));
    }
    let lowest = latest.iter().map(|v| v.applied_index).min().unwrap_or(0);
    let index = if latest.iter().all(|v| v.can_answer(lowest)) {
        lowest
    } else {
        // Some node keeps only checkpoints that far back (it is far ahead of the slowest).
        let interval = latest
            .iter()
            .map(|v| v.checkpoint_interval)
            .max()
            .unwrap_or(1);
        lowest / interval.max(1) * interval.max(1)
    };
    if !latest.iter().all(|v| v.can_answer(index)) {
        let behind: Vec<String> = latest
            .iter()
            .filter(|v| !v.can_answer(index))
            .map(|v| v.node.to_string())
            .collect();
        return Err(Attempt::NotComparable(format!(
            "node(s) {} no longer keep the digest at index {index}, the lowest applied index \
             among the nodes (a node far behind the others: let it catch up)",
            behind.join(", ")
        )));
    }
    let mut nodes = Vec::with_capacity(admins.len());
    for answer in ask_all(Some(index)).await {
        match answer {
            Ok(view) => nodes.push(view),
            Err(error) if error.is_not_comparable() => {
                return Err(Attempt::NotComparable(error.to_string()))
            }
            Err(error) => return Err(Attempt::Failed(error)),
        }
    }
    Ok(CheckReport {
        index,
        divergent: divergent_nodes(&nodes),
        nodes,
    })
}

/// The nodes outside the largest group of equal digests; every node when no group is larger
/// than all others (then there is no telling which state is right).
fn divergent_nodes(nodes: &[ChecksumView]) -> Vec<u64> {
    let mut groups: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
    for view in nodes {
        groups.entry(&view.digest).or_default().push(view.node);
    }
    if groups.len() <= 1 {
        return Vec::new();
    }
    let largest = groups.values().map(Vec::len).max().unwrap_or(0);
    let mut leaders = groups.values().filter(|g| g.len() == largest);
    let majority = match (leaders.next(), leaders.next()) {
        (Some(group), None) => group.clone(),
        _ => Vec::new(),
    };
    let mut divergent: Vec<u64> = nodes
        .iter()
        .map(|v| v.node)
        .filter(|id| !majority.contains(id))
        .collect();
    divergent.sort_unstable();
    divergent
}

/// A check report as a table.
pub fn describe_check(report: &CheckReport) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "state digests at log index {} (applied by every node):",
        report.index
    );
    let _ = writeln!(text, "  {:<4} {:<10} {:<32}", "node", "applied", "digest");
    for view in &report.nodes {
        let mark = if report.divergent.contains(&view.node) {
            "  DIFFERS"
        } else {
            ""
        };
        let _ = writeln!(
            text,
            "  {:<4} {:<10} {:<32}{mark}",
            view.node, view.applied_index, view.digest
        );
    }
    if report.divergent.is_empty() {
        let _ = writeln!(text, "all {} nodes agree", report.nodes.len());
    }
    text
}

/// Pause between two rounds of [`ask`].
const RETRY_PAUSE: Duration = Duration::from_millis(200);

fn render<T: Serialize>(as_json: bool, value: &T, text: impl FnOnce() -> String) -> String {
    if as_json {
        match serde_json::to_string_pretty(value) {
            Ok(json) => json + "\n",
            Err(error) => format!("{{\"error\": \"cannot encode: {error}\"}}\n"),
        }
    } else {
        text()
    }
}

/// A cluster view as a few lines of text.
pub fn describe(view: &ClusterView) -> String {
    let mut text = String::new();
    let leader = view
        .leader
        .map_or_else(|| "no leader known".to_owned(), |l| format!("leader {l}"));
    let _ = writeln!(
        text,
        "seen by node {} ({}, term {}, {leader}){}{}",
        view.node,
        view.role,
        view.term,
        if view.committed {
            ""
        } else {
            "; a change is under way"
        },
        if view.removed {
            "; that node was removed"
        } else {
            ""
        }
    );
    if view.members.is_empty() {
        text.push_str("  no configuration yet: a joining node that no member has added\n");
        return text;
    }
    let _ = writeln!(text, "  {:<4} {:<8} {:<22} client", "id", "kind", "raft");
    for member in &view.members {
        let _ = writeln!(
            text,
            "  {:<4} {:<8} {:<22} {}",
            member.id,
            member.kind,
            member.raft.as_deref().unwrap_or("-"),
            member.client.as_deref().unwrap_or("-")
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_client::MemberView;

    #[test]
    fn a_view_reads_as_a_table() {
        let view = ClusterView {
            node: 2,
            role: "follower".into(),
            term: 3,
            leader: Some(1),
            committed: false,
            removed: false,
            voters: vec![1, 2],
            outgoing: vec![],
            learners: vec![4],
            members: vec![
                MemberView {
                    id: 1,
                    kind: "voter".into(),
                    raft: Some("127.0.0.1:7001".into()),
                    client: Some("127.0.0.1:6001".into()),
                },
                MemberView {
                    id: 4,
                    kind: "learner".into(),
                    raft: Some("127.0.0.1:7004".into()),
                    client: None,
                },
            ],
        };
        let text = describe(&view);
        assert!(text
            .starts_with("seen by node 2 (follower, term 3, leader 1); a change is under way\n"));
        assert!(
            text.contains("  4    learner  127.0.0.1:7004         -\n"),
            "{text}"
        );
    }

    fn view(node: u64, digest: &str) -> ChecksumView {
        ChecksumView {
            node,
            index: 10,
            digest: digest.into(),
            applied_index: 10 + node,
            oldest: Some(1),
            oldest_checkpoint: None,
            checkpoint_interval: 1024,
        }
    }

    #[test]
    fn the_nodes_outside_the_largest_group_diverge() {
        let same = [view(1, "aa"), view(2, "aa"), view(3, "aa")];
        assert!(divergent_nodes(&same).is_empty());
        let one_off = [view(1, "aa"), view(2, "bb"), view(3, "aa")];
        assert_eq!(divergent_nodes(&one_off), vec![2]);
        // Two nodes that disagree: no telling which is right, both are named.
        assert_eq!(divergent_nodes(&[view(1, "aa"), view(2, "bb")]), vec![1, 2]);
        let report = CheckReport {
            index: 10,
            divergent: vec![2],
            nodes: one_off.to_vec(),
        };
        let text = describe_check(&report);
        assert!(text.starts_with("state digests at log index 10"), "{text}");
        assert!(text.contains("  2    12         bb"), "{text}");
        assert!(
            text.lines().nth(3).is_some_and(|l| l.ends_with("DIFFERS")),
            "{text}"
        );
    }

    #[test]
    fn a_node_answers_recent_indexes_and_older_checkpoints() {
        let mut v = view(1, "aa");
        v.oldest = Some(5000);
        v.oldest_checkpoint = Some(1024);
        v.applied_index = 6000;
        assert!(v.can_answer(5000) && v.can_answer(6000) && v.can_answer(2048));
        assert!(!v.can_answer(4999) && !v.can_answer(6001) && !v.can_answer(1023));
    }

    #[tokio::test]
    async fn usage_mistakes_are_refused_before_any_request() {
        let args = |admins: Vec<String>, timeout| ClusterArgs {
            admins,
            timeout,
            json: false,
            token: None,
            tls: Default::default(),
            command: ClusterCommand::Show,
        };
        assert!(matches!(
            run(&args(vec![], 1.0)).await,
            Err(ClusterCliError::NoAdmin)
        ));
        assert!(matches!(
            run(&args(vec!["127.0.0.1:1".into()], 0.0)).await,
            Err(ClusterCliError::BadTimeout(_))
        ));
        // Nothing listens on port 1: unreachable.
        assert!(matches!(
            run(&args(vec!["127.0.0.1:1".into()], 1.0)).await,
            Err(ClusterCliError::Admin(AdminClientError::Unreachable { .. }))
        ));
    }
}
