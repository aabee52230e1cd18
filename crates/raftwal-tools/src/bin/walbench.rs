//! walbench: how fast is the WAL next to the bare disk it runs on?
//!
//! A benchmark binary, not a test: it measures and prints, and a missed target never makes it fail.
//!
//! ```text
//! cargo run --release -p raftwal-tools --bin walbench -- [--dir DIR] [--seconds S | --count N]
//!     [--batches 1,16,256] [--sizes 64,4096] [--rounds R] [--recovery-bytes BYTES]
//!     [--json FILE] [--skip-recovery] [--skip-group-commit]
//! ```
//!
//! 1. Append throughput with durability on: for each batch size B and entry size E, a loop of
//!    `Wal::write(Append(B entries of E bytes))` + `Wal::sync()` (one frame, one `fdatasync`).
//! 2. Beside it, on the same filesystem and interleaved with it, the bare disk: `write_all` of
//!    B*E bytes + `File::sync_data()`, (a) appending to a growing file and (b) overwriting a
//!    zero-filled, synced file (like the WAL's preallocated segments; it wraps around at its end).
//!    The WAL's entries/s over the better bare variant is the ratio; the target is 90%.
//! 3. Group commit: C threads each submitting 1-entry batches to [`GroupCommit`] and waiting for
//!    them to be durable.
//! 4. Recovery: a log of `--recovery-bytes` of payload (4 KiB entries, batches of 256), then
//!    `Wal::open` (scan + checksums) and `Wal::load_state` (all entries read back), timed apart,
//!    with a warm page cache and, when `/proc/sys/vm/drop_caches` is writable, a cold one.
//!
//! Everything runs in a fresh directory under `--dir` (default `./target/walbench-tmp`), which is
//! removed at the end. Results go to stdout as Markdown tables, and with `--json FILE` as JSON.

use clap::Parser;
use raftengine::{Entry, EntryPayload, LogIndex, LogWrite, PersistBatch, Term};
use raftwal::{GroupCommit, Wal, WalOptions};
use serde::Serialize;
use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The WAL must reach this share of the better bare-disk loop's entries/s.
const TARGET_RATIO: f64 = 0.90;
/// Recovery target: `Wal::open` scanning at least this many MB/s.
const TARGET_OPEN_MB_S: f64 = 500.0;
const RECOVERY_ENTRY_BYTES: usize = 4096;
const RECOVERY_BATCH: usize = 256;
const MB: f64 = 1e6;

#[derive(Parser, Debug)]
#[command(
    name = "walbench",
    about = "Benchmarks raftwal's durable appends against bare write+fdatasync loops, group commit, and recovery."
)]
struct Args {
    /// Base directory: a fresh subdirectory is made in it and removed at the end.
    /// [default: ./target/walbench-tmp]
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds per measurement (each variant of each cell) [default: 3]
    #[arg(long, conflicts_with = "count")]
    seconds: Option<f64>,
    /// Batches (syncs) per measurement instead of a duration; the group-commit cell splits this
    /// many 1-entry batches among its threads.
    #[arg(long)]
    count: Option<u64>,
    /// Batch sizes B (entries per sync), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 16, 256])]
    batches: Vec<usize>,
    /// Entry payload sizes E in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![64usize, 4096])]
    sizes: Vec<usize>,
    /// Repeat each cell this many times (interleaved) and report the median.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Payload bytes of the log written for the recovery measurement.
    #[arg(long, default_value_t = 1 << 30)]
    recovery_bytes: u64,
    /// Segment size for every WAL in the run; also the size of the bare preallocated file.
    #[arg(long, default_value_t = 64 << 20)]
    segment_bytes: u64,
    /// Submitter threads in the group-commit measurement.
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Skip the recovery measurement.
    #[arg(long)]
    skip_recovery: bool,
    /// Skip the group-commit measurement.
    #[arg(long)]
    skip_group_commit: bool,
}

type Res<T> = Result<T, String>;

/// Attaches what was being done to an error.
trait Ctx<T> {
    fn ctx(self, what: impl Display) -> Res<T>;
}

