//! The edges an outside review found: peer values at the limits of `u64`, a driver that misreports
//! durability, a snapshot installed only once the driver has it durably, stale rejections,
//! command sizes, and byte-bounded AppendEntries.

use raftengine::{
    CommandRejected, Config, DriverError, Entry, EntryPayload, Event, LogId, LogIndex, LogWrite,
    Membership, Message, MessageBody, NodeId, Output, RaftNode, RequestId, RoleKind, StepError,
    Term, MAX_INDEX, MAX_TERM,
};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn config(id: u64) -> Config {
    let mut c = Config::new(NodeId(id), vec![N1, N2, N3]);
    // Leader stickiness would hide the rules under test.
    c.check_quorum = false;
    c.pre_vote = false;
    c
}

fn msg(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term: Term(term),
        body,
    }
}

fn command(index: u64, term: u64, bytes: usize) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(vec![7; bytes]),
    }
}

fn append(term: u64, prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> Message {
    msg(
        N1,
        N2,
        term,
        MessageBody::AppendEntries {
            prev_log_index: LogIndex(prev.0),
            prev_log_term: Term(prev.1),
            entries,
            leader_commit: LogIndex(commit),
            read_round: 0,
            transfer: 0,
            repair_epoch: 0,
        },
    )
}

/// Everything the node wants done, every batch reported durable at once.
fn settle(node: &mut RaftNode) -> Output {
    let mut all = Output::default();
    loop {
        let out = node.take_output();
        if out.is_empty() {
            return all;
        }
        if let Some(batch) = &out.persist {
            node.persisted(batch.seq).expect("reported in order");
        }
        all.messages.extend(out.messages);
        all.committed.extend(out.committed);
        all.rejected.extend(out.rejected);
        all.events.extend(out.events);
        all.install_snapshot = out.install_snapshot.or(all.install_snapshot);
    }
}

/// Node 1 elected leader of term 1 by node 2's vote; its term-start entry is index 1.
fn leader() -> RaftNode {
    leader_with(config(1))
}

/// The same, with node 1's configuration `c`.
fn leader_with(c: Config) -> RaftNode {
    let mut n = RaftNode::new(c).expect("valid config");
    n.campaign(false);
    settle(&mut n);
    n.step(msg(N2, N1, 1, MessageBody::VoteResponse { granted: true }))
        .expect("vote accepted");
    settle(&mut n);
    assert_eq!(n.role(), RoleKind::Leader);
    n
}

fn ack(from: NodeId, matched: u64, answered: u64, success: bool) -> Message {
    msg(
        from,
        N1,
        1,
        MessageBody::AppendEntriesResponse {
            success,
            match_index: LogIndex(if success { matched } else { 0 }),
            reject_hint: LogIndex(if success { 0 } else { matched }),
            last_log_index: LogIndex(matched),
            prev_log_index: LogIndex(answered),
            read_round: 0,
            repairing: false,
            repair_epoch: 0,
        },
    )
}

// ----- peer values at the limits ---------------------------------------------------------------

#[test]
fn a_vote_request_of_the_largest_term_is_refused_and_the_next_campaign_does_not_wrap() {
    let mut n = RaftNode::new(config(2)).expect("valid config");
    let request = msg(
        N3,
        N2,
        u64::MAX,
        MessageBody::VoteRequest {
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
            transfer: None,
        },
    );
    let before = n.status();
    assert!(matches!(
        n.step(request),
        Err(StepError::OutOfRange { from: N3, .. })
    ));
    assert_eq!(n.status(), before);
    n.campaign(false);
    assert_eq!(n.term(), Term(1));
}

#[test]
fn the_largest_allowed_term_is_taken_and_campaigning_after_it_does_not_wrap() {
    let mut n = RaftNode::new(config(2)).expect("valid config");
    n.step(append(MAX_TERM.0, (0, 0), Vec::new(), 0))
        .expect("the limit itself is fine");
    assert_eq!(n.term(), MAX_TERM);
    n.campaign(false);
    assert_eq!(n.term(), MAX_TERM.next());
}

#[test]
fn every_index_and_offset_beyond_the_limit_is_refused() {
    let big = LogIndex(MAX_INDEX.0 + 1);
    let bodies = vec![
        MessageBody::AppendEntries {
            prev_log_index: big,
            prev_log_term: Term(1),
            entries: Vec::new(),
            leader_commit: LogIndex(0),
            read_round: 0,
            transfer: 0,
            repair_epoch: 0,
        },
        MessageBody::AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries: Vec::new(),
            leader_commit: big,
            read_round: 0,
            transfer: 0,
            repair_epoch: 0,
        },
        MessageBody::AppendEntriesResponse {
            success: false,
            match_index: LogIndex(0),
            reject_hint: LogIndex(u64::MAX),
            last_log_index: LogIndex(0),
            prev_log_index: LogIndex(0),
            read_round: 0,
            repairing: false,
            repair_epoch: 0,
        },
        MessageBody::InstallSnapshot {
            last_included: LogId {
                index: LogIndex(1),
                term: Term(1),
            },
            membership: Membership::default(),
            offset: u64::MAX,
            data: Vec::new(),
            done: false,
        },
        MessageBody::InstallSnapshotResponse {
            last_included: LogIndex(1),
            offset: 0,
            next_offset: u64::MAX,
            done: false,
        },
        MessageBody::TimeoutNow {
            last_log_index: big,
            transfer: 1,
        },
    ];
    for body in bodies {
        let mut n = leader();
        let before = n.status();
        let text = format!("{body:?}");
        let result = n.step(msg(N2, N1, 1, body));
        assert!(
            matches!(result, Err(StepError::OutOfRange { .. })),
            "{text}: {result:?}"
        );
        assert_eq!(n.status(), before, "{text} changed the node");
    }
}

