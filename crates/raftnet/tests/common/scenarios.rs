//! Scenarios that tests run as they are and that `tests/mutations.rs` runs with a known defect
//! put back: each returns `Err` with what went wrong instead of panicking, so that a test can
//! require it to fail with the defect and pass without it. `tune` adjusts every node's
//! configuration before it starts (it switches a mutation on).

use super::{bind_nodes, Addrs, Journal, WAIT};
use raftengine::{MembershipChange, NodeId};
use raftnet::runtime::{ClientError, Node, NodeConfig, NodeHandle, NodeStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Adjusts a node's configuration before it starts.
pub type Tune = fn(&mut NodeConfig);

/// Leaves the configuration as it is.
pub fn untuned(_: &mut NodeConfig) {}

type Outcome = Result<(), String>;

fn ensure(holds: bool, what: impl FnOnce() -> String) -> Outcome {
    if holds {
        Ok(())
    } else {
        Err(what())
    }
}

/// Node `id`'s configuration with the given peers (empty: none given), tuned.
fn config_with_peers(id: u64, peers: &[u64], addrs: &Addrs, root: &Path, tune: Tune) -> NodeConfig {
    let mut config = super::node_config(id, addrs, root, 0);
    config.peers = peers
        .iter()
        .map(|p| (NodeId(*p), addrs[&NodeId(*p)]))
        .collect();
    tune(&mut config);
    config
}

/// Node `id` of `addrs`, with every other node as a peer, tuned, on its own address.
async fn start_node(
    id: u64,
    addrs: &Addrs,
    root: &Path,
    tune: Tune,
) -> Result<Node<Journal>, String> {
    let others: Vec<u64> = addrs.keys().map(|n| n.0).filter(|n| *n != id).collect();
    start_config(config_with_peers(id, &others, addrs, root, tune), addrs).await
}

/// Starts a node on the address `addrs` gives it (again, after a restart).
async fn start_config(config: NodeConfig, addrs: &Addrs) -> Result<Node<Journal>, String> {
    let id = config.id;
    let listener = TcpListener::bind(addrs[&id])
        .await
        .map_err(|e| format!("node {id} cannot bind its address again: {e}"))?;
    Node::start(config, listener, Journal::default())
        .await
        .map_err(|e| format!("node {id} does not start: {e}"))
}

/// Nodes `1..=n`, tuned, with durable logs under `root`.
async fn start_tuned(
    root: &Path,
    n: u64,
    tune: Tune,
) -> Result<(Addrs, BTreeMap<u64, Node<Journal>>), String> {
    let (addrs, listeners) = bind_nodes(n).await;
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        let others: Vec<u64> = (1..=n).filter(|o| *o != id).collect();
        let config = config_with_peers(id, &others, &addrs, root, tune);
        let node = Node::start(config, listener, Journal::default())
            .await
            .map_err(|e| format!("node {id} does not start: {e}"))?;
        nodes.insert(id, node);
    }
    Ok((addrs, nodes))
}

fn voters(ids: &[u64]) -> BTreeSet<NodeId> {
    ids.iter().map(|id| NodeId(*id)).collect()
}

async fn shutdown(nodes: impl IntoIterator<Item = Node<Journal>>) {
    for node in nodes {
        node.shutdown().await;
    }
}

/// Waits until `handle`'s status satisfies `ready`, for at most `within`.
async fn wait_until(
    what: &str,
    handle: &NodeHandle<Journal>,
    within: Duration,
    ready: impl Fn(&NodeStatus) -> bool,
) -> Result<NodeStatus, String> {
    tokio::time::timeout(within, handle.wait_for(ready))
        .await
        .map_err(|_| format!("timed out waiting for {what}: {:?}", handle.status()))
}

/// Waits until one of `handles` leads; returns its id.
async fn leader_of(handles: &[(u64, NodeHandle<Journal>)]) -> Result<u64, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some((id, _)) = handles.iter().find(|(_, h)| h.status().role == "leader") {
            return Ok(*id);
        }
        if Instant::now() >= deadline {
            return Err("no leader elected".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn write(handle: &NodeHandle<Journal>, base: &[u8]) -> Result<Vec<u8>, String> {
    super::write_acked(handle, base).await.map_err(|e| {
        let id = handle.status().id;
        format!(
            "write {:?} at node {id}: {e}",
            String::from_utf8_lossy(base)
        )
    })
}

/// Everything applied at `handle`, read linearizably (retried while there is no leader).
async fn read_all(handle: &NodeHandle<Journal>) -> Result<Vec<Vec<u8>>, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        match handle.read(|j| j.commands.clone()).await {
            Ok(v) => return Ok(v),
            Err(ClientError::Retry | ClientError::NotLeader { .. })
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(format!("read at node {}: {e}", handle.status().id)),
        }
    }
}

