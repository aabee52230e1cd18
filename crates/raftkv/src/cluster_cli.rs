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
//! ```
//!
//! The `--admin` addresses are tried in order until one answers; a transfer goes on until the
//! leader answers (others say 421), and answers that mean "not now" (503: no leader ready, or
//! leadership changed during the change) are asked again until `--timeout`. Exit status: 0 done, 1 refused or failed (the reason on
//! stderr), 2 bad usage.

use crate::admin_client::{
    send_with_token, AdminClientError, ClusterRequest, ClusterView, SnapshotView, TransferView,
};
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
}

impl ClusterCliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            ClusterCliError::NoAdmin | ClusterCliError::BadTimeout(_) => ExitCode::from(2),
            ClusterCliError::Admin(_) => ExitCode::FAILURE,
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
    let token = token.as_deref();
    match &args.command {
        ClusterCommand::TransferLeader { .. } => {
            let (at, view) = ask::<TransferView>(&args.admins, &request, timeout, token).await?;
            Ok(render(args.json, &view, || {
                format!("node {} leads now (asked {at})\n", view.leader)
            }))
        }
        ClusterCommand::Snapshot => {
            let (at, view) = ask::<SnapshotView>(&args.admins, &request, timeout, token).await?;
            Ok(render(args.json, &view, || {
                format!(
                    "{at}: snapshot taken through log index {}; the log before it is compacted\n",
                    view.index
                )
            }))
        }
        command => {
            let (_, view) = ask::<ClusterView>(&args.admins, &request, timeout, token).await?;
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
    token: Option<&str>,
) -> Result<(String, T), AdminClientError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        let mut answered = false;
        for addr in admins {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match send_with_token::<T>(addr, request, left, token).await {
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

    #[tokio::test]
    async fn usage_mistakes_are_refused_before_any_request() {
        let args = |admins: Vec<String>, timeout| ClusterArgs {
            admins,
            timeout,
            json: false,
            token: None,
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
