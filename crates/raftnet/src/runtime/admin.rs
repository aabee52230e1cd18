//! Cluster administration in the raft loop: membership changes, leadership transfers and
//! explicit snapshots asked through [`NodeHandle`](super::NodeHandle), and keeping the network's
//! peer addresses in step with the configuration.

use super::{RaftLoop, SnapshotReply};
use raftengine::{
    CompactError, Event, LogIndex, Membership, MembershipChange, MembershipError, NodeId,
    RequestId, RoleKind, TransferError,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::oneshot;

/// Why an administrative request (a membership change, a leadership transfer, a snapshot) did
/// not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AdminError {
    /// The membership change was refused or given up (see [`MembershipError`]: `Retry`,
    /// `InProgress`, `CatchUpFailed`, `Invalid`, `LeadershipLost`).
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// Only the leader transfers leadership; ask `leader` (if known).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// The transfer could not start (`UnknownTarget`, `InProgress`).
    #[error(transparent)]
    Transfer(TransferError),
    /// The transfer started but `target` did not take over.
    #[error("leadership did not move to {target}: {reason}")]
    TransferFailed {
        /// The node leadership was to move to.
        target: NodeId,
        /// Why the transfer was aborted.
        reason: String,
    },
    /// No outcome within the node's `admin_timeout`: a membership change may still take effect
    /// (read the membership before retrying).
    #[error("no outcome within {0:?}; the request may still take effect")]
    Timeout(Duration),
    /// The state machine's snapshot could not be saved.
    #[error("snapshot failed: {0}")]
    Snapshot(String),
    /// This node was removed from the cluster: ask a member.
    #[error("this node was removed from the cluster")]
    Removed,
    /// The node stopped (shut down, or a fatal error).
    #[error("node stopped: {0}")]
    Stopped(String),
}

pub(super) type ChangeReply = oneshot::Sender<Result<Membership, AdminError>>;
pub(super) type TransferReply = oneshot::Sender<Result<NodeId, AdminError>>;

/// A transfer this node started, waiting for leadership to move.
pub(super) struct PendingTransfer {
    target: NodeId,
    deadline: Instant,
    /// Transfers started for this request so far.
    attempts: u32,
    reply: TransferReply,
}

/// Transfers started for one request before it fails. An attempt can fail by a race rather than
/// by the target being unfit: the target's transfer-authorized campaign still begins with a
/// pre-vote round at the current term, and a heartbeat the leader sent before its `TimeoutNow`
/// arriving meanwhile turns it back into a follower; the next attempt usually wins.
const TRANSFER_ATTEMPTS: u32 = 5;

/// The administrative requests a raft loop is waiting on.
#[derive(Default)]
pub(super) struct PendingAdmin {
    changes: BTreeMap<RequestId, (Instant, ChangeReply)>,
    transfers: Vec<PendingTransfer>,
}

impl PendingAdmin {
    pub fn stop_all(&mut self, reason: &str) {
        for (_, (_, reply)) in std::mem::take(&mut self.changes) {
            let _ = reply.send(Err(AdminError::Stopped(reason.into())));
        }
        for pending in std::mem::take(&mut self.transfers) {
            let _ = pending.reply.send(Err(AdminError::Stopped(reason.into())));
        }
    }
}

/// Where this node sends to: the addresses it was configured with, those the configurations and
/// catch-ups named, and which nodes are members.
pub(super) struct PeerBook {
    me: NodeId,
    /// The peers of the node's configuration (a joining node knows the cluster only from these).
    configured: BTreeMap<NodeId, String>,
    /// Addresses named by configurations and catch-ups; they win over configured ones.
    learned: BTreeMap<NodeId, String>,
    /// Nodes the leader is catching up before they become voters (not members yet).
    catching_up: BTreeSet<NodeId>,
    /// The index of the configuration in effect while it is not committed: once it commits the
    /// committed configuration changes too (a removed node drops out of the peers only then, so
    /// that it still hears of its removal).
    uncommitted: Option<LogIndex>,
    /// The peers must be recomputed.
    dirty: bool,
    /// Members without a known address, already warned about.
    unreachable: BTreeSet<NodeId>,
}

impl PeerBook {
    pub fn new(me: NodeId, configured: BTreeMap<NodeId, String>) -> PeerBook {
        PeerBook {
            me,
            configured,
            learned: BTreeMap::new(),
            catching_up: BTreeSet::new(),
            uncommitted: None,
            dirty: true,
            unreachable: BTreeSet::new(),
        }
    }

    /// The peers to send to: every member of the configuration in effect and of the committed
    /// one, and the nodes being caught up, at their best known address. A node without a
    /// configuration yet (joining) sends to its configured peers.
    fn wanted(&mut self, latest: &Membership, committed: &Membership) -> BTreeMap<NodeId, String> {
        for membership in [committed, latest] {
            self.learned.extend(membership.addresses.clone());
        }
        let mut members = latest.members();
        members.extend(committed.members());
        if members.is_empty() {
            return self.configured.clone();
        }
        members.extend(self.catching_up.iter().copied());
        members.remove(&self.me);
        let mut wanted = BTreeMap::new();
        for node in members {
            match self
                .learned
                .get(&node)
                .or_else(|| self.configured.get(&node))
            {
                Some(addr) => {
                    wanted.insert(node, addr.clone());
                    self.unreachable.remove(&node);
                }
                None => {
                    if self.unreachable.insert(node) {
                        tracing::warn!(
                            node = node.0,
                            "no address known for a member; this node cannot send to it"
                        );
                    }
                }
            }
        }
        wanted
    }
}