/// Every command of `acked` is applied at `handle`.
async fn holds_all(handle: &NodeHandle<Journal>, acked: &[Vec<u8>]) -> Outcome {
    let applied: BTreeSet<Vec<u8>> = read_all(handle).await?.into_iter().collect();
    let lost: Vec<String> = acked
        .iter()
        .filter(|c| !applied.contains(*c))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    ensure(lost.is_empty(), || {
        format!(
            "node {} lost acknowledged writes: {lost:?}",
            handle.status().id
        )
    })
}

/// A node restarted without its peer list keeps the voters its first start saved: alone it
/// neither leads nor commits, and with the others back it is one cluster again. (With
/// `RuntimeMutation::BootstrapRecordNotSaved` it is a one-node cluster and commits alone.)
pub async fn restart_without_peers_keeps_the_saved_voters(root: &Path, tune: Tune) -> Outcome {
    let (addrs, nodes) = start_tuned(root, 3, tune).await?;
    let all: Vec<_> = nodes.iter().map(|(id, n)| (*id, n.handle())).collect();
    leader_of(&all).await?;
    let first = write(&all[0].1, b"first").await?;
    shutdown(nodes.into_values()).await;

    // Node 1 alone, without its peer list: it knows its cluster has three voters, so it
    // cannot win an election or commit on its own.
    let one = start_config(config_with_peers(1, &[], &addrs, root, tune), &addrs).await?;
    let h1 = one.handle();
    let seen = h1.status().membership.voters;
    ensure(seen == voters(&[1, 2, 3]), || {
        format!("node 1 restarted without peers sees the voters {seen:?}, not 1, 2 and 3")
    })?;
    let alone = tokio::time::timeout(Duration::from_secs(1), super::write(&h1, b"alone")).await;
    ensure(!matches!(alone, Ok(Ok(_))), || {
        format!("committed alone: {alone:?}")
    })?;
    ensure(h1.status().role != "leader", || "node 1 leads alone".into())?;

    // The others come back (one with its flags, one without): one cluster again.
    let two = start_config(config_with_peers(2, &[1, 3], &addrs, root, tune), &addrs).await?;
    let three = start_config(config_with_peers(3, &[], &addrs, root, tune), &addrs).await?;
    let all = vec![(1, h1.clone()), (2, two.handle()), (3, three.handle())];
    leader_of(&all).await?;
    let second = write(&h1, b"second").await?;
    for (id, h) in &all {
        let applied = read_all(h).await?;
        // A write of unknown outcome may be applied too, next to the acknowledged one.
        ensure(
            applied.first().is_some_and(|c| c.starts_with(b"first"))
                && applied.last().is_some_and(|c| c.starts_with(b"second"))
                && applied.contains(&first)
                && applied.contains(&second),
            || format!("node {id} applied {applied:?}"),
        )?;
    }
    shutdown([one, two, three]).await;
    Ok(())
}

/// A follower removed from the cluster and later added back serves its clients' writes and
/// reads again, without a restart. (With `Mutation::RemovedForever` the core kept it removed,
/// and the runtime kept answering its clients `Removed`.)
pub async fn removed_node_added_back_serves_clients(root: &Path, tune: Tune) -> Outcome {
    let (addrs, nodes) = start_tuned(root, 3, tune).await?;
    let all: Vec<_> = nodes.iter().map(|(id, n)| (*id, n.handle())).collect();
    let leader = leader_of(&all).await?;
    let leader_handle = &nodes[&leader].handle();
    let victim = (1..=3).find(|id| *id != leader).ok_or("no follower")?;
    let victim_handle = nodes[&victim].handle();
    let mut acked = Vec::new();
    for i in 0..10 {
        let command = format!("before{i}").into_bytes();
        acked.push(write(&all[i % 3].1, &command).await?);
    }

    let change = |change| async {
        tokio::time::timeout(WAIT, leader_handle.change_membership(change))
            .await
            .map_err(|_| "no outcome of a membership change in time".to_string())?
            .map_err(|e| format!("membership change refused: {e}"))
    };
    change(MembershipChange::Remove {
        node: NodeId(victim),
    })
    .await?;
    wait_until(
        "the victim to learn of its removal",
        &victim_handle,
        WAIT,
        |s| s.removed,
    )
    .await?;
    let refused = victim_handle.write(b"while removed".to_vec()).await;
    ensure(refused == Err(ClientError::Removed), || {
        format!("a removed node took a write: {refused:?}")
    })?;
    for i in 0..5 {
        let command = format!("without{i}").into_bytes();
        acked.push(write(leader_handle, &command).await?);
    }

    let address = addrs[&NodeId(victim)].to_string();
    let back = change(MembershipChange::AddVoter {
        node: NodeId(victim),
        address,
    })
    .await?;
    ensure(back.voters == voters(&[1, 2, 3]), || {
        format!("added back: {back:?}")
    })?;
    wait_until("the victim to take part again", &victim_handle, WAIT, |s| {
        !s.removed && s.membership.voters.contains(&NodeId(victim))
    })
    .await?;
    // Its own clients: a write and a linearizable read at the node itself.
    for i in 0..5 {
        let command = format!("after{i}").into_bytes();
        acked.push(write(&victim_handle, &command).await?);
    }
    holds_all(&victim_handle, &acked).await?;
    for (_, h) in &all {
        holds_all(h, &acked).await?;
    }
    shutdown(nodes.into_values()).await;
    Ok(())
}

