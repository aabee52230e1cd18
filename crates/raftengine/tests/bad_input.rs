//! Bad or unusual input is handled the way Raft prescribes, without panics: refused with a
//! `StepError` when it can only come from a broken peer, answered per the paper when it is
//! merely stale, duplicated or reordered. Also the held-messages rule: a reply that promises
//! durable state leaves the node only after the driver reported that state persisted.

use raftengine::{
    CommandRejected, Config, Entry, EntryPayload, Event, FatalError, HardState, LogIndex, LogWrite,
    Message, MessageBody, NodeId, Output, RaftNode, RequestId, RoleKind, Status, StepError,
    StoredState, Term,
};

// ----- helpers -----------------------------------------------------------------------------

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn config(id: u64, pre_vote: bool, check_quorum: bool) -> Config {
    let mut c = Config::new(NodeId(id), vec![N1, N2, N3]);
    c.pre_vote = pre_vote;
    c.check_quorum = check_quorum;
    c
}

/// A node of a three-node cluster, check-quorum off unless a test says otherwise, so that
/// leader stickiness does not get in the way of the rule under test.
fn node(id: u64) -> RaftNode {
    RaftNode::new(config(id, false, false)).expect("valid config")
}

fn msg(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term: Term(term),
        body,
    }
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(format!("cmd {index}@{term}").into_bytes()),
    }
}

/// AppendEntries carrying entries `(index, term)`.
fn append(
    from: NodeId,
    to: NodeId,
    term: u64,
    prev: (u64, u64),
    entries: &[(u64, u64)],
    commit: u64,
) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::AppendEntries {
            prev_log_index: LogIndex(prev.0),
            prev_log_term: Term(prev.1),
            entries: entries.iter().map(|&(i, t)| entry(i, t)).collect(),
            leader_commit: LogIndex(commit),
            read_round: 0,
            transfer: 0,
            repair_epoch: 0,
        },
    )
}

fn vote_request(from: NodeId, to: NodeId, term: u64, last: (u64, u64)) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::VoteRequest {
            last_log_index: LogIndex(last.0),
            last_log_term: Term(last.1),
            transfer: None,
        },
    )
}

fn pre_vote_request(from: NodeId, to: NodeId, proposed: u64, last: (u64, u64)) -> Message {
    msg(
        from,
        to,
        proposed,
        MessageBody::PreVoteRequest {
            last_log_index: LogIndex(last.0),
            last_log_term: Term(last.1),
            transfer: false,
        },
    )
}

/// Everything the node wants done, with every persist batch acknowledged at once (the output of
/// the acknowledgement is merged in).
fn settle(node: &mut RaftNode) -> Output {
    let mut all = Output::default();
    loop {
        let out = node.take_output();
        if out.is_empty() {
            return all;
        }
        if let Some(batch) = &out.persist {
            node.persisted(batch.seq)
                .expect("batches are reported in order");
        }
        all.persist = out.persist.or(all.persist);
        all.messages.extend(out.messages);
        all.committed.extend(out.committed);
        all.rejected.extend(out.rejected);
        all.events.extend(out.events);
        all.fatal = out.fatal.or(all.fatal);
    }
}

fn step_settled(node: &mut RaftNode, m: Message) -> Output {
    node.step(m).expect("step accepted");
    settle(node)
}

fn terms(node: &RaftNode) -> Vec<u64> {
    let last = node.log().last_index();
    node.log()
        .slice(LogIndex(1), last)
        .iter()
        .map(|e| e.term.0)
        .collect()
}

/// The only message in `out`, which must be an AppendEntriesResponse:
/// (term, success, match_index, reject_hint, last_log_index).
fn only_append_response(out: &Output) -> (u64, bool, u64, u64, u64) {
    assert_eq!(
        out.messages.len(),
        1,
        "one reply expected: {:?}",
        out.messages
    );
    match &out.messages[0].body {
        MessageBody::AppendEntriesResponse {
            success,
            match_index,
            reject_hint,
            last_log_index,
            ..
        } => (
            out.messages[0].term.0,
            *success,
            match_index.0,
            reject_hint.0,
            last_log_index.0,
        ),
        other => panic!("expected an append response, got {other:?}"),
    }
}