impl<T, E: Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: impl Display) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// How long one measurement runs.
#[derive(Debug, Clone, Copy)]
enum Budget {
    Time(Duration),
    Batches(u64),
}

impl Budget {
    fn done(self, started: Instant, batches: u64) -> bool {
        match self {
            Budget::Time(d) => started.elapsed() >= d,
            Budget::Batches(n) => batches >= n,
        }
    }
}

impl Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Time(d) => write!(f, "{:.1} s", d.as_secs_f64()),
            Budget::Batches(n) => write!(f, "{n} batches"),
        }
    }
}

/// Removes the run directory when dropped (also on an error or a panic).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("walbench: could not remove {}: {e}", self.0.display());
        }
    }
}

/// One measured loop.
#[derive(Debug, Clone, Serialize)]
struct Run {
    variant: &'static str,
    batch: usize,
    entry_bytes: usize,
    batches: u64,
    entries: u64,
    seconds: f64,
    entries_per_sec: f64,
    syncs_per_sec: f64,
    payload_mb_per_sec: f64,
    /// Latency of one batch: the write plus its `fdatasync`.
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    /// WAL only: segments opened during the measurement.
    #[serde(skip_serializing_if = "Option::is_none")]
    segment_rolls: Option<u64>,
}

impl Run {
    fn new(
        variant: &'static str,
        batch: usize,
        entry_bytes: usize,
        elapsed: Duration,
        mut latencies: Vec<Duration>,
    ) -> Run {
        let batches = latencies.len() as u64;
        let entries = batches * batch as u64;
        let seconds = elapsed.as_secs_f64();
        latencies.sort_unstable();
        Run {
            variant,
            batch,
            entry_bytes,
            batches,
            entries,
            seconds,
            entries_per_sec: entries as f64 / seconds,
            syncs_per_sec: batches as f64 / seconds,
            payload_mb_per_sec: (entries * entry_bytes as u64) as f64 / MB / seconds,
            p50_us: percentile_us(&latencies, 0.50),
            p99_us: percentile_us(&latencies, 0.99),
            max_us: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
            segment_rolls: None,
        }
    }
}

/// Nearest-rank percentile of sorted samples, in microseconds.
fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

/// The median run by entries/s (the upper median for an even count).
fn median(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.entries_per_sec.total_cmp(&b.entries_per_sec));
    sorted[sorted.len() / 2].clone()
}

#[derive(Debug, Serialize)]
struct Cell {
    batch: usize,
    entry_bytes: usize,
    wal: Run,
    bare_append: Run,
    bare_prealloc: Run,
    /// WAL entries/s over the better bare variant.
    ratio: f64,
    pass: bool,
    /// Every round, when `--rounds` > 1.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    all_rounds: Vec<Run>,
}

#[derive(Debug, Serialize)]
struct GroupCommitResult {
    threads: usize,
    entry_bytes: usize,
    entries: u64,
    seconds: f64,
    entries_per_sec: f64,
    syncs_per_sec: f64,
    batches_per_sync: f64,
    payload_mb_per_sec: f64,
    /// Submit to durable, per 1-entry batch.
    p50_us: f64,
    p99_us: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Phase {
    name: &'static str,
    cache: &'static str,
    seconds: f64,
    /// Bytes of the segment files (what `Wal::open` reads and checks, zero tail included).
    file_mb_per_sec: f64,
    payload_mb_per_sec: f64,
}

#[derive(Debug, Serialize)]
struct RecoveryResult {
    payload_bytes: u64,
    entries: u64,
    segment_bytes: u64,
    segments: usize,
    segment_file_bytes: u64,
    frames: u64,
    records: u64,
    phases: Vec<Phase>,
    /// Why no cold-cache numbers, when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    cold_skipped: Option<String>,
    open_target_mb_per_sec: f64,
    open_warm_pass: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    kernel: String,
    cores: usize,
    dir: String,
    budget_per_measurement: String,
    rounds: usize,
    segment_bytes: u64,
    target_ratio: f64,
    cells: Vec<Cell>,
    group_commit: Vec<GroupCommitResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery: Option<RecoveryResult>,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("walbench: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Res<()> {
    if args.batches.contains(&0) || args.sizes.is_empty() || args.batches.is_empty() {
        return Err("--batches must be non-empty and positive; --sizes non-empty".into());
    }
    if args.rounds == 0 || args.threads == 0 {
        return Err("--rounds and --threads must be at least 1".into());
    }
    let budget = match (args.seconds, args.count) {
        (_, Some(n)) => Budget::Batches(n.max(1)),
        (Some(s), None) if s > 0.0 => Budget::Time(Duration::from_secs_f64(s)),
        (Some(s), None) => return Err(format!("--seconds must be positive, got {s}")),
        (None, None) => Budget::Time(Duration::from_secs(3)),
    };
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("target").join("walbench-tmp"));
    fs::create_dir_all(&base).ctx(format!("creating {}", base.display()))?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let root = base.join(format!("run-{}-{stamp}", std::process::id()));
    fs::create_dir(&root).ctx(format!("creating {}", root.display()))?;
    let scratch = Scratch(root.clone());
    let seg = args.segment_bytes;