// ----- a driver that misreports durability ----------------------------------------------------

#[test]
fn a_batch_never_issued_is_refused_and_releases_nothing() {
    let mut n = RaftNode::new(config(2)).expect("valid config");
    n.step(append(1, (0, 0), vec![command(1, 1, 3)], 0))
        .expect("accepted");
    let batch = n.take_output().persist.expect("entries to persist");
    assert_eq!(
        n.persisted(batch.seq + 1),
        Err(DriverError::UnknownBatch {
            seq: batch.seq + 1,
            issued: batch.seq
        })
    );
    assert!(n.take_output().messages.is_empty(), "nothing released");
    n.persisted(batch.seq).expect("the real report");
    assert_eq!(
        n.persisted(batch.seq),
        Ok(()),
        "a repeated report is harmless"
    );
    assert!(matches!(
        n.persisted(batch.seq - 1),
        Err(DriverError::OutOfOrder { .. })
    ));
    assert_eq!(n.take_output().messages.len(), 1, "the held answer, once");
}

// ----- snapshot installation order -------------------------------------------------------------

fn snapshot_chunk(index: u64, data: &[u8]) -> Message {
    msg(
        N1,
        N2,
        1,
        MessageBody::InstallSnapshot {
            last_included: LogId {
                index: LogIndex(index),
                term: Term(1),
            },
            membership: Membership::with_voters([N1, N2, N3]),
            offset: 0,
            data: data.to_vec(),
            done: true,
        },
    )
}

#[test]
fn a_snapshot_is_acknowledged_and_the_log_purged_only_after_the_driver_installed_it() {
    let mut n = RaftNode::new(config(2)).expect("valid config");
    n.step(append(1, (0, 0), vec![command(1, 1, 1)], 0))
        .expect("accepted");
    settle(&mut n);
    n.step(snapshot_chunk(5, b"state")).expect("accepted");
    let out = n.take_output();
    assert!(out.install_snapshot.is_some(), "handed to the driver");
    assert!(out.messages.is_empty(), "not acknowledged yet");
    assert!(
        out.persist.is_none(),
        "nothing purged before the snapshot is durable"
    );
    assert_eq!(n.log().start().index, LogIndex(0));
    assert!(matches!(
        n.snapshot_installed(LogIndex(4)),
        Err(DriverError::NoSuchInstall { .. })
    ));
    n.snapshot_installed(LogIndex(5))
        .expect("the snapshot given");
    let out = n.take_output();
    let batch = out.persist.expect("the purge");
    assert!(batch.writes.contains(&LogWrite::Purge {
        through: LogIndex(5),
        term: Term(1)
    }));
    assert!(out.events.contains(&Event::CommitAdvanced {
        commit: LogIndex(5)
    }));
    assert!(out.messages.is_empty(), "the answer waits for the purge");
    n.persisted(batch.seq).expect("in order");
    let out = n.take_output();
    assert!(matches!(
        out.messages.as_slice(),
        [Message {
            body: MessageBody::InstallSnapshotResponse { done: true, .. },
            ..
        }]
    ));
}