/// The only message in `out`, which must be a (pre-)vote response: (term, granted).
fn only_vote_response(out: &Output) -> (u64, bool) {
    assert_eq!(
        out.messages.len(),
        1,
        "one reply expected: {:?}",
        out.messages
    );
    match &out.messages[0].body {
        MessageBody::VoteResponse { granted } | MessageBody::PreVoteResponse { granted } => {
            (out.messages[0].term.0, *granted)
        }
        other => panic!("expected a vote response, got {other:?}"),
    }
}

/// A follower (node 2) of leader 1 in `term`, holding entries `(index, term)` and told commit
/// `commit`.
fn follower_with(term: u64, entries: &[(u64, u64)], commit: u64) -> RaftNode {
    let mut n = node(2);
    let out = step_settled(&mut n, append(N1, N2, term, (0, 0), entries, commit));
    assert!(only_append_response(&out).1);
    n
}

/// Node 2 restarted from storage holding `term` (no vote) and entries `(index, term)`: it knows
/// no leader, so leader stickiness does not interfere with the vote rule under test.
fn voter_with(term: u64, entries: &[(u64, u64)]) -> RaftNode {
    let stored = StoredState {
        hard_state: HardState {
            term: Term(term),
            voted_for: None,
        },
        entries: entries.iter().map(|&(i, t)| entry(i, t)).collect(),
        ..StoredState::default()
    };
    let n = RaftNode::restart(config(2, false, false), stored).expect("valid stored state");
    assert_eq!(n.leader(), None);
    n
}

fn same_state(a: &Status, b: &Status) {
    assert_eq!(a, b, "state changed");
}

// ----- membership and addressing -------------------------------------------------------------

#[test]
fn requests_from_an_unknown_sender_are_refused() {
    let mut n = follower_with(1, &[(1, 1)], 0);
    let before = n.status();
    let stranger = NodeId(9);
    // Not a member of any configuration this node knows: asking for something is an error...
    let propose = msg(
        stranger,
        N2,
        1,
        MessageBody::Propose {
            request: 1,
            command: b"x".to_vec(),
        },
    );
    assert_eq!(n.step(propose), Err(StepError::UnknownSender(stranger)));
    let read = msg(
        stranger,
        N2,
        1,
        MessageBody::ReadIndexRequest { request: 2 },
    );
    assert_eq!(n.step(read), Err(StepError::UnknownSender(stranger)));
    same_state(&before, &n.status());
    let out = n.take_output();
    assert!(out.messages.is_empty() && out.persist.is_none());
}

#[test]
fn a_leader_from_a_configuration_not_seen_yet_is_followed() {
    // Thesis §4.1: a server accepts AppendEntries from a leader outside its configuration (the
    // leader may belong to a newer one this server has not received yet).
    let mut n = follower_with(1, &[(1, 1)], 0);
    let newcomer = NodeId(9);
    let out = step_settled(&mut n, append(newcomer, N2, 5, (1, 1), &[(2, 5)], 1));
    assert_eq!(n.leader(), Some(newcomer));
    assert!(only_append_response(&out).1);
}

#[test]
fn message_claiming_to_come_from_the_node_itself_is_refused() {
    let mut n = node(2);
    let err = n.step(vote_request(N2, N2, 1, (0, 0)));
    assert_eq!(err, Err(StepError::UnknownSender(N2)));
    assert_eq!(n.term(), Term(0));
    assert!(n.take_output().is_empty());
}

#[test]
fn message_addressed_to_another_node_is_refused_without_state_change() {
    let mut n = follower_with(1, &[(1, 1)], 0);
    let before = n.status();
    let err = n.step(append(N1, N3, 4, (1, 1), &[(2, 4)], 2));
    assert_eq!(err, Err(StepError::WrongRecipient(N3)));
    same_state(&before, &n.status());
    assert!(n.take_output().is_empty());
}

// ----- stale terms ---------------------------------------------------------------------------

