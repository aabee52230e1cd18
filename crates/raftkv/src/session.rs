//! Client sessions: exactly-once writes (Raft thesis §6.3).
//!
//! A client that gets no answer to a write ("outcome unknown": the leader changed, the
//! connection broke) cannot tell whether it was applied; sending it again could apply it twice
//! (an INCR counted twice). With a session, a client numbers its writes: `SESSION <client>
//! <seq> <command...>`. Every replica remembers, per client, the last sequence number it applied
//! and that write's answer, as part of the replicated state (snapshots carry it). A write whose
//! number was applied already is not applied again: the replica answers what it answered the
//! first time. So a client may resend a write of unknown outcome, with the same number, as often
//! as it likes, and it takes effect once.
//!
//! Rules, applied alike by every replica (they depend only on the log):
//! - a client's first write has sequence number 1 and opens its session;
//! - `seq == last`: a duplicate, answered with the first answer, nothing applied;
//! - `seq > last`: applied, and remembered as the last (one write in flight per session: a
//!   client sends write n + 1 only once write n has an answer);
//! - `seq < last`: refused (`ERR SESSION ... older`): an answer it no longer keeps;
//! - an unknown client with `seq > 1`: refused (`ERR SESSION ... expired`): its session was
//!   evicted, so whether its earlier writes were applied is not known any more.
//!
//! Sessions expire deterministically: at most [`MAX_SESSIONS`]; opening one more evicts the
//! session whose last write is oldest in the log.

use raftengine::LogIndex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Sessions remembered at once; the least recently written is evicted beyond.
pub const MAX_SESSIONS: usize = 100_000;

/// What one client's session remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSession {
    /// The last sequence number applied.
    pub seq: u64,
    /// Its answer: the encoded output, or the refusal's text.
    pub answer: Result<Vec<u8>, String>,
    /// Where in the log it was applied (for eviction).
    pub index: LogIndex,
}

/// What to do with a numbered write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// New: apply it, then [`Sessions::record`].
    Apply,
    /// Applied before: answer this, apply nothing.
    Duplicate(Result<Vec<u8>, String>),
    /// Refuse with this text.
    Refuse(String),
}

/// Every client's session, in the replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sessions {
    by_client: BTreeMap<u64, ClientSession>,
    /// (index of the last write, client): the eviction order. Not serialized: rebuilt.
    #[serde(skip)]
    by_index: BTreeSet<(LogIndex, u64)>,
}

impl Sessions {
    /// Rebuilds the eviction order after deserializing.
    pub fn reindexed(mut self) -> Sessions {
        self.by_index = self
            .by_client
            .iter()
            .map(|(&client, session)| (session.index, client))
            .collect();
        self
    }

    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    pub fn get(&self, client: u64) -> Option<&ClientSession> {
        self.by_client.get(&client)
    }

    /// The rules of the module docs.
    pub fn verdict(&self, client: u64, seq: u64) -> Verdict {
        match self.by_client.get(&client) {
            Some(session) if seq == session.seq => Verdict::Duplicate(session.answer.clone()),
            Some(session) if seq < session.seq => Verdict::Refuse(format!(
                "ERR SESSION {client}: sequence {seq} is older than the last applied, {}",
                session.seq
            )),
            Some(_) => Verdict::Apply,
            None if seq == 1 => Verdict::Apply,
            None => Verdict::Refuse(format!(
                "ERR SESSION {client}: unknown or expired session (sequence {seq}); whether its \
                 earlier writes were applied is no longer known"
            )),
        }
    }

    /// Remembers write `seq` of `client`, applied at `index`, and its answer; evicts the oldest
    /// session when there are too many.
    pub fn record(
        &mut self,
        client: u64,
        seq: u64,
        answer: Result<Vec<u8>, String>,
        index: LogIndex,
    ) {
        if let Some(old) = self.by_client.get(&client) {
            self.by_index.remove(&(old.index, client));
        }
        self.by_client
            .insert(client, ClientSession { seq, answer, index });
        self.by_index.insert((index, client));
        while self.by_client.len() > MAX_SESSIONS {
            let Some((_, evicted)) = self.by_index.pop_first() else {
                break;
            };
            self.by_client.remove(&evicted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_get_the_first_answer_and_old_or_orphan_numbers_are_refused() {
        let mut sessions = Sessions::default();
        assert_eq!(sessions.verdict(7, 1), Verdict::Apply);
        assert!(
            matches!(sessions.verdict(7, 2), Verdict::Refuse(text) if text.contains("expired"))
        );
        sessions.record(7, 1, Ok(vec![1]), LogIndex(10));
        assert_eq!(sessions.verdict(7, 1), Verdict::Duplicate(Ok(vec![1])));
        assert_eq!(sessions.verdict(7, 2), Verdict::Apply);
        sessions.record(7, 2, Err("ERR not an integer".into()), LogIndex(11));
        assert_eq!(
            sessions.verdict(7, 2),
            Verdict::Duplicate(Err("ERR not an integer".into()))
        );
        assert!(matches!(sessions.verdict(7, 1), Verdict::Refuse(text) if text.contains("older")));
    }

    #[test]
    fn the_session_written_longest_ago_is_evicted_first() {
        let mut sessions = Sessions::default();
        for client in 0..MAX_SESSIONS as u64 {
            sessions.record(client, 1, Ok(Vec::new()), LogIndex(client + 1));
        }
        // Client 0 writes again: client 1 is now the oldest.
        sessions.record(0, 2, Ok(Vec::new()), LogIndex(MAX_SESSIONS as u64 + 1));
        sessions.record(
            u64::MAX,
            1,
            Ok(Vec::new()),
            LogIndex(MAX_SESSIONS as u64 + 2),
        );
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(sessions.get(1).is_none());
        assert!(sessions.get(0).is_some());
        let rebuilt: Sessions =
            postcard::from_bytes::<Sessions>(&postcard::to_allocvec(&sessions).unwrap())
                .unwrap()
                .reindexed();
        assert_eq!(rebuilt, sessions);
    }
}