/// The newest `*.wal` segment of node `id`'s log under `root`.
pub fn newest_segment(root: &Path, id: u64) -> Result<PathBuf, String> {
    let wal = root.join(format!("node-{id}")).join("wal");
    let entries = std::fs::read_dir(&wal).map_err(|e| format!("{}: {e}", wal.display()))?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .max()
        .ok_or_else(|| format!("no segment in {}", wal.display()))
}

/// A disk that lied about its syncs: the newest segment loses its last `bytes` bytes of data
/// (the file is cut short, as a lost tail of a file that was never really synced would leave
/// it). Returns the segment's data length before and after.
pub fn lose_synced_tail(segment: &Path, bytes: u64) -> Result<(u64, u64), String> {
    let data = std::fs::read(segment).map_err(|e| format!("{}: {e}", segment.display()))?;
    let end = data
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p as u64 + 1);
    let cut = end.saturating_sub(bytes);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .map_err(|e| format!("{}: {e}", segment.display()))?;
    file.set_len(cut)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("truncating {}: {e}", segment.display()))?;
    Ok((end, cut))
}

/// A lying disk plus a second fault loses no acknowledged write. Writes acknowledged by the
/// leader L and a follower F alone (the third node T is down) are cut from F's log as a lying
/// disk would; with L down too, F and T must not elect a leader (F repairs itself first), or
/// those writes would be lost for good. Once L is back, a leader is elected, F finishes its
/// repair, and every node holds every acknowledged write. (With `Mutation::IgnoreDataLoss`, F
/// votes as if nothing happened and F or T leads without the lost writes.)
pub async fn lost_synced_entries_are_repaired_before_voting(root: &Path, tune: Tune) -> Outcome {
    let (addrs, mut nodes) = start_tuned(root, 3, tune).await?;
    let all: Vec<_> = nodes.iter().map(|(id, n)| (*id, n.handle())).collect();
    let l = leader_of(&all).await?;
    let (f, t) = match l {
        1 => (2, 3),
        2 => (3, 1),
        _ => (1, 2),
    };
    let mut acked = Vec::new();
    for i in 0..20 {
        let command = format!("a{i}").into_bytes();
        acked.push(write(&all[i % 3].1, &command).await?);
    }
    // T goes down: what follows is acknowledged by L and F alone. Each command is 2 KiB, so
    // the 32 KiB cut below lies well inside them (and after the frame that holds the term).
    let t_node = nodes.remove(&t).ok_or("T")?;
    t_node.shutdown().await;
    let lh = nodes[&l].handle();
    for i in 0..64 {
        let command = format!("b{i}:{}", "x".repeat(2048)).into_bytes();
        acked.push(write(&lh, &command).await?);
    }
    shutdown(nodes.into_values()).await;

    let segment = newest_segment(root, f)?;
    let (end, cut) = lose_synced_tail(&segment, 32 << 10)?;
    ensure(cut > 64 << 10, || {
        format!("the segment held only {end} bytes of data")
    })?;

    let t_node = start_node(t, &addrs, root, tune).await?;
    let f_node = start_node(f, &addrs, root, tune).await?;
    let (th, fh) = (t_node.handle(), f_node.handle());
    // Many election timeouts (150-300 ms each): neither may lead, since neither holds the
    // writes that L and F acknowledged.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        for h in [&th, &fh] {
            let s = h.status();
            ensure(s.role != "leader", || {
                format!(
                    "node {} leads (term {}, last index {}) while L is down",
                    s.id, s.term, s.last_index
                )
            })?;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure(fh.status().repairing, || {
        format!("F does not say it is repairing: {:?}", fh.status())
    })?;

    let l_node = start_node(l, &addrs, root, tune).await?;
    let handles = vec![(l, l_node.handle()), (f, fh.clone()), (t, th.clone())];
    leader_of(&handles).await?;
    wait_until("F to finish its repair", &fh, WAIT, |s| !s.repairing).await?;
    acked.push(write(&fh, b"after the repair").await?);
    for (_, h) in &handles {
        holds_all(h, &acked).await?;
    }
    shutdown([l_node, f_node, t_node]).await;
    Ok(())
}
