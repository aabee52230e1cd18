//! Exactly-once writes (Raft thesis §6.3): clients with sessions INCR one counter while the
//! leader is killed with SIGKILL and later restarted. Every write of unknown outcome is sent
//! again with its number until it has an answer. At the end the counter equals the number of
//! INCRs the clients were told succeeded: none was lost, none applied twice, although some
//! were sent several times.
//!
//! Every wait is bounded and polls; no timing is asserted.

#[path = "server/processes.rs"]
mod processes;

use processes::{start_cluster, WAIT};
use raftkv::client::{fresh_session_id, Client, ClientConfig, ClientError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const WORKERS: usize = 4;

/// What the workers saw.
#[derive(Default)]
struct Tally {
    acked: AtomicU64,
    /// Sends of a write beyond its first: after `-UNCERTAIN`, a lost connection or a deadline.
    resent: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_incr_applies_once_across_a_leader_kill() {
    let mut cluster = start_cluster(&[]).await;
    let (leader, _) = cluster
        .wait_for_leader(None, 0, WAIT)
        .await
        .expect("a leader");
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let config = ClientConfig {
        request_timeout: Duration::from_millis(500),
        deadline: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let mut nodes = cluster.client_addrs();
        let first = worker % nodes.len();
        nodes.rotate_left(first);
        let session = fresh_session_id().expect("a random session id");
        let mut client = Client::new(nodes, config)
            .expect("client")
            .with_session(session);
        let (stop, tally) = (stop.clone(), tally.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut outcome = client.incr(b"counter").await;
                // Unknown outcome: the same numbered write again until it is answered.
                while matches!(&outcome, Err(e) if e.is_uncertain()) {
                    tally.resent.fetch_add(1, Ordering::Relaxed);
                    outcome = match client.retry_unresolved().await {
                        Ok(Some(_)) => Ok(0),
                        Ok(None) => panic!("an uncertain write must stay unresolved"),
                        Err(e) => Err(e),
                    };
                }
                match outcome {
                    Ok(_) => {
                        tally.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    // Unavailable (no leader within the deadline) was never sent or is kept
                    // unresolved too: resolve it the same way.
                    Err(ClientError::Unavailable { .. }) => loop {
                        match client.retry_unresolved().await {
                            Ok(Some(_)) => {
                                tally.acked.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Ok(None) => break,
                            Err(_) => tally.resent.fetch_add(1, Ordering::Relaxed),
                        };
                    },
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            tally
                .resent
                .fetch_add(client.session_resends(), Ordering::Relaxed);
        }));
    }

    let acked_by = |n: u64| {
        let tally = tally.clone();
        async move {
            let deadline = Instant::now() + WAIT;
            while tally.acked.load(Ordering::Relaxed) < n {
                assert!(Instant::now() < deadline, "writes stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    acked_by(100).await;
    cluster.kill(leader).await;
    cluster
        .wait_for_leader(Some(leader), 0, WAIT)
        .await
        .expect("a new leader");
    let now = tally.acked.load(Ordering::Relaxed);
    acked_by(now + 100).await;
    cluster
        .restart(leader)
        .await
        .expect("the old leader restarts");
    let now = tally.acked.load(Ordering::Relaxed);
    acked_by(now + 50).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        tokio::time::timeout(WAIT, worker)
            .await
            .expect("a worker stops in time")
            .expect("a worker does not panic");
    }

    let acked = tally.acked.load(Ordering::Relaxed);
    let mut reader = Client::new(cluster.client_addrs(), ClientConfig::default()).unwrap();
    let counter = reader.get(b"counter").await.expect("read the counter");
    let counter: u64 = std::str::from_utf8(&counter.expect("the counter exists"))
        .unwrap()
        .parse()
        .unwrap();
    eprintln!(
        "{acked} INCRs acknowledged, {} sends again after an unknown outcome, counter {counter}",
        tally.resent.load(Ordering::Relaxed)
    );
    assert_eq!(
        counter, acked,
        "every acknowledged INCR applied exactly once"
    );
    cluster.shutdown(Duration::from_secs(5)).await;
}