#[test]
fn stale_term_append_is_answered_with_failure_carrying_newer_term_and_changes_nothing() {
    let mut n = follower_with(3, &[(1, 1), (2, 3)], 1);
    let before = n.status();
    // Node 3 still believes it leads term 2.
    let out = step_settled(&mut n, append(N3, N2, 2, (2, 2), &[(3, 2)], 3));
    assert_eq!(out.messages[0].to, N3);
    let (term, success, _, _, _) = only_append_response(&out);
    assert_eq!(
        term, 3,
        "the reply carries the newer term so the old leader steps down"
    );
    assert!(!success);
    same_state(&before, &n.status());
    assert_eq!(n.leader(), Some(N1), "a stale leader is not followed");
    assert!(out.persist.is_none());
}

#[test]
fn stale_term_vote_request_is_refused_with_the_newer_term() {
    let mut n = follower_with(3, &[(1, 3)], 0);
    let before = n.status();
    // A better log, but an old term.
    let out = step_settled(&mut n, vote_request(N3, N2, 2, (10, 2)));
    assert_eq!(only_vote_response(&out), (3, false));
    same_state(&before, &n.status());
    assert_eq!(n.hard_state().voted_for, None);
    assert!(out.persist.is_none());
}

#[test]
fn stale_term_pre_vote_request_is_refused_with_the_newer_term() {
    let mut n = follower_with(3, &[(1, 3)], 0);
    let before = n.status();
    let out = step_settled(&mut n, pre_vote_request(N3, N2, 2, (10, 2)));
    assert_eq!(only_vote_response(&out), (3, false));
    same_state(&before, &n.status());
}

// ----- log consistency check -----------------------------------------------------------------

#[test]
fn append_with_prev_index_beyond_the_log_is_rejected_with_last_index_hint_and_no_truncation() {
    let mut n = follower_with(1, &[(1, 1), (2, 1)], 1);
    let before = terms(&n);
    let out = step_settled(&mut n, append(N1, N2, 1, (5, 1), &[(6, 1)], 1));
    let (term, success, _, hint, last) = only_append_response(&out);
    assert_eq!(term, 1);
    assert!(!success);
    assert_eq!(hint, 2, "the leader is told to retry after our last index");
    assert_eq!(last, 2);
    assert_eq!(terms(&n), before, "nothing truncated, nothing appended");
    assert_eq!(n.commit_index(), LogIndex(1));
}

#[test]
fn append_with_mismatching_prev_term_is_rejected_with_hint_before_the_conflicting_term() {
    // Entries 1..=2 of term 1, 3..=4 of term 2; the leader asks about index 4 with term 3.
    let mut n = follower_with(2, &[(1, 1), (2, 1), (3, 2), (4, 2)], 0);
    let before = terms(&n);
    let out = step_settled(&mut n, append(N1, N2, 3, (4, 3), &[(5, 3)], 0));
    let (term, success, _, hint, last) = only_append_response(&out);
    assert_eq!(term, 3);
    assert!(!success);
    assert_eq!(hint, 2, "skip the whole conflicting term 2");
    assert_eq!(last, 4);
    assert_eq!(
        terms(&n),
        before,
        "a failed consistency check truncates nothing"
    );
}

#[test]
fn append_with_non_contiguous_indexes_is_malformed_and_changes_nothing() {
    let mut n = follower_with(1, &[(1, 1)], 0);
    let before = n.status();
    // A newer term too: even the term must not be adopted from a malformed message.
    let err = n.step(append(N1, N2, 2, (1, 1), &[(2, 2), (4, 2)], 0));
    assert!(
        matches!(err, Err(StepError::MalformedAppend { from, .. }) if from == N1),
        "{err:?}"
    );
    let err = n.step(append(N1, N2, 2, (1, 1), &[(3, 2)], 0));
    assert!(
        matches!(err, Err(StepError::MalformedAppend { .. })),
        "{err:?}"
    );
    same_state(&before, &n.status());
    assert!(n.take_output().is_empty());
}

#[test]
fn append_with_decreasing_entry_terms_is_malformed() {
    let mut n = node(2);
    let err = n.step(append(N1, N2, 3, (0, 0), &[(1, 3), (2, 2)], 0));
    assert!(
        matches!(err, Err(StepError::MalformedAppend { .. })),
        "{err:?}"
    );
    assert_eq!(n.term(), Term(0));
    assert_eq!(n.log().last_index(), LogIndex(0));
}