#[test]
fn appends_wait_while_a_snapshot_is_being_installed() {
    let mut n = RaftNode::new(config(2)).expect("valid config");
    n.step(snapshot_chunk(5, b"state")).expect("accepted");
    settle(&mut n);
    n.step(append(1, (5, 1), vec![command(6, 1, 1)], 6))
        .expect("accepted");
    let out = settle(&mut n);
    assert!(
        out.committed.is_empty(),
        "nothing applied past the snapshot"
    );
    assert_eq!(n.log().last_index(), LogIndex(0));
    assert!(matches!(
        out.messages.as_slice(),
        [Message {
            body: MessageBody::AppendEntriesResponse { success: false, .. },
            ..
        }]
    ));
}

#[test]
fn an_installed_snapshot_drops_a_conflicting_suffix_like_any_truncation() {
    let mut n = RaftNode::new(config(2)).expect("valid config");
    // Entries of term 1 at 1..=3, of which the snapshot (term 2 at index 2) conflicts from 2 on.
    n.step(append(
        1,
        (0, 0),
        (1..=3).map(|i| command(i, 1, 1)).collect(),
        0,
    ))
    .expect("accepted");
    settle(&mut n);
    let chunk = msg(
        N1,
        N2,
        2,
        MessageBody::InstallSnapshot {
            last_included: LogId {
                index: LogIndex(2),
                term: Term(2),
            },
            membership: Membership::with_voters([N1, N2, N3]),
            offset: 0,
            data: b"s".to_vec(),
            done: true,
        },
    );
    n.step(chunk).expect("accepted");
    settle(&mut n);
    n.snapshot_installed(LogIndex(2)).expect("installed");
    let out = settle(&mut n);
    assert!(out
        .events
        .contains(&Event::LogTruncated { from: LogIndex(3) }));
    assert_eq!(n.log().last_index(), LogIndex(2));
    assert_eq!(n.commit_index(), LogIndex(2));
}

// ----- stale rejections -------------------------------------------------------------------------

#[test]
fn a_late_rejection_of_an_old_request_does_not_lower_the_match_index() {
    let mut n = leader();
    for i in 0..3 {
        n.propose(RequestId(i), vec![1]);
    }
    settle(&mut n);
    n.step(ack(N2, 4, 1, true)).expect("accepted");
    settle(&mut n);
    let matched = |n: &RaftNode| {
        n.status()
            .progress
            .iter()
            .find(|(id, _, _)| *id == N2)
            .map(|(_, m, _)| *m)
    };
    assert_eq!(matched(&n), Some(LogIndex(4)));
    // A rejection answering an AppendEntries whose previous index was 1, sent long ago.
    n.step(ack(N2, 1, 1, false)).expect("accepted");
    settle(&mut n);
    assert_eq!(matched(&n), Some(LogIndex(4)), "stale: ignored");
    // A rejection answering a current request (a follower that lost entries) is believed.
    n.step(ack(N2, 2, 4, false)).expect("accepted");
    settle(&mut n);
    assert_eq!(matched(&n), Some(LogIndex(2)));
}

// ----- sizes -----------------------------------------------------------------------------------

#[test]
fn a_command_over_the_limit_is_refused_before_anything_is_appended() {
    let mut c = config(1);
    c.max_command_bytes = 100;
    let mut n = leader_with(c);
    let last = n.log().last_index();
    n.propose(RequestId(1), vec![0; 100]);
    n.propose(RequestId(2), vec![0; 101]);
    let out = settle(&mut n);
    assert_eq!(n.log().last_index(), last.next(), "exactly the limit fits");
    assert_eq!(
        out.rejected,
        vec![(
            RequestId(2),
            CommandRejected::TooLarge {
                size: 101,
                limit: 100
            }
        )]
    );
}

#[test]
fn append_batches_stop_at_the_byte_limit_but_always_carry_one_entry() {
    let mut c = config(1);
    c.max_bytes_per_message = 1000;
    let mut n = leader_with(c);
    n.step(ack(N2, 1, 0, true)).expect("accepted");
    settle(&mut n);
    for (i, size) in [400, 400, 400, 5000, 10].into_iter().enumerate() {
        n.propose(RequestId(i as u64), vec![0; size]);
    }
    let out = settle(&mut n);
    let batches: Vec<Vec<usize>> = out
        .messages
        .iter()
        .filter(|m| m.to == N2)
        .filter_map(|m| match &m.body {
            MessageBody::AppendEntries { entries, .. } if !entries.is_empty() => Some(
                entries
                    .iter()
                    .map(|e| match &e.payload {
                        EntryPayload::Command(c) => c.len(),
                        _ => 0,
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(
        batches,
        vec![vec![400, 400], vec![400], vec![5000], vec![10]]
    );
}