    let mut report = Report {
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_string()),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        dir: fs::canonicalize(&root)
            .unwrap_or_else(|_| root.clone())
            .display()
            .to_string(),
        budget_per_measurement: budget.to_string(),
        rounds: args.rounds,
        segment_bytes: seg,
        target_ratio: TARGET_RATIO,
        cells: Vec::new(),
        group_commit: Vec::new(),
        recovery: None,
    };

    for &batch in &args.batches {
        for &size in &args.sizes {
            let mut wal_runs = Vec::new();
            let mut append_runs = Vec::new();
            let mut prealloc_runs = Vec::new();
            for round in 0..args.rounds {
                eprintln!(
                    "walbench: B={batch} E={size} round {}/{}",
                    round + 1,
                    args.rounds
                );
                // Interleaved: the WAL and the bare loops of one cell run back to back, so they
                // see the same disk weather.
                wal_runs.push(wal_loop(&root, batch, size, budget, seg)?);
                append_runs.push(bare_append_loop(&root, batch, size, budget)?);
                prealloc_runs.push(bare_prealloc_loop(&root, batch, size, budget, seg)?);
            }
            let (wal, bare_append, bare_prealloc) = (
                median(&wal_runs),
                median(&append_runs),
                median(&prealloc_runs),
            );
            let best = bare_append
                .entries_per_sec
                .max(bare_prealloc.entries_per_sec);
            let ratio = wal.entries_per_sec / best;
            eprintln!(
                "walbench:   wal {:.0}/s, bare append {:.0}/s, bare prealloc {:.0}/s: {:.1}%",
                wal.entries_per_sec,
                bare_append.entries_per_sec,
                bare_prealloc.entries_per_sec,
                ratio * 100.0
            );
            let all_rounds = if args.rounds > 1 {
                wal_runs
                    .into_iter()
                    .chain(append_runs)
                    .chain(prealloc_runs)
                    .collect()
            } else {
                Vec::new()
            };
            report.cells.push(Cell {
                batch,
                entry_bytes: size,
                wal,
                bare_append,
                bare_prealloc,
                ratio,
                pass: ratio >= TARGET_RATIO,
                all_rounds,
            });
        }
    }

    if !args.skip_group_commit {
        for &size in &args.sizes {
            eprintln!("walbench: group commit, {} threads, E={size}", args.threads);
            report
                .group_commit
                .push(group_commit_loop(&root, args.threads, size, budget, seg)?);
        }
    }

    if !args.skip_recovery {
        report.recovery = Some(recovery(&root, args.recovery_bytes, seg)?);
    }

    let markdown = render(&report);
    print!("{markdown}");
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).ctx("encoding the JSON report")?;
        fs::write(path, json + "\n").ctx(format!("writing {}", path.display()))?;
        eprintln!("walbench: wrote {}", path.display());
    }
    drop(scratch);
    Ok(())
}

/// `n` payload bytes with a non-trivial pattern.
fn payload(n: usize, seed: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed.wrapping_mul(7)) % 251) as u8)
        .collect()
}

