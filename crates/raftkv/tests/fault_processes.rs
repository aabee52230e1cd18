//! Faults a real `raftkv serve` process must survive without losing an acknowledged write: a
//! disk that lied about its syncs plus a second fault, a kill -9 at any moment of a snapshot
//! install, and a full disk. Each runs a 3-node `LocalCluster` with durable logs and a writer
//! that records acknowledged SETs; every acknowledged write must end up on every node.
//!
//! Every wait is bounded and polls; no timing is asserted.

#[path = "server/processes.rs"]
mod processes;

use processes::{
    check_acked_on, info, log_len, log_since, start_cluster, status, wait_log, wait_status,
    writes_go_on, Writer, WAIT,
};
use raftkv::client::{Client, ClientConfig};
use raftkv::demo::LocalCluster;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::time::Instant;

/// The newest segment file of a node's log (`<data_dir>/wal/*.wal`, named by sequence number).
fn newest_segment(data_dir: &Path) -> PathBuf {
    let wal = data_dir.join("wal");
    std::fs::read_dir(&wal)
        .expect("the log directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .max()
        .expect("a segment")
}

/// A disk that lied about its syncs: the segment loses the last `bytes` bytes of its data (the
/// file is cut short there, as a tail that never really reached the disk would leave it).
fn lose_synced_tail(segment: &Path, bytes: u64) {
    let data = std::fs::read(segment).expect("read the segment");
    let end = data
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p as u64 + 1);
    assert!(end > bytes, "{} holds only {end} bytes", segment.display());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .expect("open the segment");
    file.set_len(end - bytes).expect("truncate");
    file.sync_all().expect("sync");
}

/// Whether any of `indexes` reports itself leader (nodes that do not answer are skipped).
async fn leader_among(cluster: &LocalCluster, indexes: &[usize]) -> Option<(usize, u64)> {
    for &index in indexes {
        if let Ok(info) = cluster.info(index).await {
            if info.is_leader() {
                return Some((index, info.term));
            }
        }
    }
    None
}

/// A lying disk plus a second fault loses no acknowledged write.
///
/// T (the third node) is killed first, so that the writes that follow are acknowledged by the
/// leader L and the follower F alone. Then L and F are killed, and F's disk "lies": its newest
/// segment loses its last 8 KiB, acknowledged entries among them. F restarts beside T, with L
/// still down. Neither F nor T holds those entries; if they elected a leader, it would overwrite
/// them on L when L came back, and acknowledged writes would be lost. So F, which finds the
/// evidence of lost synced data at recovery (a segment shorter than its header's capacity),
/// must report that it is repairing and refuse to vote: no leader for many election timeouts.
/// Once L is back, L leads (T votes for it), F finishes its repair, and every acknowledged write
/// is read from every node.
///
/// Before protocol-aware recovery, F voted as if nothing had been lost: with
/// `raftengine::Mutation::IgnoreDataLoss` switched on in raftkv's node configuration (a
/// temporary patch, built with `--features raftnet/mutations`), this test fails at the
/// no-leader check (F or T leads while L is down). raftnet's `tests/mutations.rs` makes the same
/// check in-process on every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_disk_and_a_second_fault_lose_no_acknowledged_write() {
    let mut cluster = start_cluster(&[]).await;
    let (l, _) = cluster
        .wait_for_leader(None, 0, WAIT)
        .await
        .expect("a leader");
    let (f, t) = ((l + 1) % 3, (l + 2) % 3);
    let writer = Writer::start(&cluster);
    writes_go_on(&cluster, l, 50).await;
    cluster.kill(t).await;
    let before_t_died = info(&cluster, l).await.commit_index;
    // Acknowledged by L and F alone (at a few dozen bytes per entry, far more than the cut).
    writes_go_on(&cluster, l, 400).await;
    let outcomes = writer.finish().await;
    let commit = info(&cluster, l).await.commit_index;
    cluster.kill(l).await;
    cluster.kill(f).await;

    lose_synced_tail(&newest_segment(&cluster.nodes()[f].data_dir), 8 << 10);
    cluster.restart(t).await.expect("T restarts");
    let from = log_len(&cluster, f);
    cluster.restart(f).await.expect("F restarts");
    let repairing = wait_status(&cluster, f, "F to report its repair", |s| {
        s["repairing"] == true
    })
    .await;
    let last = repairing["last_index"].as_u64().expect("last index");
    assert!(
        before_t_died < last && last < commit,
        "the cut lost entries acknowledged by L and F alone: F's log ends at {last}, T's at \
         {before_t_died} or more, L committed {commit}"
    );
    for needle in ["evidence that synced data was lost", "repairing lost data"] {
        assert!(
            wait_log(&cluster, f, from, needle).await,
            "F's log does not say {needle:?}{}",
            cluster.log_tail(f)
        );
    }

    // Many election timeouts (150-300 ms each): neither F nor T may lead.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some((index, term)) = leader_among(&cluster, &[f, t]).await {
            panic!(
                "node {} leads in term {term} while L is down, without the writes only L holds",
                cluster.nodes()[index].id
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cluster.exited(f).is_none() && cluster.exited(t).is_none());
    assert_eq!(
        status(&cluster, f).await.expect("F's status")["repairing"],
        true
    );

    let from = log_len(&cluster, f);
    cluster.restart(l).await.expect("L restarts");
    cluster
        .wait_for_leader(None, 0, WAIT)
        .await
        .expect("a leader");
    wait_status(&cluster, f, "F to finish its repair", |s| {
        s["repairing"] == false
    })
    .await;
    assert!(wait_log(&cluster, f, from, "repair finished").await);
    for index in 0..3 {
        check_acked_on(&cluster, index, &outcomes.acked).await;
    }
    cluster.shutdown(Duration::from_secs(5)).await;
}