#[test]
fn duplicated_append_is_idempotent_and_answered_each_time() {
    let mut n = node(2);
    let m = append(N1, N2, 1, (0, 0), &[(1, 1), (2, 1)], 1);
    let first = step_settled(&mut n, m.clone());
    let log_after_first = n.log().slice(LogIndex(1), LogIndex(10)).to_vec();
    let second = step_settled(&mut n, m);
    assert_eq!(
        n.log().slice(LogIndex(1), LogIndex(10)),
        &log_after_first[..]
    );
    assert_eq!(only_append_response(&first), (1, true, 2, 0, 2));
    assert_eq!(only_append_response(&second), (1, true, 2, 0, 2));
    assert!(
        second.persist.is_none(),
        "nothing new to persist for a duplicate: {:?}",
        second.persist
    );
    assert_eq!(n.commit_index(), LogIndex(1));
}

#[test]
fn reordered_older_append_does_not_truncate_matching_entries() {
    let mut n = node(2);
    let older = append(N1, N2, 1, (0, 0), &[(1, 1)], 0);
    let newer = append(N1, N2, 1, (0, 0), &[(1, 1), (2, 1), (3, 1)], 2);
    step_settled(&mut n, newer);
    assert_eq!(terms(&n), vec![1, 1, 1]);
    let out = step_settled(&mut n, older);
    assert_eq!(
        terms(&n),
        vec![1, 1, 1],
        "entries 2..=3 match and must stay"
    );
    let (_, success, match_index, _, last) = only_append_response(&out);
    assert!(success);
    assert_eq!(
        match_index, 1,
        "match index covers only what the request proved"
    );
    assert_eq!(last, 3);
    assert_eq!(n.commit_index(), LogIndex(2), "commit never goes back");
    assert!(!out
        .events
        .iter()
        .any(|e| matches!(e, Event::LogTruncated { .. })));
}

#[test]
fn conflicting_uncommitted_suffix_is_truncated_and_replaced() {
    let mut n = follower_with(1, &[(1, 1), (2, 1), (3, 1)], 1);
    let out = step_settled(&mut n, append(N3, N2, 2, (1, 1), &[(2, 2)], 1));
    assert_eq!(terms(&n), vec![1, 2]);
    assert!(out
        .events
        .contains(&Event::LogTruncated { from: LogIndex(2) }));
    let writes = &out
        .persist
        .as_ref()
        .expect("truncation is persisted")
        .writes;
    assert!(writes.contains(&LogWrite::TruncateFrom(LogIndex(2))));
    assert_eq!(only_append_response(&out), (2, true, 2, 0, 2));
}

#[test]
fn truncating_below_commit_index_stops_the_node_with_fatal_error() {
    let mut n = follower_with(1, &[(1, 1), (2, 1)], 2);
    assert_eq!(n.commit_index(), LogIndex(2));
    // A (broken) leader of term 2 claims index 2 holds a term-2 entry.
    n.step(append(N3, N2, 2, (1, 1), &[(2, 2)], 2))
        .expect("the input itself is well formed");
    let out = n.take_output();
    assert_eq!(
        out.fatal,
        Some(FatalError::TruncateCommitted {
            index: LogIndex(2),
            commit: LogIndex(2),
        })
    );
    assert!(
        !out.messages.iter().any(|m| matches!(
            m.body,
            MessageBody::AppendEntriesResponse { success: true, .. }
        )),
        "no success for an append the node refused"
    );
    assert_eq!(terms(&n), vec![1, 1], "the committed entry is kept");
    assert!(n.is_stopped().is_some());
    // Every later input is refused or ignored.
    let stopped = n.step(append(N1, N2, 3, (2, 1), &[(3, 3)], 2));
    assert!(matches!(
        stopped,
        Err(StepError::Stopped(FatalError::TruncateCommitted { .. }))
    ));
    n.tick();
    n.campaign(false);
    n.propose(RequestId(7), b"x".to_vec());
    let out = n.take_output();
    assert!(out.messages.is_empty());
    assert!(out.fatal.is_none(), "the fatal error is reported once");
    assert_eq!(out.rejected, vec![(RequestId(7), CommandRejected::Retry)]);
    assert_eq!(n.role(), RoleKind::Follower);
}