/// One `Append` of `batch` consecutive entries starting at `first`.
fn append_write(first: u64, batch: usize, size: usize) -> LogWrite {
    let bytes = payload(size, 1);
    LogWrite::Append(
        (0..batch as u64)
            .map(|i| Entry {
                term: Term(1),
                index: LogIndex(first + i),
                payload: EntryPayload::Command(bytes.clone()),
            })
            .collect(),
    )
}

/// Moves an `Append` on to the next `batch` indexes (reusing its payloads).
fn advance(write: &mut LogWrite, batch: usize) {
    if let LogWrite::Append(entries) = write {
        for entry in entries {
            entry.index.0 += batch as u64;
        }
    }
}

/// Waits for the WAL's spare segment (made on a background thread after a roll) to be complete
/// and on disk, so a measurement does not start while 64 MiB of zeros are being written beside
/// it. Rolls during a measurement still pay for their spare: that is the steady state.
fn settle_spare(dir: &Path, segment_bytes: u64) -> Res<()> {
    let spare = dir.join("wal").join("spare.tmp");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if fs::metadata(&spare).is_ok_and(|m| m.len() == segment_bytes) {
            break;
        }
        if Instant::now() > deadline {
            // Not fatal: the layout may have changed. Measure anyway.
            eprintln!(
                "walbench: warning: {} did not appear; measuring anyway",
                spare.display()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    File::open(&spare)
        .and_then(|f| f.sync_all())
        .ctx(format!("syncing {}", spare.display()))
}

fn open_wal(dir: &Path, segment_bytes: u64) -> Res<Wal> {
    Wal::open(WalOptions::new(dir).segment_bytes(segment_bytes))
        .ctx(format!("opening the WAL in {}", dir.display()))
}

fn fresh_dir(path: &Path) -> Res<()> {
    if path.exists() {
        fs::remove_dir_all(path).ctx(format!("removing {}", path.display()))?;
    }
    fs::create_dir_all(path).ctx(format!("creating {}", path.display()))
}

/// B entries of E bytes per `write` + `sync`, on a fresh WAL.
fn wal_loop(root: &Path, batch: usize, size: usize, budget: Budget, seg: u64) -> Res<Run> {
    let dir = root.join(format!("wal-b{batch}-e{size}"));
    fresh_dir(&dir)?;
    let mut wal = open_wal(&dir, seg)?;
    let mut write = append_write(1, batch, size);
    // Untimed warm-up: creates the first segment and starts the next spare.
    wal.write(&write).ctx("WAL write (warm-up)")?;
    wal.sync().ctx("WAL sync (warm-up)")?;
    advance(&mut write, batch);
    settle_spare(&dir, seg)?;
    let segments_before = wal.segment_paths().len();

    let mut latencies = Vec::with_capacity(1 << 14);
    let started = Instant::now();
    while !budget.done(started, latencies.len() as u64) {
        let t = Instant::now();
        wal.write(&write).ctx("WAL write")?;
        wal.sync().ctx("WAL sync")?;
        latencies.push(t.elapsed());
        advance(&mut write, batch);
    }
    let elapsed = started.elapsed();
    let rolls = (wal.segment_paths().len() - segments_before) as u64;
    drop(wal);
    fs::remove_dir_all(&dir).ctx(format!("removing {}", dir.display()))?;
    let mut run = Run::new("wal", batch, size, elapsed, latencies);
    run.segment_rolls = Some(rolls);
    Ok(run)
}

/// `write_all` of B*E bytes + `sync_data`, appending to a growing file.
fn bare_append_loop(root: &Path, batch: usize, size: usize, budget: Budget) -> Res<Run> {
    let path = root.join("bare-append.dat");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .ctx(format!("creating {}", path.display()))?;
    let buf = payload(batch * size, 1);
    file.write_all(&buf)
        .and_then(|()| file.sync_all())
        .ctx(format!("writing {} (warm-up)", path.display()))?;

    let mut latencies = Vec::with_capacity(1 << 14);
    let started = Instant::now();
    while !budget.done(started, latencies.len() as u64) {
        let t = Instant::now();
        file.write_all(&buf)
            .ctx(format!("writing {}", path.display()))?;
        file.sync_data()
            .ctx(format!("fdatasync of {}", path.display()))?;
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    drop(file);
    fs::remove_file(&path).ctx(format!("removing {}", path.display()))?;
    Ok(Run::new("bare-append", batch, size, elapsed, latencies))
}

/// `write_all` of B*E bytes + `sync_data`, overwriting a file filled with zeros and synced before
/// the clock starts (like a WAL segment); it wraps to the start at its end.
fn bare_prealloc_loop(
    root: &Path,
    batch: usize,
    size: usize,
    budget: Budget,
    seg: u64,
) -> Res<Run> {
    let path = root.join("bare-prealloc.dat");
    let chunk = (batch * size) as u64;
    let capacity = seg.max(chunk).next_multiple_of(chunk);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .ctx(format!("creating {}", path.display()))?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = capacity;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])
            .ctx(format!("zero-filling {}", path.display()))?;
        left -= n as u64;
    }
    file.sync_all().ctx(format!("syncing {}", path.display()))?;
    file.seek(SeekFrom::Start(0))
        .ctx(format!("seeking in {}", path.display()))?;
    let buf = payload(batch * size, 1);

    let mut offset = 0u64;
    let mut latencies = Vec::with_capacity(1 << 14);
    let started = Instant::now();
    while !budget.done(started, latencies.len() as u64) {
        let t = Instant::now();
        if offset + chunk > capacity {
            file.seek(SeekFrom::Start(0))
                .ctx(format!("seeking in {}", path.display()))?;
            offset = 0;
        }
        file.write_all(&buf)
            .ctx(format!("writing {}", path.display()))?;
        file.sync_data()
            .ctx(format!("fdatasync of {}", path.display()))?;
        offset += chunk;
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    drop(file);
    fs::remove_file(&path).ctx(format!("removing {}", path.display()))?;
    Ok(Run::new("bare-prealloc", batch, size, elapsed, latencies))
}

/// What the group-commit callback has seen.
#[derive(Default)]
struct Progress {
    durable_seq: u64,
    syncs: u64,
    batches: u64,
    error: Option<String>,
}

struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

/// Hands out indexes and sequence numbers under one lock, so batches reach the writer in index
/// order.
struct Submitter {
    commit: GroupCommit,
    next_index: u64,
    next_seq: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Submits one 1-entry batch and waits until it is durable; returns the time it took.
fn commit_one(submitter: &Mutex<Submitter>, shared: &Shared, bytes: &[u8]) -> Res<Duration> {
    let mut entry = Entry {
        term: Term(1),
        index: LogIndex(0),
        payload: EntryPayload::Command(bytes.to_vec()),
    };
    let t = Instant::now();
    let seq = {
        let mut s = lock(submitter);
        entry.index = LogIndex(s.next_index);
        let seq = s.next_seq;
        s.next_index += 1;
        s.next_seq += 1;
        s.commit
            .submit(PersistBatch {
                seq,
                writes: vec![LogWrite::Append(vec![entry])],
            })
            .ctx("submitting to group commit")?;
        seq
    };
    let mut progress = lock(&shared.progress);
    while progress.durable_seq < seq {
        if let Some(e) = &progress.error {
            return Err(format!("group commit failed: {e}"));
        }
        progress = shared
            .changed
            .wait(progress)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
    }
    Ok(t.elapsed())
}

fn group_commit_loop(
    root: &Path,
    threads: usize,
    size: usize,
    budget: Budget,
    seg: u64,
) -> Res<GroupCommitResult> {
    let dir = root.join(format!("group-commit-e{size}"));
    fresh_dir(&dir)?;
    let wal = open_wal(&dir, seg)?;
    let shared = Arc::new(Shared {
        progress: Mutex::new(Progress::default()),
        changed: Condvar::new(),
    });
    let on_durable = {
        let shared = Arc::clone(&shared);
        move |result: Result<raftwal::Durable, raftengine::StorageError>| {
            let mut p = lock(&shared.progress);
            match result {
                Ok(d) => {
                    p.durable_seq = d.seq;
                    p.syncs += 1;
                    p.batches += d.batches as u64;
                }
                Err(e) => p.error = Some(e.to_string()),
            }
            drop(p);
            shared.changed.notify_all();
        }
    };
    let submitter = Mutex::new(Submitter {
        commit: GroupCommit::spawn(wal, on_durable),
        next_index: 1,
        next_seq: 1,
    });
    let bytes = payload(size, 1);
    // Untimed warm-up: the first segment and its spare.
    commit_one(&submitter, &shared, &bytes)?;
    settle_spare(&dir, seg)?;
    let (syncs_before, batches_before) = {
        let p = lock(&shared.progress);
        (p.syncs, p.batches)
    };

    let per_thread = match budget {
        Budget::Batches(n) => Budget::Batches(n.div_ceil(threads as u64)),
        time => time,
    };
    let started = Instant::now();
    let results: Vec<Res<Vec<Duration>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut latencies = Vec::with_capacity(1 << 12);
                    while !per_thread.done(started, latencies.len() as u64) {
                        latencies.push(commit_one(&submitter, &shared, &bytes)?);
                    }
                    Ok(latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a submitter thread panicked".into()))
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let mut latencies = Vec::new();
    for r in results {
        latencies.extend(r?);
    }
    let (syncs, batches) = {
        let p = lock(&shared.progress);
        (p.syncs - syncs_before, p.batches - batches_before)
    };
    let wal = submitter
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .commit
        .shutdown()
        .ctx("shutting down group commit")?;
    drop(wal);
    fs::remove_dir_all(&dir).ctx(format!("removing {}", dir.display()))?;

    latencies.sort_unstable();
    let entries = latencies.len() as u64;
    let seconds = elapsed.as_secs_f64();
    Ok(GroupCommitResult {
        threads,
        entry_bytes: size,
        entries,
        seconds,
        entries_per_sec: entries as f64 / seconds,
        syncs_per_sec: syncs as f64 / seconds,
        batches_per_sync: if syncs == 0 {
            0.0
        } else {
            batches as f64 / syncs as f64
        },
        payload_mb_per_sec: (entries * size as u64) as f64 / MB / seconds,
        p50_us: percentile_us(&latencies, 0.50),
        p99_us: percentile_us(&latencies, 0.99),
    })
}

/// Flushes dirty pages and empties the page cache; `Err` says why it cannot.
fn drop_caches() -> Res<()> {
    let status = std::process::Command::new("sync")
        .status()
        .ctx("running sync")?;
    if !status.success() {
        return Err(format!("sync exited with {status}"));
    }
    OpenOptions::new()
        .write(true)
        .open("/proc/sys/vm/drop_caches")
        .and_then(|mut f| f.write_all(b"3\n"))
        .ctx("writing 3 to /proc/sys/vm/drop_caches")
}

/// Size of the segment files (`*.wal`) of a WAL directory: the files that hold the data.
fn segment_file_bytes(dir: &Path) -> Res<(usize, u64)> {
    let wal_dir = dir.join("wal");
    let mut count = 0;
    let mut bytes = 0;
    for item in fs::read_dir(&wal_dir).ctx(format!("listing {}", wal_dir.display()))? {
        let item = item.ctx(format!("listing {}", wal_dir.display()))?;
        if item.file_name().to_string_lossy().ends_with(".wal") {
            count += 1;
            bytes += item
                .metadata()
                .ctx(format!("stat of {}", item.path().display()))?
                .len();
        }
    }
    Ok((count, bytes))
}

fn phase(name: &'static str, cache: &'static str, took: Duration, file: u64, pay: u64) -> Phase {
    let s = took.as_secs_f64();
    Phase {
        name,
        cache,
        seconds: s,
        file_mb_per_sec: file as f64 / MB / s,
        payload_mb_per_sec: pay as f64 / MB / s,
    }
}

/// Times `Wal::open` and `load_state` on the log in `dir`, checking what comes back.
fn open_and_load(
    dir: &Path,
    seg: u64,
    entries: u64,
    payload_bytes: u64,
    cold: bool,
) -> Res<(Duration, Duration, raftwal::RecoveryReport)> {
    if cold {
        drop_caches()?;
    }
    let t = Instant::now();
    let wal = open_wal(dir, seg)?;
    let open = t.elapsed();
    let report = wal.recovery_report().clone();
    if cold {
        drop_caches()?;
    }
    let t = Instant::now();
    let state = wal.load_state().ctx("load_state")?;
    let load = t.elapsed();
    let got: u64 = state
        .entries
        .iter()
        .map(|e| match &e.payload {
            EntryPayload::Command(b) => b.len() as u64,
            EntryPayload::TermStart | EntryPayload::Membership(_) => 0,
        })
        .sum();
    if state.entries.len() as u64 != entries
        || got != payload_bytes
        || state.entries.last().map(|e| e.index.0) != Some(entries)
    {
        return Err(format!(
            "load_state returned {} entries / {got} payload bytes, expected {entries} / {payload_bytes}",
            state.entries.len()
        ));
    }
    drop(state);
    drop(wal);
    Ok((open, load, report))
}

fn recovery(root: &Path, payload_bytes: u64, seg: u64) -> Res<RecoveryResult> {
    let dir = root.join("recovery");
    fresh_dir(&dir)?;
    let entries = payload_bytes.div_ceil(RECOVERY_ENTRY_BYTES as u64).max(1);
    let payload_bytes = entries * RECOVERY_ENTRY_BYTES as u64;
    eprintln!(
        "walbench: recovery: writing {entries} entries of {RECOVERY_ENTRY_BYTES} B ({:.0} MB)",
        payload_bytes as f64 / MB
    );
    let mut wal = open_wal(&dir, seg)?;
    let started = Instant::now();
    let mut next = 1u64;
    while next <= entries {
        let n = (entries - next + 1).min(RECOVERY_BATCH as u64) as usize;
        wal.write(&append_write(next, n, RECOVERY_ENTRY_BYTES))
            .ctx("WAL write (recovery log)")?;
        wal.sync().ctx("WAL sync (recovery log)")?;
        next += n as u64;
    }
    let wrote = started.elapsed();
    drop(wal);
    let (segments, file_bytes) = segment_file_bytes(&dir)?;
    let mut phases = vec![phase("write", "-", wrote, file_bytes, payload_bytes)];

    eprintln!("walbench: recovery: open + load_state, warm cache");
    let (open, load, report) = open_and_load(&dir, seg, entries, payload_bytes, false)?;
    if report.bytes_scanned != file_bytes {
        eprintln!(
            "walbench: note: open scanned {} bytes, the segment files hold {file_bytes}",
            report.bytes_scanned
        );
    }
    let open_warm = phase("Wal::open", "warm", open, file_bytes, payload_bytes);
    let open_warm_pass = open_warm.file_mb_per_sec >= TARGET_OPEN_MB_S;
    phases.push(open_warm);
    phases.push(phase("load_state", "warm", load, file_bytes, payload_bytes));

    eprintln!("walbench: recovery: open + load_state, cold cache (if drop_caches is writable)");
    let cold_skipped = match open_and_load(&dir, seg, entries, payload_bytes, true) {
        Ok((open, load, _)) => {
            phases.push(phase("Wal::open", "cold", open, file_bytes, payload_bytes));
            phases.push(phase("load_state", "cold", load, file_bytes, payload_bytes));
            None
        }
        Err(e) => {
            eprintln!("walbench: cold cache not measured: {e}");
            Some(e)
        }
    };
    fs::remove_dir_all(&dir).ctx(format!("removing {}", dir.display()))?;
    Ok(RecoveryResult {
        payload_bytes,
        entries,
        segment_bytes: seg,
        segments,
        segment_file_bytes: file_bytes,
        frames: report.frames,
        records: report.records,
        phases,
        cold_skipped,
        open_target_mb_per_sec: TARGET_OPEN_MB_S,
        open_warm_pass,
    })
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n.is_multiple_of(1 << 30) => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n.is_multiple_of(1 << 20) => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n.is_multiple_of(1 << 10) => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

fn render(r: &Report) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line("## raftwal walbench".into());
    line(String::new());
    line(format!(
        "Linux {}, {} cores, files in `{}`; {} per measurement, {} round(s) (median by entries/s), {} segments. \
         MB = 10^6 bytes of entry payload. Latency = one batch: write + `fdatasync`.",
        r.kernel,
        r.cores,
        r.dir,
        r.budget_per_measurement,
        r.rounds,
        human_bytes(r.segment_bytes)
    ));
    line(String::new());
    line("### Appends with an fdatasync per batch".into());
    line(String::new());
    line("| batch | entry | variant | entries/s | syncs/s | MB/s | p50 µs | p99 µs | segment rolls |".into());
    line("|---:|---:|---|---:|---:|---:|---:|---:|---:|".into());
    for c in &r.cells {
        for run in [&c.wal, &c.bare_append, &c.bare_prealloc] {
            line(format!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {} |",
                c.batch,
                human_bytes(c.entry_bytes as u64),
                run.variant,
                run.entries_per_sec,
                run.syncs_per_sec,
                run.payload_mb_per_sec,
                run.p50_us,
                run.p99_us,
                run.segment_rolls.map_or("".into(), |n| n.to_string()),
            ));
        }
    }
    line(String::new());
    line(format!(
        "### WAL vs the better bare loop (target ≥ {:.0}%)",
        r.target_ratio * 100.0
    ));
    line(String::new());
    line(
        "| batch | entry | WAL entries/s | bare append | bare prealloc | WAL / best bare | |"
            .into(),
    );
    line("|---:|---:|---:|---:|---:|---:|---|".into());
    for c in &r.cells {
        line(format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.1}% | {} |",
            c.batch,
            human_bytes(c.entry_bytes as u64),
            c.wal.entries_per_sec,
            c.bare_append.entries_per_sec,
            c.bare_prealloc.entries_per_sec,
            c.ratio * 100.0,
            if c.pass { "PASS" } else { "MISS" }
        ));
    }
    if !r.group_commit.is_empty() {
        line(String::new());
        line("### Group commit: concurrent 1-entry batches, each waiting for durability".into());
        line(String::new());
        line(
            "| threads | entry | entries/s | syncs/s | batches per sync | MB/s | p50 µs | p99 µs |"
                .into(),
        );
        line("|---:|---:|---:|---:|---:|---:|---:|---:|".into());
        for g in &r.group_commit {
            line(format!(
                "| {} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} |",
                g.threads,
                human_bytes(g.entry_bytes as u64),
                g.entries_per_sec,
                g.syncs_per_sec,
                g.batches_per_sync,
                g.payload_mb_per_sec,
                g.p50_us,
                g.p99_us
            ));
        }
    }
    if let Some(rec) = &r.recovery {
        line(String::new());
        line(format!(
            "### Recovery: {} of payload ({} entries of 4 KiB, batches of {RECOVERY_BATCH}), {} segments of {} ({:.0} MB of segment files)",
            human_bytes(rec.payload_bytes),
            rec.entries,
            rec.segments,
            human_bytes(rec.segment_bytes),
            rec.segment_file_bytes as f64 / MB
        ));
        line(String::new());
        line("| phase | page cache | seconds | segment-file MB/s | payload MB/s |".into());
        line("|---|---|---:|---:|---:|".into());
        for p in &rec.phases {
            line(format!(
                "| {} | {} | {:.2} | {:.0} | {:.0} |",
                p.name, p.cache, p.seconds, p.file_mb_per_sec, p.payload_mb_per_sec
            ));
        }
        line(String::new());
        let warm_open = rec
            .phases
            .iter()
            .find(|p| p.name == "Wal::open" && p.cache == "warm");
        if let Some(p) = warm_open {
            line(format!(
                "`Wal::open` (scan + CRC of {} frames, {} records) with a warm page cache: {:.0} MB/s of segment files, target ≥ {:.0} MB/s: {}.",
                rec.frames,
                rec.records,
                p.file_mb_per_sec,
                rec.open_target_mb_per_sec,
                if rec.open_warm_pass { "PASS" } else { "MISS" }
            ));
        }
        line(match &rec.cold_skipped {
            None => "Warm = the log was just written and sits in the page cache; cold = after `sync; echo 3 > /proc/sys/vm/drop_caches`.".into(),
            Some(why) => format!("Warm = the log was just written and sits in the page cache. Cold cache not measured ({why})."),
        });
    }
    out
}
