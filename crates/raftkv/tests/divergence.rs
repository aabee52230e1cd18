//! Replicas that diverge are found, and a peer that claims a term another node leads is cut
//! off: a 3-node raftkv cluster in this process, `raftkv cluster check` run against its admin
//! ports, and forged AppendEntries sent to a follower's raft port in raftnet's wire format with
//! the cluster's id, as an outside attacker without TLS could.

#[path = "server/cluster.rs"]
mod cluster;

use cluster::{http_get, simple, Conn, TestCluster, WAIT};
use futures_util::{SinkExt, StreamExt};
use raftengine::{Entry, EntryPayload, LogIndex, Message, MessageBody, NodeId, Term};
use raftkv::cluster_cli::{self, ClusterArgs, ClusterCliError, ClusterCommand};
use raftkv::kv::KvCommand;
use raftkv::server::ServerLimits;
use raftnet::transport::wire::{self, Hello, HelloReply, Lane};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

fn check_args(cluster: &TestCluster) -> ClusterArgs {
    ClusterArgs {
        admins: cluster
            .servers
            .keys()
            .map(|&id| cluster.admin_addr(id).to_string())
            .collect(),
        timeout: WAIT.as_secs_f64(),
        json: false,
        token: None,
        tls: Default::default(),
        command: ClusterCommand::Check,
    }
}

/// Waits until every node has applied the same index, and returns it.
async fn settled(cluster: &TestCluster) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let statuses: Vec<_> = cluster
            .servers
            .values()
            .map(|s| s.handle().status())
            .collect();
        let first = &statuses[0];
        if statuses.iter().all(|s| {
            s.applied_index == first.applied_index
                && s.last_index == first.last_index
                && s.applied_index == s.last_index
        }) {
            return first.applied_index;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nodes do not settle: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `message` to the raft port at `addr` as node `claimed`, after a good handshake with
/// `cluster_id`; returns the connection.
async fn forge(
    addr: SocketAddr,
    cluster_id: u64,
    claimed: u64,
    message: &Message,
) -> Framed<TcpStream, raftnet::transport::wire::FrameCodec> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut framed = Framed::new(stream, wire::codec(1 << 20));
    let hello = Hello::on(cluster_id, NodeId(claimed), Lane::Bulk);
    framed
        .send(wire::encode(&hello).expect("hello"))
        .await
        .expect("send hello");
    let reply = tokio::time::timeout(WAIT, framed.next())
        .await
        .expect("hello answered in time")
        .expect("hello answered")
        .expect("hello read");
    let reply: HelloReply = wire::decode(&reply).expect("hello reply");
    assert_eq!(reply, HelloReply::Welcome);
    framed
        .send(wire::encode_frame(u64::MAX, message).expect("frame"))
        .await
        .expect("send forged message");
    framed
}

