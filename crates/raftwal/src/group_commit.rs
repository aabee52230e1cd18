//! Group commit on a thread: batches submitted while a sync is running are written together and
//! made durable by the next single `fdatasync`. A caller with nothing else to do until its write
//! is durable (a Raft follower) may instead write on its own thread when the writer is idle
//! ([`GroupCommit::persist_here`]): that saves two thread wake-ups per write, which on a small
//! virtual machine cost more than the write itself.

use crate::error::{WalError, WalErrorKind};
use crate::wal::Wal;
use raftengine::{LogIndex, PersistBatch, StorageError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A completion: every batch up to and including `seq` is durable, and the log ends at
/// `last_index`. Feed `seq` to `RaftNode::persisted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    /// The highest batch sequence number now durable.
    pub seq: u64,
    /// The log's last index once those batches are durable.
    pub last_index: LogIndex,
    /// How many batches this one sync covered.
    pub batches: usize,
    /// How long the write and `fdatasync` took.
    pub sync_time: Duration,
}

enum WriterRequest {
    Persist(PersistBatch),
    /// The node stopped on a fatal error: record it so a restart refuses.
    MarkBroken(String),
}

/// Owns a [`Wal`] on a writer thread. `submit` never blocks on the disk.
pub struct GroupCommit {
    requests: Option<Sender<WriterRequest>>,
    writer: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// A sync slower than this pauses writes on the caller's thread for [`PAUSE_AFTER_SLOW_SYNC`]:
/// the disk is stalling, and a caller blocked through a stall cannot answer anyone meanwhile.
const SLOW_SYNC: Duration = Duration::from_millis(10);
const PAUSE_AFTER_SLOW_SYNC: Duration = Duration::from_secs(1);

/// The log and when writes on the caller's thread may resume after a slow sync.
struct Log {
    wal: Option<Wal>,
    here_paused_until: Option<Instant>,
}

impl Log {
    fn note_sync(&mut self, took: Duration, now: Instant) {
        if took > SLOW_SYNC {
            self.here_paused_until = Some(now + PAUSE_AFTER_SLOW_SYNC);
        }
    }