/// The `ConflictingLeader` events in `out`: (term, known leader, claimed leader).
fn conflicting_leaders(out: &Output) -> Vec<(u64, NodeId, NodeId)> {
    out.events
        .iter()
        .filter_map(|event| match event {
            Event::ConflictingLeader {
                term,
                known_leader,
                claimed_leader,
            } => Some((term.0, *known_leader, *claimed_leader)),
            _ => None,
        })
        .collect()
}

#[test]
fn append_at_same_term_to_a_leader_is_refused_as_a_second_leader() {
    let mut n = RaftNode::new(config(1, false, false)).unwrap();
    n.campaign(false);
    settle(&mut n);
    step_settled(
        &mut n,
        msg(N2, N1, 1, MessageBody::VoteResponse { granted: true }),
    );
    assert_eq!(n.role(), RoleKind::Leader);
    let last = n.log().last_index();
    let out = step_settled(&mut n, append(N3, N1, 1, (0, 0), &[(1, 1)], 0));
    assert_eq!(conflicting_leaders(&out), vec![(1, N1, N3)]);
    assert!(out.messages.is_empty(), "the claimed leader gets no answer");
    assert_eq!(n.role(), RoleKind::Leader);
    assert_eq!(n.log().last_index(), last);
}

#[test]
fn a_follower_refuses_a_second_leader_of_its_term() {
    // Node 2 follows node 1 in term 2; node 3 claims term 2 too (a forged or misconfigured
    // peer: Raft elects one leader per term).
    let mut n = follower_with(2, &[(1, 1), (2, 2)], 1);
    let before = n.status();
    let out = step_settled(&mut n, append(N3, N2, 2, (2, 2), &[(3, 2)], 3));
    assert_eq!(conflicting_leaders(&out), vec![(2, N1, N3)]);
    assert!(out.messages.is_empty());
    assert!(
        out.committed.is_empty(),
        "nothing of the claimed leader's is applied"
    );
    same_state(&n.status(), &before);
    // A snapshot chunk from it is refused alike.
    let chunk = msg(
        N3,
        N2,
        2,
        MessageBody::InstallSnapshot {
            last_included: raftengine::LogId {
                index: LogIndex(9),
                term: Term(2),
            },
            membership: raftengine::Membership::with_voters([N1, N2, N3]),
            offset: 0,
            data: b"forged".to_vec(),
            done: true,
        },
    );
    let out = step_settled(&mut n, chunk);
    assert_eq!(conflicting_leaders(&out), vec![(2, N1, N3)]);
    same_state(&n.status(), &before);
    // The real leader goes on being followed.
    let out = step_settled(&mut n, append(N1, N2, 2, (2, 2), &[(3, 2)], 3));
    assert!(only_append_response(&out).1);
    assert!(conflicting_leaders(&out).is_empty());
}

#[test]
fn a_node_that_knows_no_leader_follows_the_first_one_it_hears() {
    // After a restart (no leader known), and on a newer term, an AppendEntries is a legitimate
    // leader's: no conflict is reported.
    let mut n = voter_with(2, &[(1, 1), (2, 2)]);
    let out = step_settled(&mut n, append(N3, N2, 2, (2, 2), &[], 2));
    assert!(only_append_response(&out).1);
    assert!(conflicting_leaders(&out).is_empty());
    assert_eq!(n.leader(), Some(N3));
    let out = step_settled(&mut n, append(N1, N2, 3, (2, 2), &[], 2));
    assert!(only_append_response(&out).1);
    assert!(conflicting_leaders(&out).is_empty());
    assert_eq!(n.leader(), Some(N1));
}

// ----- votes ---------------------------------------------------------------------------------

#[test]
fn vote_request_from_candidate_with_older_last_term_is_refused() {
    let mut n = voter_with(2, &[(1, 1), (2, 2)]);
    // Longer log, older last term.
    let out = step_settled(&mut n, vote_request(N3, N2, 5, (9, 1)));
    assert_eq!(only_vote_response(&out), (5, false));
    assert_eq!(
        n.hard_state(),
        HardState {
            term: Term(5),
            voted_for: None
        },
        "the newer term is adopted, the vote is not given"
    );
}