/// An AppendEntries from `from` to `to` in `term` that appends `command` after `last` and
/// declares it committed.
fn forged_append(from: u64, to: u64, term: u64, last: u64, command: &KvCommand) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(last),
            prev_log_term: Term(term),
            entries: vec![Entry {
                term: Term(term),
                index: LogIndex(last + 1),
                payload: EntryPayload::Command(command.encode()),
            }],
            leader_commit: LogIndex(last + 1),
            read_round: 0,
            transfer: 0,
            repair_epoch: 0,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_check_passes_under_writes_and_names_a_node_fed_a_forged_entry() {
    let cluster = TestCluster::start(3, ServerLimits::default(), |_| {}).await;
    let leader = cluster.leader().await;
    let victim = cluster.followers(leader)[0];
    let mut conn = Conn::connect(cluster.client_addr(leader)).await;
    for i in 0..20 {
        let reply = conn.cmd_retrying(&["SET", &format!("k{i}"), "v"]).await;
        assert_eq!(reply, simple("OK"));
    }

    // Under writes: every node agrees wherever the check compares them.
    let writer = {
        let addr = cluster.client_addr(leader);
        tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await;
            for i in 0..200 {
                conn.cmd_retrying(&["INCR", "counter"]).await;
                conn.cmd_retrying(&["SET", &format!("w{}", i % 13), &i.to_string()])
                    .await;
            }
        })
    };
    for _ in 0..3 {
        let text = cluster_cli::run(&check_args(&cluster))
            .await
            .expect("replicas agree");
        assert!(text.contains("all 3 nodes agree"), "{text}");
    }
    writer.await.expect("writer");

    // The attack: the leader's id, its term, one entry after the victim's log, committed.
    let last = settled(&cluster).await;
    let term = cluster.servers[&leader].handle().status().term;
    let cluster_id = cluster.servers[&victim].config().cluster_id;
    let raft_addr = cluster.servers[&victim].addrs().raft;
    let forged = KvCommand::Set {
        key: b"forged".to_vec(),
        value: b"1".to_vec(),
    };
    let message = forged_append(leader as u64, victim, term, last, &forged);
    let _connection = forge(raft_addr, cluster_id, leader, &message).await;
    let victim_handle = cluster.servers[&victim].handle();
    victim_handle.wait_for(|s| s.applied_index > last).await;
    // The real leader's next write lands at the same index on the others; the victim already
    // holds an entry of that term there, so it keeps the forged one: the logs look alike and
    // only the states differ.
    assert_eq!(
        conn.cmd_retrying(&["SET", "after", "1"]).await,
        simple("OK")
    );
    for server in cluster.servers.values() {
        server.handle().wait_for(|s| s.applied_index > last).await;
    }
    match cluster_cli::run(&check_args(&cluster)).await {
        Err(ClusterCliError::Diverged { report, summary }) => {
            assert!(
                summary.contains(&format!("node(s) {victim} differ")),
                "{summary}\n{report}"
            );
            let marked: Vec<&str> = report.lines().filter(|l| l.ends_with("DIFFERS")).collect();
            assert_eq!(marked.len(), 1, "{report}");
            assert!(marked[0].trim_start().starts_with(&victim.to_string()));
        }
        other => panic!("the divergence went unnoticed: {other:?}"),
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_leader_of_a_term_is_refused_and_disconnected() {
    let cluster = TestCluster::start(3, ServerLimits::default(), |_| {}).await;
    let leader = cluster.leader().await;
    let followers = cluster.followers(leader);
    let (victim, impostor) = (followers[0], followers[1]);
    let mut conn = Conn::connect(cluster.client_addr(leader)).await;
    assert_eq!(conn.cmd_retrying(&["SET", "a", "1"]).await, simple("OK"));
    let last = settled(&cluster).await;
    let term = cluster.servers[&leader].handle().status().term;
    let cluster_id = cluster.servers[&victim].config().cluster_id;
    let raft_addr = cluster.servers[&victim].addrs().raft;
    let forged = KvCommand::Set {
        key: b"forged".to_vec(),
        value: b"1".to_vec(),
    };
    // The other follower's id claims the leader's term.
    let message = forged_append(impostor, victim, term, last, &forged);
    let mut connection = forge(raft_addr, cluster_id, impostor, &message).await;
    // The victim closes the connection: the stream ends.
    let closed = tokio::time::timeout(WAIT, async {
        while let Some(Ok(_)) = connection.next().await {}
    })
    .await;
    assert!(closed.is_ok(), "the impostor's connection stays open");
    let handle = cluster.servers[&victim].handle();
    assert_eq!(handle.metrics().conflicting_leaders.get(), 1);
    let (code, _, status) = http_get(cluster.admin_addr(victim), "/status").await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    let disconnected = &status["transport"]["connections_disconnected"];
    assert!(disconnected.as_u64().is_some_and(|n| n >= 1), "{status}");
    // Nothing of it was applied, and the cluster goes on agreeing.
    assert_eq!(handle.status().last_index, last);
    assert_eq!(conn.cmd_retrying(&["SET", "b", "2"]).await, simple("OK"));
    let text = cluster_cli::run(&check_args(&cluster))
        .await
        .expect("replicas agree");
    assert!(text.contains("all 3 nodes agree"), "{text}");
    cluster.shutdown().await;
}