    /// Whether a write on the caller's thread is likely to be quick.
    fn quick_here(&self, now: Instant) -> bool {
        let stalling = self.here_paused_until.is_some_and(|until| now < until);
        let busy = self.wal.as_ref().is_none_or(Wal::preparing_segment);
        !stalling && !busy
    }
}

/// What the writer thread and [`GroupCommit::persist_here`] share.
struct Shared {
    /// Taken for each group's writes and sync, so the two writers never interleave.
    log: Mutex<Log>,
    /// Requests submitted whose group has not yet been reported: while any is, a write here would
    /// overtake them.
    queued: AtomicUsize,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock leaves the Wal as it was after its last complete call;
        // the frames it wrote are CRC-checked, so carrying on is as safe as a crash would be.
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl GroupCommit {
    /// Starts the writer. `on_durable` runs on the writer thread after each sync; after an error
    /// it is called once with the error and the writer stops (the log is failed). A failed write
    /// or sync is recorded by the thread it failed on ([`Wal::sync`]) before the error is
    /// reported, so the next open cuts its frame; the error is a [`StorageError::Io`], which
    /// needs no operator (see [`crate::error`]).
    pub fn spawn(
        wal: Wal,
        on_durable: impl FnMut(Result<Durable, StorageError>) + Send + 'static,
    ) -> GroupCommit {
        let (requests, inbox) = mpsc::channel();
        let shared = Arc::new(Shared {
            log: Mutex::new(Log {
                wal: Some(wal),
                here_paused_until: None,
            }),
            queued: AtomicUsize::new(0),
        });
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("raftwal-writer".into())
            .spawn(move || run_writer(&writer_shared, inbox, on_durable));
        match writer {
            Ok(handle) => GroupCommit {
                requests: Some(requests),
                writer: Some(handle),
                shared,
            },
            // No thread, no writer: every submit reports the log as closed.
            Err(_) => GroupCommit {
                requests: None,
                writer: None,
                shared,
            },
        }
    }

    /// Queues a batch. Fails only when the writer has stopped (after a storage error).
    pub fn submit(&self, batch: PersistBatch) -> Result<(), WalError> {
        self.send(WriterRequest::Persist(batch))
    }

    /// Writes and syncs `batch` on the calling thread, if the writer thread has nothing queued
    /// (otherwise the batch would overtake earlier ones) and the disk looks quick: not making a
    /// new segment, no sync slower than 10 ms in the last second. Otherwise returns
    /// `Err(batch)`, for [`GroupCommit::submit`]. The completion is returned instead of passed
    /// to the callback. Blocks for the length of a write and an `fdatasync`.
    #[allow(clippy::result_large_err)] // the batch is handed back, not an error to propagate
    pub fn persist_here(
        &self,
        batch: PersistBatch,
    ) -> Result<Result<Durable, StorageError>, PersistBatch> {
        if self.requests.is_none() || self.shared.queued.load(Ordering::Acquire) != 0 {
            return Err(batch);
        }
        let mut log = self.shared.log();
        if !log.quick_here(Instant::now()) {
            return Err(batch);
        }
        let Some(wal) = log.wal.as_mut() else {
            return Err(batch);
        };
        let started = Instant::now();
        let result = write_batch(wal, &batch).and_then(|()| wal.sync().map_err(StorageError::from));
        let last_index = wal.last_index();
        let sync_time = started.elapsed();
        log.note_sync(sync_time, Instant::now());
        Ok(result.map(|()| Durable {
            seq: batch.seq,
            last_index,
            batches: 1,
            sync_time,
        }))
    }

    /// Marks the log broken (after the queued batches are written), so it refuses to load until
    /// an operator clears it; see [`Wal::mark_broken`] (not after the log's own I/O failure).
    /// If the writer has stopped (after a storage error), the marker is written here, on the
    /// calling thread.
    pub fn mark_broken(&self, reason: &str) -> Result<(), WalError> {
        match self.send(WriterRequest::MarkBroken(reason.to_string())) {
            Ok(()) => Ok(()),
            Err(_) => match self.shared.log().wal.as_mut() {
                Some(wal) => wal.mark_broken(reason),
                None => Err(self.writer_stopped()),
            },
        }
    }

    fn send(&self, request: WriterRequest) -> Result<(), WalError> {
        let tx = self
            .requests
            .as_ref()
            .ok_or_else(|| self.writer_stopped())?;
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        tx.send(request).map_err(|_| {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            self.writer_stopped()
        })
    }

    /// Why the writer stopped: the log's failure, with its kind, if it failed.
    fn writer_stopped(&self) -> WalError {
        let log = self.shared.log();
        match log.wal.as_ref().map(Wal::failure) {
            Some(Err(failure)) => failure,
            _ => stopped("the log writer has stopped"),
        }
    }

    /// Writes and syncs what is queued, stops the writer and returns the log.
    pub fn shutdown(mut self) -> Result<Wal, WalError> {
        self.requests = None;
        let writer = self
            .writer
            .take()
            .ok_or_else(|| stopped("the log writer never started"))?;
        writer
            .join()
            .map_err(|_| stopped("the log writer panicked"))?;
        self.shared
            .log()
            .wal
            .take()
            .ok_or_else(|| stopped("the log was already taken"))
    }
}

/// The writer is gone for a reason other than a failure of the log: like a crash, which the
/// next open recovers from (so an I/O kind, needing no operator).
fn stopped(reason: &str) -> WalError {
    WalError::Failed {
        kind: WalErrorKind::Io,
        reason: reason.into(),
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn run_writer(
    shared: &Shared,
    inbox: Receiver<WriterRequest>,
    mut on_durable: impl FnMut(Result<Durable, StorageError>),
) {
    let mut broken = None;
    while let Ok(first) = inbox.recv() {
        let mut guard = shared.log();
        let Some(wal) = guard.wal.as_mut() else {
            return;
        };
        let started = Instant::now();
        let (mut seq, mut batches, mut taken) = (0, 0, 0);
        let mut result = Ok(());
        let mut next = Some(first);
        // Everything that queued up while the previous sync ran goes into this one.
        while let Some(request) = next.take() {
            taken += 1;
            match request {
                WriterRequest::Persist(batch) => {
                    seq = batch.seq;
                    batches += 1;
                    result = write_batch(wal, &batch);
                }
                WriterRequest::MarkBroken(reason) => broken = Some(reason),
            }
            if result.is_err() {
                break;
            }
            next = inbox.try_recv().ok();
        }
        let result = result.and_then(|()| wal.sync().map_err(StorageError::from));
        let broken_result = broken.take().map(|reason| wal.mark_broken(&reason));
        let last_index = wal.last_index();
        let sync_time = started.elapsed();
        guard.note_sync(sync_time, Instant::now());
        drop(guard);
        if let Some(Err(e)) = broken_result {
            on_durable(Err(e.into()));
        }
        match result {
            Ok(()) if batches == 0 => {}
            Ok(()) => on_durable(Ok(Durable {
                seq,
                last_index,
                batches,
                sync_time,
            })),
            Err(e) => {
                // Hang up first, so no submit succeeds once the error is reported.
                drop(inbox);
                on_durable(Err(e));
                return;
            }
        }
        // Reported: a write on the caller's thread may now follow these.
        shared.queued.fetch_sub(taken, Ordering::AcqRel);
    }
}

fn write_batch(wal: &mut Wal, batch: &PersistBatch) -> Result<(), StorageError> {
    batch
        .writes
        .iter()
        .try_for_each(|write| wal.write(write).map_err(StorageError::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::WalOptions;

    #[test]
    fn writes_here_pause_for_a_second_after_a_slow_sync() {
        let root = tempfile::tempdir().expect("temp dir");
        let mut wal = Wal::open(WalOptions::new(root.path()).segment_bytes(4096)).expect("open");
        let entry = raftengine::Entry {
            term: raftengine::Term(1),
            index: LogIndex(1),
            payload: raftengine::EntryPayload::TermStart,
        };
        wal.write(&raftengine::LogWrite::Append(vec![entry]))
            .expect("write");
        wal.sync().expect("sync");
        // The first sync made the first segment and started making a spare: wait for it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while wal.preparing_segment() {
            assert!(Instant::now() < deadline, "the spare segment is never made");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut log = Log {
            wal: Some(wal),
            here_paused_until: None,
        };
        let t0 = Instant::now();
        assert!(log.quick_here(t0), "a log with a segment and an idle disk");
        log.note_sync(Duration::from_millis(2), t0);
        assert!(log.quick_here(t0), "a quick sync changes nothing");
        log.note_sync(SLOW_SYNC + Duration::from_millis(1), t0);
        assert!(!log.quick_here(t0 + Duration::from_millis(999)));
        assert!(log.quick_here(t0 + PAUSE_AFTER_SLOW_SYNC));
        log.wal = None;
        assert!(
            !log.quick_here(t0 + PAUSE_AFTER_SLOW_SYNC),
            "no log, no write here"
        );
    }
}
