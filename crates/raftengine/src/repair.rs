//! Protocol-aware recovery (Alagappan et al., "Protocol-Aware Recovery for Consensus-Based
//! Storage", FAST '18). A node whose storage lost data it had made durable (a disk that lied
//! about a sync, a truncated or damaged log, a replaced disk) may have acknowledged entries it
//! no longer holds, and those acknowledgements may have made them committed. If it voted or
//! counted towards a majority as if nothing happened, a second fault (the leader down) could
//! elect a leader without them and lose acknowledged writes.
//!
//! So such a node *repairs* itself first: it refuses (pre-)votes and never campaigns, and its
//! answers to AppendEntries say `repairing`, so a leader does not count them towards a commit
//! or a read round. It is repaired once its log holds a leader's log up to that leader's commit
//! index and that index lies in the leader's term: a leader that committed an entry of its own
//! term holds every entry committed before its term (leader completeness), so the node then
//! holds everything it may have acknowledged. The state is kept durably (`LogWrite::Repairing`),
//! so a restart in the middle of a repair does not end it.
//!
//! The argument needs the node's term to survive the loss (the log's entries may go, its hard
//! state may not): the term rejects leaders older than any it acknowledged. A replaced disk
//! loses the term too; such a node should rejoin as a new member (as etcd asks), though it
//! still repairs itself before it votes.

use crate::event::Event;
use crate::node::RaftNode;
use crate::storage::LogWrite;
use crate::types::LogIndex;

impl RaftNode {
    /// Starts a repair: from now on this node neither votes nor counts towards a majority.
    pub(crate) fn start_repair(&mut self, reason: &str) {
        if self.repairing {
            return;
        }
        #[cfg(feature = "mutations")]
        if self.mutated(crate::config::Mutation::IgnoreDataLoss) {
            return;
        }
        self.repairing = true;
        self.repair_epoch += 1;
        let epoch = self.repair_epoch;
        self.write(LogWrite::Repair {
            epoch,
            repairing: true,
        });
        self.out.events.push(Event::RepairStarted {
            reason: reason.to_string(),
        });
    }

    /// After an AppendEntries from the leader of the current term left this log matching the
    /// leader's up to `matched`: ends the repair if that covers the leader's commit index
    /// `leader_commit`, that index lies in the leader's term, and the leader knew this node's
    /// current repair epoch (`epoch_known`) when it sent it. From then on the leader ignores
    /// answers sent before the loss, so none of them can count towards a commit the repair
    /// did not cover.
    pub(crate) fn check_repaired(
        &mut self,
        matched: LogIndex,
        leader_commit: LogIndex,
        epoch_known: u64,
    ) {
        #[cfg(feature = "mutations")]
        let epoch_known = if self.mutated(crate::config::Mutation::AnswersAcrossDataLoss) {
            self.repair_epoch
        } else {
            epoch_known
        };
        if !self.repairing || leader_commit > matched || epoch_known != self.repair_epoch {
            return;
        }
        if self.log.term(leader_commit) != Some(self.hard.term) {
            return;
        }
        self.repairing = false;
        let epoch = self.repair_epoch;
        self.write(LogWrite::Repair {
            epoch,
            repairing: false,
        });
        self.out.events.push(Event::RepairFinished {
            caught_up_to: leader_commit,
        });
    }
}