#[test]
fn vote_request_from_candidate_with_shorter_log_of_same_last_term_is_refused() {
    let mut n = voter_with(2, &[(1, 1), (2, 2), (3, 2)]);
    let out = step_settled(&mut n, vote_request(N3, N2, 3, (2, 2)));
    assert_eq!(only_vote_response(&out), (3, false));
    assert_eq!(n.hard_state().voted_for, None);
}

#[test]
fn only_the_first_of_two_candidates_in_one_term_gets_the_vote() {
    let mut n = node(1);
    let out = step_settled(&mut n, vote_request(N2, N1, 1, (0, 0)));
    assert_eq!(only_vote_response(&out), (1, true));
    let out = step_settled(&mut n, vote_request(N3, N1, 1, (5, 1)));
    assert_eq!(only_vote_response(&out), (1, false), "one vote per term");
    assert_eq!(n.hard_state().voted_for, Some(N2));
    // A retransmitted request of the first candidate is granted again (idempotent).
    let out = step_settled(&mut n, vote_request(N2, N1, 1, (0, 0)));
    assert_eq!(only_vote_response(&out), (1, true));
    assert_eq!(n.hard_state().voted_for, Some(N2));
}

#[test]
fn pre_vote_is_granted_without_changing_the_voters_term_or_vote() {
    let mut n = voter_with(2, &[(1, 2)]);
    let before = n.status();
    let out = step_settled(&mut n, pre_vote_request(N3, N2, 5, (1, 2)));
    assert_eq!(
        only_vote_response(&out),
        (5, true),
        "a granted pre-vote answers the proposed term"
    );
    assert!(out.persist.is_none(), "a pre-vote writes nothing");
    same_state(&before, &n.status());
    assert_eq!(n.term(), Term(2));
}

#[test]
fn pre_vote_from_candidate_with_stale_log_is_refused_without_term_change() {
    let mut n = voter_with(2, &[(1, 2)]);
    let before = n.status();
    let out = step_settled(&mut n, pre_vote_request(N3, N2, 5, (4, 1)));
    assert_eq!(only_vote_response(&out), (2, false));
    same_state(&before, &n.status());
}

#[test]
fn pre_vote_and_vote_are_refused_by_a_follower_that_just_heard_from_a_live_leader() {
    let mut n = RaftNode::new(config(2, true, true)).unwrap();
    step_settled(&mut n, append(N1, N2, 1, (0, 0), &[(1, 1)], 0));
    assert_eq!(n.leader(), Some(N1));
    let before = n.status();

    let out = step_settled(&mut n, pre_vote_request(N3, N2, 2, (1, 1)));
    assert_eq!(only_vote_response(&out), (1, false));
    assert!(out.events.iter().any(|e| matches!(
        e,
        Event::VoteRefused {
            reason: "a leader is alive",
            ..
        }
    )));
    same_state(&before, &n.status());

    // A real vote request of a newer term is ignored outright: no term change, no vote.
    let out = step_settled(&mut n, vote_request(N3, N2, 2, (1, 1)));
    assert!(out.messages.is_empty());
    assert!(out.persist.is_none());
    same_state(&before, &n.status());

    // A leadership transfer is let through.
    let transfer = msg(
        N3,
        N2,
        2,
        MessageBody::PreVoteRequest {
            last_log_index: LogIndex(1),
            last_log_term: Term(1),
            transfer: true,
        },
    );
    let out = step_settled(&mut n, transfer);
    assert_eq!(only_vote_response(&out), (2, true));
}

#[test]
fn pre_vote_is_granted_once_the_leader_was_silent_for_the_minimum_election_timeout() {
    let mut n = RaftNode::new(config(2, true, true)).unwrap();
    step_settled(&mut n, append(N1, N2, 1, (0, 0), &[(1, 1)], 0));
    let min = n.config().election_timeout_min_ticks;
    // One tick short of the minimum election timeout the leader still counts as alive.
    for _ in 0..min - 1 {
        n.tick();
    }
    settle(&mut n);
    let out = step_settled(&mut n, pre_vote_request(N3, N2, 2, (1, 1)));
    assert_eq!(only_vote_response(&out), (1, false));
    n.tick();
    settle(&mut n);
    n.step(pre_vote_request(N3, N2, 2, (1, 1))).unwrap();
    let out = settle(&mut n);
    let answer: Vec<(u64, bool)> = out
        .messages
        .iter()
        .filter(|m| m.to == N3)
        .filter_map(|m| match m.body {
            MessageBody::PreVoteResponse { granted } => Some((m.term.0, granted)),
            _ => None,
        })
        .collect();
    assert_eq!(answer, vec![(2, true)]);
    assert_eq!(n.term(), Term(1), "still no term change");
}