impl RaftLoop {
    pub(super) fn on_change_request(&mut self, change: MembershipChange, reply: ChangeReply) {
        if self.raft.is_removed() {
            // Its former leader no longer listens to it: the request would only time out.
            let _ = reply.send(Err(AdminError::Removed));
            return;
        }
        let id = self.new_request_id();
        // Callers that gave up (dropped their receiver) need no answer.
        self.admin.changes.retain(|_, (_, r)| !r.is_closed());
        let deadline = Instant::now() + self.admin_timeout;
        self.admin.changes.insert(id, (deadline, reply));
        tracing::info!(?change, "membership change requested");
        self.raft.change_membership(id, change);
    }

    pub(super) fn on_transfer_request(&mut self, target: NodeId, reply: TransferReply) {
        if self.raft.leader() == Some(target) {
            let _ = reply.send(Ok(target));
            return;
        }
        if self.raft.role() != RoleKind::Leader {
            // Checked first: asked at the target itself, the core would say `TargetIsSelf`.
            let leader = self.raft.leader();
            let _ = reply.send(Err(AdminError::NotLeader { leader }));
            return;
        }
        if let Err(error) = self.raft.transfer_leadership(target) {
            let error = match error {
                TransferError::NotLeader => AdminError::NotLeader {
                    leader: self.raft.leader(),
                },
                other => AdminError::Transfer(other),
            };
            let _ = reply.send(Err(error));
            return;
        }
        tracing::info!(target = target.0, "leadership transfer requested");
        self.admin.transfers.push(PendingTransfer {
            target,
            deadline: Instant::now() + self.admin_timeout,
            attempts: 1,
            reply,
        });
    }

    /// A snapshot taken on request: compact the log behind it and answer.
    pub(super) fn on_snapshot_taken(
        &mut self,
        index: LogIndex,
        data: Vec<u8>,
        reply: Option<SnapshotReply>,
    ) {
        let result = match self.raft.compact(index, data) {
            Ok(()) => Ok(index),
            // Nothing was applied since the last snapshot: that one already covers `index`.
            Err(CompactError::AlreadyCompacted { .. }) => Ok(index),
            Err(error) => Err(AdminError::Snapshot(error.to_string())),
        };
        if let Err(error) = &result {
            tracing::debug!("snapshot not used for compaction: {error}");
        }
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }

    /// Answers finished membership changes.
    pub(super) fn on_change_outcomes(
        &mut self,
        outcomes: Vec<(RequestId, Result<Membership, MembershipError>)>,
    ) {
        for (id, outcome) in outcomes {
            match &outcome {
                Ok(membership) => tracing::info!(?membership, "membership change done"),
                Err(error) => tracing::warn!("membership change failed: {error}"),
            }
            if let Some((_, reply)) = self.admin.changes.remove(&id) {
                let _ = reply.send(outcome.map_err(AdminError::from));
            }
        }
    }

    /// Notes what the core's events mean for the peers and for pending transfers.
    pub(super) fn on_admin_events(&mut self, events: &[Event]) {
        for event in events {
            match event {
                Event::MembershipChanged { index, membership } => {
                    tracing::info!(index = index.0, ?membership, "configuration in effect");
                    self.peers.catching_up.clear();
                    self.peers.uncommitted = (*index > self.raft.commit_index()).then_some(*index);
                    self.peers.dirty = true;
                }
                Event::CatchUpStarted { nodes } => {
                    tracing::info!(?nodes, "catching up new voters");
                    self.peers.learned.extend(nodes.clone());
                    self.peers.catching_up.extend(nodes.keys().copied());
                    self.peers.dirty = true;
                }
                Event::MembershipChangeAborted { reason } => {
                    tracing::warn!("membership change aborted: {reason}");
                    self.peers.catching_up.clear();
                    self.peers.dirty = true;
                }
                Event::RoleChanged { role, .. }
                    if *role != RoleKind::Leader && !self.peers.catching_up.is_empty() =>
                {
                    self.peers.catching_up.clear();
                    self.peers.dirty = true;
                }
                Event::RemovedFromCluster => {
                    tracing::warn!(
                        "this node was removed from the cluster; it no longer takes part"
                    );
                    self.fail_requests_of_removed_node();
                }
                Event::TransferAborted { target } => self.retry_transfers(*target),
                _ => {}
            }
        }
    }