/// Writes `count` keys of `bytes` bytes each, so that the store's snapshot is large and its
/// install takes a while.
async fn preload(cluster: &LocalCluster, count: usize, bytes: usize) {
    let mut client = Client::new(cluster.client_addrs(), ClientConfig::default()).expect("client");
    let value = vec![b'x'; bytes];
    for i in 0..count {
        client
            .set(format!("big{i}").as_bytes(), &value)
            .await
            .expect("a large write");
    }
}

/// Node `index`'s last log index, from `/status`.
async fn last_index(cluster: &LocalCluster, index: usize) -> u64 {
    let status = wait_status(cluster, index, "a status", |s| s["last_index"].is_u64()).await;
    status["last_index"].as_u64().unwrap_or_default()
}

/// Waits until node `index` has compacted its log beyond `past` (its log starts after it);
/// returns where its log starts.
async fn compacted_past(cluster: &LocalCluster, index: usize, past: u64) -> u64 {
    let status = wait_status(cluster, index, "the leader to compact its log", |s| {
        s["log_start"].as_u64().is_some_and(|start| start > past)
    })
    .await;
    status["log_start"].as_u64().unwrap_or_default()
}

/// After F restarts: `true` once its log (from byte `from`) says it is installing the leader's
/// snapshot, `false` if it applied entries beyond `leader_start` without one. (Entries the
/// leader sent before it compacted, still queued for F while F was down, can bring F far
/// enough that it catches up from the log.)
async fn install_or_entries(
    cluster: &LocalCluster,
    f: usize,
    from: usize,
    leader_start: u64,
) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        // The status first: an install is logged before it moves the applied index.
        let applied = status(cluster, f)
            .await
            .and_then(|s| s["applied_index"].as_u64());
        if log_since(cluster, f, from).contains(INSTALLING) {
            return true;
        }
        if applied.is_some_and(|applied| applied > leader_start) {
            return false;
        }
        assert!(
            Instant::now() < deadline,
            "F neither installs a snapshot nor catches up{}",
            cluster.log_tail(f)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

const INSTALLING: &str = "installing the leader's snapshot";
const INSTALLED: &str = "the leader's snapshot is installed and saved";

/// Snapshot install order survives a kill at each step: "save and sync the snapshot first,
/// then purge, then acknowledge".
///
/// Every node snapshots every 50 entries and keeps no log behind its snapshots. A follower F is
/// killed; while it is down the leader compacts past F's log, so F needs the leader's snapshot
/// (4 MiB of preloaded values make its install take a while). Then, round after round: F
/// restarts, the test waits until F logs that it hands the snapshot to its state machine, and
/// kills F with SIGKILL after a delay that changes every round (0 ms to 120 ms): while the
/// snapshot is restored, while it is written and synced, around the purge and the
/// acknowledgement, and after. Before each round the leader's log must start after the end of
/// F's (`log_start` in `/status`); F then needs a new snapshot, unless entries the leader sent
/// before compacting were still queued for it (a round without an install, not counted). Every
/// restart must succeed (a log purged before its snapshot was saved made the restart fail:
/// "stored log starts after a purged prefix"), and at the end F catches up and holds every
/// acknowledged write. The rounds go on until `MIN_INSTALLS` installs were cut short, at least
/// one before the snapshot was saved and one after (at most `MAX_ROUNDS` rounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_at_any_step_of_a_snapshot_install_restarts_and_catches_up() {
    const DELAYS_MS: [u64; 11] = [0, 2, 5, 10, 20, 30, 40, 50, 60, 80, 120];
    const MIN_INSTALLS: usize = DELAYS_MS.len();
    const MAX_ROUNDS: usize = 3 * DELAYS_MS.len();
    let mut cluster = start_cluster(&["--snapshot-entries", "50", "--retain-entries", "0"]).await;
    let (l, _) = cluster
        .wait_for_leader(None, 0, WAIT)
        .await
        .expect("a leader");
    let f = (l + 1) % 3;
    preload(&cluster, 64, 64 << 10).await;
    let writer = Writer::start(&cluster);
    writes_go_on(&cluster, l, 60).await;
    cluster.kill(f).await;
    // F's log ends at or before the leader's when F died (the leader is its only source).
    let mut f_ends_by = last_index(&cluster, l).await;

    let (mut before_saved, mut after_saved) = (0, 0);
    let mut rounds = Vec::new();
    for round in 0..MAX_ROUNDS {
        let installs = before_saved + after_saved;
        if installs >= MIN_INSTALLS && before_saved > 0 && after_saved > 0 {
            break;
        }
        // While F is down, the leader compacts its log past F's.
        let leader_start = compacted_past(&cluster, l, f_ends_by).await;
        let from = log_len(&cluster, f);
        if let Err(e) = cluster.restart(f).await {
            panic!("round {round}: F does not restart: {e}");
        }
        let delay = DELAYS_MS[installs % DELAYS_MS.len()];
        let installing = install_or_entries(&cluster, f, from, leader_start).await;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        cluster.kill(f).await;
        f_ends_by = last_index(&cluster, l).await;
        if !installing {
            rounds.push("no install (entries sent before the compaction came first)".into());
            continue;
        }
        let saved = log_since(&cluster, f, from).contains(INSTALLED);
        if saved {
            after_saved += 1;
        } else {
            before_saved += 1;
        }
        rounds.push(format!(
            "{delay} ms: {}",
            if saved { "saved" } else { "not saved" }
        ));
    }
    eprintln!("kills after the install began: {}", rounds.join(", "));
    assert!(
        before_saved + after_saved >= MIN_INSTALLS && before_saved > 0 && after_saved > 0,
        "installs killed before the save: {before_saved}, after it: {after_saved} ({rounds:?})"
    );

    cluster.restart(f).await.expect("F restarts");
    let commit = info(&cluster, l).await.commit_index;
    let deadline = Instant::now() + WAIT;
    while info(&cluster, f).await.applied_index < commit {
        assert!(
            Instant::now() < deadline,
            "F catches up{}",
            cluster.log_tail(f)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let outcomes = writer.finish().await;
    for index in 0..3 {
        check_acked_on(&cluster, index, &outcomes.acked).await;
    }
    let log = log_since(&cluster, f, 0);
    assert!(!log.contains("purged prefix"), "{log}");
    cluster.shutdown(Duration::from_secs(5)).await;
}

/// A tmpfs mounted for one test, unmounted when dropped (on every path, panics included).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it) on `path`; `Err` says why not.
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("mounting a tmpfs needs root".into());
        }
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount -t tmpfs failed ({status})"));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Free bytes on it.
    fn free_bytes(&self) -> u64 {
        let path = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: statvfs is plain old data, for which all zeros is a valid value.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: the path is a valid C string and `stat` a valid struct to write into.
        let done = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
        assert_eq!(done, 0, "statvfs {}", self.path.display());
        stat.f_bavail as u64 * stat.f_frsize as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds a file open: detach it now, it goes when released.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Copies the files of `from` (and its subdirectories) into `to`.
fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            std::fs::create_dir(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A full disk under a real process: a follower whose data directory is on a small tmpfs fills
/// it under writes, stops loudly (exit status 3, the log says the log storage failed with no
/// space left, no BROKEN marker), and once space is freed restarts with no manual step and
/// catches up. The others take writes all along.
///
/// Segments of 128 KiB: the follower's log runs out of room when it makes a new one. The
/// follower moves onto the tmpfs (stopped, its files copied there) after a first stretch of
/// writes; a filler file leaves it less room than a segment, and removing the filler frees the
/// space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_node_loudly_and_it_catches_up_once_space_is_freed() {
    let mut cluster = start_cluster(&["--segment-bytes", "131072"]).await;
    let (l, _) = cluster
        .wait_for_leader(None, 0, WAIT)
        .await
        .expect("a leader");
    let f = (l + 1) % 3;
    // Values of 8 KiB: a segment holds about 15 of them.
    let writer = Writer::start_padded(&cluster, 8 << 10);
    writes_go_on(&cluster, l, 30).await;

    cluster.stop(f, Duration::from_secs(5)).await;
    let data = cluster.nodes()[f].data_dir.clone();
    let aside = data.with_extension("aside");
    std::fs::rename(&data, &aside).expect("set the data aside");
    std::fs::create_dir(&data).expect("a mount point");
    let mount = match Tmpfs::mount(&data, "4m") {
        Ok(mount) => mount,
        Err(reason) => {
            eprintln!("skipped a_full_disk_stops_the_node_loudly_and_it_catches_up_once_space_is_freed: {reason}");
            writer.finish().await;
            cluster.shutdown(Duration::from_secs(5)).await;
            return;
        }
    };
    copy_tree(&aside, &data);
    let filler = data.join("filler");
    // Less than a segment: the next one the log makes does not fit.
    let room = 96 << 10;
    let fill = mount.free_bytes().saturating_sub(room);
    std::fs::write(&filler, vec![1u8; fill as usize]).expect("the filler");
    let from = log_len(&cluster, f);
    cluster
        .restart(f)
        .await
        .expect("F restarts on the small disk");

    let deadline = Instant::now() + WAIT;
    let exit = loop {
        if let Some(exit) = cluster.exited(f) {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "F never filled its disk{}",
            cluster.log_tail(f)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let log = log_since(&cluster, f, from);
    assert_eq!(exit.code(), Some(3), "{exit}: {log}");
    assert!(log.contains("log storage failed"), "{log}");
    assert!(log.contains("No space left on device"), "{log}");
    assert!(!data.join("BROKEN").exists(), "no manual step is asked for");
    writes_go_on(&cluster, l, 30).await;

    std::fs::remove_file(&filler).expect("free the space");
    let from = log_len(&cluster, f);
    cluster
        .restart(f)
        .await
        .expect("F restarts once space is freed");
    let commit = info(&cluster, l).await.commit_index;
    let deadline = Instant::now() + WAIT;
    while info(&cluster, f).await.applied_index < commit {
        assert!(
            Instant::now() < deadline,
            "F catches up{}",
            cluster.log_tail(f)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let log = log_since(&cluster, f, from);
    assert!(
        log.contains("a write or sync failed in the previous run"),
        "{log}"
    );
    let outcomes = writer.finish().await;
    for index in 0..3 {
        check_acked_on(&cluster, index, &outcomes.acked).await;
    }
    cluster.shutdown(Duration::from_secs(5)).await;
    drop(mount);
}