// ----- the held-messages rule ----------------------------------------------------------------

#[test]
fn vote_is_held_until_the_vote_is_persisted() {
    let mut n = node(1);
    n.step(vote_request(N2, N1, 1, (0, 0))).unwrap();
    let out = n.take_output();
    assert!(out.messages.is_empty(), "vote sent before it was durable");
    let batch = out.persist.expect("the vote must be persisted");
    assert!(batch.writes.contains(&LogWrite::HardState(HardState {
        term: Term(1),
        voted_for: Some(N2)
    })));
    assert!(n.take_output().messages.is_empty(), "still not persisted");
    n.persisted(batch.seq)
        .expect("batches are reported in order");
    let out = n.take_output();
    assert_eq!(only_vote_response(&out), (1, true));
}

#[test]
fn append_success_is_held_until_the_entries_are_persisted() {
    let mut n = node(2);
    n.step(append(N1, N2, 1, (0, 0), &[(1, 1), (2, 1)], 0))
        .unwrap();
    let out = n.take_output();
    assert!(
        out.messages.is_empty(),
        "success sent before entries were durable"
    );
    let batch = out.persist.expect("entries to persist");
    // A duplicate arriving before the disk write finished is held as well: its success also
    // promises the entries are durable.
    n.step(append(N1, N2, 1, (0, 0), &[(1, 1), (2, 1)], 0))
        .unwrap();
    let out = n.take_output();
    assert!(out.messages.is_empty());
    assert!(out.persist.is_none());
    n.persisted(batch.seq)
        .expect("batches are reported in order");
    let out = n.take_output();
    assert_eq!(out.messages.len(), 2, "both replies released, in order");
    for m in &out.messages {
        assert!(matches!(
            m.body,
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index: LogIndex(2),
                ..
            }
        ));
    }
}

#[test]
fn a_reply_needing_no_write_waits_behind_an_earlier_unpersisted_batch() {
    let mut n = node(2);
    n.step(append(N1, N2, 1, (0, 0), &[(1, 1)], 0)).unwrap();
    let batch = n.take_output().persist.expect("batch");
    // A stale vote request needs no write, but must not overtake the held append success.
    n.step(vote_request(N3, N2, 0, (0, 0))).unwrap();
    assert!(n.take_output().messages.is_empty());
    n.persisted(batch.seq)
        .expect("batches are reported in order");
    let out = n.take_output();
    let kinds: Vec<&str> = out.messages.iter().map(|m| m.body.code()).collect();
    assert_eq!(kinds, vec!["ae_reply", "vote"]);
}

#[test]
fn candidate_vote_requests_wait_for_its_own_vote_to_be_persisted() {
    let mut n = node(1);
    n.campaign(false);
    let out = n.take_output();
    assert!(out.messages.is_empty());
    let batch = out.persist.expect("term and self-vote");
    n.persisted(batch.seq)
        .expect("batches are reported in order");
    let out = n.take_output();
    assert_eq!(out.messages.len(), 2);
    assert!(out
        .messages
        .iter()
        .all(|m| matches!(m.body, MessageBody::VoteRequest { .. }) && m.term == Term(1)));
}