    /// After the output was carried out: updates the network's peers if they changed, and
    /// answers transfers whose outcome is known.
    pub(super) fn sync_admin(&mut self) {
        if let Some(index) = self.peers.uncommitted {
            if self.raft.commit_index() >= index {
                self.peers.uncommitted = None;
                self.peers.dirty = true;
            }
        }
        if self.peers.dirty {
            self.peers.dirty = false;
            let latest = self.raft.membership().clone();
            let committed = self.raft.committed_membership().clone();
            let wanted = self.peers.wanted(&latest, &committed);
            self.network.set_peers(&wanted);
        }
        if !self.admin.transfers.is_empty() {
            let (me, leader) = (self.raft.id(), self.raft.leader());
            self.finish_transfers(|target| match leader {
                Some(l) if l == target => Some(Ok(target)),
                Some(l) if l != me => Some(Err(AdminError::TransferFailed {
                    target,
                    reason: format!("node {l} became leader instead"),
                })),
                _ => None,
            });
        }
    }

    /// Ticks: gives up on requests past their deadline.
    pub(super) fn expire_admin(&mut self) {
        if self.admin.changes.is_empty() && self.admin.transfers.is_empty() {
            return;
        }
        let now = Instant::now();
        let timeout = self.admin_timeout;
        let expired: Vec<RequestId> = self
            .admin
            .changes
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((_, reply)) = self.admin.changes.remove(&id) {
                let _ = reply.send(Err(AdminError::Timeout(timeout)));
            }
        }
        let (expired, waiting) = std::mem::take(&mut self.admin.transfers)
            .into_iter()
            .partition(|t| t.deadline <= now);
        self.admin.transfers = waiting;
        for pending in expired {
            let _ = pending.reply.send(Err(AdminError::Timeout(timeout)));
        }
    }

    /// The transfer to `target` was aborted: start it again for the requests that have attempts
    /// and time left, fail the others.
    fn retry_transfers(&mut self, target: NodeId) {
        let now = Instant::now();
        let mut waiting = Vec::new();
        for mut pending in std::mem::take(&mut self.admin.transfers) {
            if pending.target != target {
                waiting.push(pending);
                continue;
            }
            if pending.attempts >= TRANSFER_ATTEMPTS || now >= pending.deadline {
                let _ = pending.reply.send(Err(AdminError::TransferFailed {
                    target,
                    reason: format!(
                        "it did not take over within an election timeout ({} attempts)",
                        pending.attempts
                    ),
                }));
                continue;
            }
            match self.raft.transfer_leadership(target) {
                Ok(()) => {
                    tracing::info!(
                        target = target.0,
                        "leadership transfer aborted; trying again"
                    );
                    pending.attempts += 1;
                    waiting.push(pending);
                }
                // Another request's retry is under way and serves this one too; or this node
                // no longer leads, and `sync_admin` answers once it learns who does.
                Err(TransferError::InProgress(_) | TransferError::NotLeader) => {
                    waiting.push(pending)
                }
                Err(other) => {
                    let _ = pending.reply.send(Err(AdminError::Transfer(other)));
                }
            }
        }
        self.admin.transfers = waiting;
    }

    /// Answers every pending transfer for which `outcome` has one.
    fn finish_transfers(&mut self, outcome: impl Fn(NodeId) -> Option<Result<NodeId, AdminError>>) {
        let mut waiting = Vec::new();
        for pending in std::mem::take(&mut self.admin.transfers) {
            match outcome(pending.target) {
                Some(result) => {
                    let _ = pending.reply.send(result);
                }
                None => waiting.push(pending),
            }
        }
        self.admin.transfers = waiting;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(pairs: &[(u64, &str)]) -> BTreeMap<NodeId, String> {
        pairs
            .iter()
            .map(|(id, addr)| (NodeId(*id), addr.to_string()))
            .collect()
    }

    #[test]
    fn peers_are_the_members_at_their_best_known_address() {
        let configured = addrs(&[(2, "h2:1"), (3, "h3:1")]);
        let mut book = PeerBook::new(NodeId(1), configured.clone());
        // No configuration yet (a joining node): the configured peers.
        let none = Membership::default();
        assert_eq!(book.wanted(&none, &none), configured);

        // Members 1, 2, 3 without addresses and 4 with one; 3 moved.
        let mut latest = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
        latest.learners.insert(NodeId(4));
        latest.addresses = addrs(&[(3, "h3:2"), (4, "h4:1")]);
        let committed = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(
            book.wanted(&latest, &committed),
            addrs(&[(2, "h2:1"), (3, "h3:2"), (4, "h4:1")])
        );

        // 2 is removed in the latest configuration but still in the committed one: kept.
        latest.voters.remove(&NodeId(2));
        assert!(book.wanted(&latest, &committed).contains_key(&NodeId(2)));
        // Once committed, it is dropped; a node being caught up is added.
        book.catching_up.insert(NodeId(5));
        book.learned.insert(NodeId(5), "h5:1".into());
        assert_eq!(
            book.wanted(&latest, &latest.clone()),
            addrs(&[(3, "h3:2"), (4, "h4:1"), (5, "h5:1")])
        );

        // A member nobody gave an address for is left out (and warned about once).
        latest.voters.insert(NodeId(9));
        assert!(!book
            .wanted(&latest, &latest.clone())
            .contains_key(&NodeId(9)));
        assert!(book.unreachable.contains(&NodeId(9)));
    }
}
