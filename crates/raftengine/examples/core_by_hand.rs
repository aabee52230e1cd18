//! Driving the sans-IO core by hand: three nodes in one process, a queue for the network,
//! `MemoryStorage` for each disk and a counter as the state machine. Every step is printed.
//!
//! Run with `cargo run -p raftengine --example core_by_hand`.
//!
//! The loop is what every driver does (the simulator in `raftsim` and the tokio runtime in
//! `raftnet` included): after each input, take the node's `Output` and carry it out — persist,
//! then report `persisted(seq)`; send messages; apply committed entries; answer rejections.

use raftengine::{
    ApplyError, CommandRejected, Config, EntryPayload, FatalError, LogIndex, LogStorage,
    MemoryStorage, Message, NodeId, Output, RaftNode, RequestId, RoleKind, StateMachine,
};
use std::collections::VecDeque;

/// The state machine: the sum of every committed command (each an 8-byte little-endian u64).
#[derive(Debug, Default)]
struct Counter {
    value: u64,
}

impl StateMachine for Counter {
    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Result<Vec<u8>, ApplyError> {
        // A malformed command is refused the same way on every replica: a deterministic
        // answer, not a failure.
        let amount: [u8; 8] = command
            .try_into()
            .map_err(|_| ApplyError::Rejected(format!("{} bytes, not 8", command.len())))?;
        self.value += u64::from_le_bytes(amount);
        Ok(self.value.to_le_bytes().to_vec())
    }

    fn snapshot(&self) -> Vec<u8> {
        self.value.to_le_bytes().to_vec()
    }