#[test]
fn leader_sends_append_entries_before_its_own_persist() {
    let mut n = node(1);
    n.campaign(false);
    settle(&mut n);
    n.step(msg(N2, N1, 1, MessageBody::VoteResponse { granted: true }))
        .unwrap();
    assert_eq!(n.role(), RoleKind::Leader);
    let out = n.take_output();
    let batch = out.persist.expect("the term-start entry is persisted");
    let appends = out
        .messages
        .iter()
        .filter(|m| matches!(m.body, MessageBody::AppendEntries { .. }))
        .count();
    assert_eq!(
        appends, 2,
        "appends go out in parallel with the leader's write"
    );

    // A proposal before the first batch is durable is sent at once too.
    n.propose(RequestId(1), b"x".to_vec());
    let out = n.take_output();
    assert!(out.persist.is_some());
    assert_eq!(
        out.messages
            .iter()
            .filter(|m| matches!(m.body, MessageBody::AppendEntries { .. }))
            .count(),
        0,
        "followers in probe state wait for the outstanding probe"
    );

    // The leader counts itself only up to what it made durable: one follower ack is not enough
    // to commit the term-start entry in a cluster of three until the leader's write is done.
    n.step(msg(
        N2,
        N1,
        1,
        MessageBody::AppendEntriesResponse {
            success: true,
            match_index: LogIndex(1),
            reject_hint: LogIndex(0),
            last_log_index: LogIndex(1),
            prev_log_index: LogIndex(0),
            read_round: 0,
            repairing: false,
            repair_epoch: 0,
        },
    ))
    .unwrap();
    let out = n.take_output();
    assert!(
        out.messages.iter().any(
            |m| matches!(&m.body, MessageBody::AppendEntries { entries, .. } if !entries.is_empty())
        ),
        "the follower now replicating gets the proposal before any persist: {:?}",
        out.messages
    );
    assert_eq!(
        n.commit_index(),
        LogIndex(0),
        "the leader's own copy counts only once durable"
    );
    n.persisted(batch.seq)
        .expect("batches are reported in order");
    let out = n.take_output();
    assert_eq!(
        n.commit_index(),
        LogIndex(1),
        "leader + follower hold index 1"
    );
    assert!(out.events.contains(&Event::CommitAdvanced {
        commit: LogIndex(1)
    }));
}

// ----- leader stickiness and check-quorum --------------------------------------------------

/// Paper §5.1 / figure 2: a server that sees a newer term in a request adopts it and steps down.
/// The thesis §4.2.3 exception ("a leader is alive: ignore the vote request") belongs to
/// check-quorum (`Config::check_quorum`); with it off a leader too must step down and may vote.
/// (Regression: the leader used to ignore every newer-term vote request regardless of
/// check-quorum; fixed in b16e074.)
#[test]
fn leader_without_check_quorum_steps_down_on_a_newer_term_vote_request() {
    let mut n = node(1); // pre-vote off, check-quorum off
    n.campaign(false);
    settle(&mut n);
    step_settled(
        &mut n,
        msg(N2, N1, 1, MessageBody::VoteResponse { granted: true }),
    );
    assert_eq!(n.role(), RoleKind::Leader);
    assert!(!n.config().check_quorum);
    // Node 3's log (index 1, term 1) is as up to date as the leader's.
    let out = step_settled(&mut n, vote_request(N3, N1, 2, (1, 1)));
    assert_eq!(n.term(), Term(2), "the newer term is adopted");
    assert_eq!(n.role(), RoleKind::Follower, "the old leader steps down");
    assert_eq!(only_vote_response(&out), (2, true));
}

#[test]
fn without_check_quorum_a_follower_of_a_live_leader_refuses_pre_votes_but_honours_newer_vote_requests(
) {
    let mut n = node(2); // pre-vote off, check-quorum off
    step_settled(&mut n, append(N1, N2, 1, (0, 0), &[(1, 1)], 0));
    assert_eq!(n.leader(), Some(N1));
    // Pre-vote (thesis §9.6): "would you vote for me?" is refused while the leader is heard from.
    let out = step_settled(&mut n, pre_vote_request(N3, N2, 2, (1, 1)));
    assert_eq!(only_vote_response(&out), (1, false));
    assert_eq!(n.term(), Term(1));
    // A real RequestVote of a newer term is not subject to stickiness without check-quorum.
    let out = step_settled(&mut n, vote_request(N3, N2, 2, (1, 1)));
    assert_eq!(only_vote_response(&out), (2, true));
    assert_eq!(
        n.hard_state(),
        HardState {
            term: Term(2),
            voted_for: Some(N3)
        }
    );
    assert_eq!(n.leader(), None);
}
