//! Values up to the command limit replicate without disturbing the cluster (no election); one
//! byte over is refused before anything is proposed, with a Redis-style error.

#[path = "server/cluster.rs"]
mod cluster;

use cluster::{Conn, TestCluster};
use raftkv::config::{DEFAULT_ELECTION_MS, DEFAULT_TICK_MS};
use raftkv::kv::KvCommand;
use raftkv::resp::Reply;
use raftkv::server::ServerLimits;

/// The value length whose `SET k <value>` encodes to exactly `limit` bytes.
fn value_len_at(limit: usize) -> usize {
    let encoded = |len: usize| {
        KvCommand::Set {
            key: b"k".to_vec(),
            value: vec![b'x'; len],
        }
        .encode()
        .len()
    };
    let mut len = limit;
    while encoded(len) > limit {
        len -= encoded(len) - limit;
    }
    assert_eq!(
        encoded(len),
        limit,
        "no value length encodes to exactly {limit}"
    );
    len
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

/// SETs of `sizes`, then exactly the limit and one byte over, at the leader; the term must not
/// change (no election) and the refused one must not reach the log.
async fn sets_up_to_the_limit(limit: Option<usize>, sizes: &[usize]) {
    let cluster = TestCluster::start(3, ServerLimits::default(), |config| {
        config.max_command_bytes = limit;
        // raftkv's own election timeout, as users run it: "no election" is then the claim
        // users rely on. (With a quiet LAN's 150-300 ms, three nodes sharing two cores while
        // 64 MiB values are written and synced once lost a leader in a full test run.)
        let tick = DEFAULT_TICK_MS;
        config.election_ticks = (DEFAULT_ELECTION_MS[0] / tick, DEFAULT_ELECTION_MS[1] / tick);
    })
    .await;
    let leader = cluster.leader().await;
    let handle = cluster.servers[&leader].handle();
    let limit = handle.limits().max_command_bytes;
    let mut c = Conn::connect(cluster.client_addr(leader)).await;
    assert_eq!(c.cmd_retrying(&["SET", "warm", "up"]).await, ok());
    let term = handle.status().term;

    let at_limit = value_len_at(limit);
    for &size in sizes.iter().chain([at_limit].iter()) {
        let value = "x".repeat(size);
        assert_eq!(c.cmd(&["SET", "k", &value]).await, ok(), "{size} bytes");
    }
    let before = handle.status().last_index;
    let over = "x".repeat(at_limit + 1);
    match c.cmd(&["SET", "k", &over]).await {
        Reply::Error(text) => assert!(text.starts_with("ERR value too large"), "{text}"),
        other => panic!("one byte over the limit was not refused: {other:?}"),
    }
    assert_eq!(
        handle.status().last_index,
        before,
        "the refused SET was proposed"
    );
    // The cluster is fine afterwards: the value at the limit is there, writes go on.
    let Reply::Bulk(Some(value)) = c.cmd(&["GET", "k"]).await else {
        panic!("no value");
    };
    assert_eq!(value.len(), at_limit);
    assert_eq!(c.cmd(&["SET", "after", "1"]).await, ok());
    for server in cluster.servers.values() {
        assert_eq!(server.handle().status().term, term, "an election happened");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_up_to_a_lowered_limit_replicate_and_one_byte_over_is_refused() {
    sets_up_to_the_limit(Some(64 * 1024), &[1, 1000, 16 * 1024, 48 * 1024]).await;
}

/// Built as users run it: a debug build copies a 64 MiB value slowly enough, on a loaded 2-core
/// machine, to hold a node's loop past an election timeout, which is not what this tests.
/// `./test.sh` runs it with `--release`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(debug_assertions, ignore = "run with --release (./test.sh does)")]
async fn values_up_to_the_default_limit_replicate_and_one_byte_over_is_refused() {
    // The review saw every value from 24 MiB up to the old 64 MiB limit fail; the limit is just
    // under a 64 MiB frame now.
    sets_up_to_the_limit(None, &[100_000, 500_000, 24 << 20]).await;
}