    fn restore_from(&mut self, snapshot: &[u8]) -> Result<(), ApplyError> {
        let bytes: [u8; 8] = snapshot
            .try_into()
            .map_err(|_| ApplyError::Fatal("a counter snapshot is 8 bytes".into()))?;
        self.value = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// One replica: the core, its "disk" and its state machine.
struct Replica {
    node: RaftNode,
    disk: MemoryStorage,
    counter: Counter,
}

/// The in-memory cluster: replicas and the messages in flight between them.
struct Cluster {
    replicas: Vec<Replica>,
    network: VecDeque<Message>,
}

impl Cluster {
    fn new(size: u64) -> Cluster {
        let ids: Vec<NodeId> = (1..=size).map(NodeId).collect();
        let replicas = ids
            .iter()
            .map(|&id| {
                // Defaults: election timeout 15..=30 ticks, heartbeat every tick, pre-vote and
                // check-quorum on. The jitter seed defaults to the id, so runs are reproducible.
                let config = Config::new(id, ids.clone());
                Replica {
                    node: RaftNode::new(config).expect("a valid configuration"),
                    disk: MemoryStorage::new(),
                    counter: Counter::default(),
                }
            })
            .collect();
        Cluster {
            replicas,
            network: VecDeque::new(),
        }
    }

    fn replica(&mut self, id: NodeId) -> &mut Replica {
        self.replicas
            .iter_mut()
            .find(|r| r.node.id() == id)
            .expect("a member")
    }

    /// Carries out one output of one replica; returns whether it did anything.
    fn carry_out(replica: &mut Replica, out: Output, network: &mut VecDeque<Message>) -> bool {
        let id = replica.node.id();
        if let Some(fatal) = &out.fatal {
            panic!("{id} stopped: {fatal}");
        }
        for event in &out.events {
            println!("  {id} event: {event:?}");
        }
        let mut did_something = !out.is_empty();
        // 1. Persist, then report. A real driver may batch several outputs into one fsync and
        //    report the highest seq; messages that depend on the batch (votes, acknowledgements)
        //    stay inside the node until the report and come out with the next `take_output`.
        if let Some(batch) = &out.persist {
            println!(
                "  {id} persists batch {} ({} writes)",
                batch.seq,
                batch.writes.len()
            );
            replica
                .disk
                .persist(batch)
                .expect("memory storage does not fail");
            replica
                .node
                .persisted(batch.seq)
                .expect("batches are reported in order");
            did_something = true;
        }
        // 2. Send. Here "sending" is queueing; a real transport may lose or reorder messages,
        //    and Raft copes with that.
        for msg in out.messages {
            println!("  {} -> {}: {}", msg.from, msg.to, msg.body.code());
            network.push_back(msg);
        }
        // 3. Apply committed entries in order. Only commands reach the state machine; the
        //    term-start no-op and configuration entries are Raft's own. (A snapshot in
        //    `out.install_snapshot` would be restored first; none is sent in this run.)
        for committed in &out.committed {
            let index = committed.entry.index;
            let EntryPayload::Command(bytes) = &committed.entry.payload else {
                continue;
            };
            let answer = match replica.counter.apply(index, bytes) {
                Ok(value) => format!("{}", u64::from_le_bytes(value[..].try_into().unwrap())),
                Err(ApplyError::Rejected(why)) => format!("refused: {why}"),
                Err(ApplyError::Fatal(reason)) => {
                    // This replica can no longer be trusted: stop it (a real driver also marks
                    // its storage broken).
                    replica
                        .node
                        .fail(FatalError::StateMachine { index, reason });
                    return true;
                }
            };
            println!(
                "  {id} applies index {index} -> counter {}",
                replica.counter.value
            );
            if let Some(request) = committed.request {
                // The node that proposed it answers its client now.
                println!("  {id} answers request {}: {answer}", request.0);
            }
        }
        // 4. Requests this node will not carry to an outcome: redirect, retry, or unknown.
        for (request, why) in &out.rejected {
            match why {
                CommandRejected::Redirect { leader } => {
                    println!("  {id} request {}: redirect to {leader}", request.0)
                }
                other => println!("  {id} request {}: {other}", request.0),
            }
        }
        did_something
    }

    /// Takes and carries out outputs and delivers messages until nothing moves.
    fn run_until_quiet(&mut self) {
        loop {
            let mut progress = false;
            for replica in &mut self.replicas {
                let out = replica.node.take_output();
                progress |= Cluster::carry_out(replica, out, &mut self.network);
            }
            while let Some(msg) = self.network.pop_front() {
                let to = msg.to;
                self.replica(to)
                    .node
                    .step(msg)
                    .expect("a well-formed message from a member");
            }
            if !progress {
                return;
            }
        }
    }

    fn tick_all(&mut self) {
        for replica in &mut self.replicas {
            replica.node.tick();
        }
        self.run_until_quiet();
    }

    fn leader(&self) -> Option<NodeId> {
        self.replicas
            .iter()
            .find(|r| r.node.role() == RoleKind::Leader)
            .map(|r| r.node.id())
    }
}

fn main() {
    let mut cluster = Cluster::new(3);
    cluster.run_until_quiet();

    println!("== ticking until an election timeout fires and a leader is elected");
    let mut ticks = 0;
    let leader = loop {
        ticks += 1;
        cluster.tick_all();
        if let Some(leader) = cluster.leader() {
            break leader;
        }
        assert!(ticks < 1_000, "no leader after {ticks} ticks");
    };
    let term = cluster.replica(leader).node.term();
    println!("== {leader} leads term {term} after {ticks} ticks");

    // A proposal at a follower is refused with a redirect (Config::forward_proposals is off).
    let follower = cluster
        .replicas
        .iter()
        .map(|r| r.node.id())
        .find(|&id| id != leader)
        .expect("three nodes");
    println!("== proposing at follower {follower}");
    cluster
        .replica(follower)
        .node
        .propose(RequestId(1), 7u64.to_le_bytes().to_vec());
    cluster.run_until_quiet();

    println!("== proposing \"add 5\" and \"add 37\" at the leader {leader}");
    cluster
        .replica(leader)
        .node
        .propose(RequestId(2), 5u64.to_le_bytes().to_vec());
    cluster
        .replica(leader)
        .node
        .propose(RequestId(3), 37u64.to_le_bytes().to_vec());
    cluster.run_until_quiet();

    // A malformed command still commits: the state machine's refusal is its answer, the same
    // on every replica.
    println!("== proposing a malformed command at the leader");
    cluster
        .replica(leader)
        .node
        .propose(RequestId(4), vec![1, 2, 3]);
    cluster.run_until_quiet();

    println!("== one more tick: the heartbeat tells followers the new commit index");
    cluster.tick_all();

    for replica in &cluster.replicas {
        println!(
            "{}: role {:?}, commit index {}, counter {}",
            replica.node.id(),
            replica.node.role(),
            replica.node.commit_index(),
            replica.counter.value
        );
        assert_eq!(
            replica.counter.value, 42,
            "every replica applied both commands"
        );
        assert_eq!(replica.disk.last_index(), replica.node.log().last_index());
    }
    println!("== every replica's counter is 42");
}
