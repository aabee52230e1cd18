//! Group commit on a thread: batches submitted while a sync is running are written together and
//! made durable by the next single `fdatasync`. A caller with nothing else to do until its write
//! is durable (a Raft follower) may instead write on its own thread when the writer is idle
//! ([`GroupCommit::persist_here`]): that saves two thread wake-ups per write, which on a small
//! virtual machine cost more than the write itself.

use crate::error::WalError;
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
    pub seq: u64,
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

/// What the writer thread and [`GroupCommit::persist_here`] share.
struct Shared {
    /// Taken for each group's writes and sync, so the two writers never interleave.
    wal: Mutex<Option<Wal>>,
    /// Requests submitted whose group has not yet been reported: while any is, a write here would
    /// overtake them.
    queued: AtomicUsize,
}

impl Shared {
    fn wal(&self) -> MutexGuard<'_, Option<Wal>> {
        // A panic while holding the lock leaves the Wal as it was after its last complete call;
        // the frames it wrote are CRC-checked, so carrying on is as safe as a crash would be.
        self.wal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl GroupCommit {
    /// Starts the writer. `on_durable` runs on the writer thread after each sync; after an error
    /// it is called once with the error and the writer stops (the log is failed).
    pub fn spawn(
        wal: Wal,
        on_durable: impl FnMut(Result<Durable, StorageError>) + Send + 'static,
    ) -> GroupCommit {
        let (requests, inbox) = mpsc::channel();
        let shared = Arc::new(Shared {
            wal: Mutex::new(Some(wal)),
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
    /// (otherwise the batch would overtake earlier ones): returns `Err(batch)` then, for
    /// [`GroupCommit::submit`]. The completion is returned instead of passed to the callback.
    /// Blocks for the length of a write and an `fdatasync`.
    #[allow(clippy::result_large_err)] // the batch is handed back, not an error to propagate
    pub fn persist_here(
        &self,
        batch: PersistBatch,
    ) -> Result<Result<Durable, StorageError>, PersistBatch> {
        if self.requests.is_none() || self.shared.queued.load(Ordering::Acquire) != 0 {
            return Err(batch);
        }
        let mut wal = self.shared.wal();
        let Some(wal) = wal.as_mut() else {
            return Err(batch);
        };
        let started = Instant::now();
        let result = write_batch(wal, &batch).and_then(|()| wal.sync().map_err(StorageError::from));
        Ok(result.map(|()| Durable {
            seq: batch.seq,
            last_index: wal.last_index(),
            batches: 1,
            sync_time: started.elapsed(),
        }))
    }

    /// Marks the log broken (after the queued batches are written), so it refuses to load until
    /// an operator clears it.
    pub fn mark_broken(&self, reason: &str) -> Result<(), WalError> {
        self.send(WriterRequest::MarkBroken(reason.to_string()))
    }

    fn send(&self, request: WriterRequest) -> Result<(), WalError> {
        let tx = self.requests.as_ref().ok_or_else(writer_stopped)?;
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        tx.send(request).map_err(|_| {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            writer_stopped()
        })
    }

    /// Writes and syncs what is queued, stops the writer and returns the log.
    pub fn shutdown(mut self) -> Result<Wal, WalError> {
        self.requests = None;
        let writer = self
            .writer
            .take()
            .ok_or_else(|| WalError::Failed("the log writer never started".into()))?;
        writer
            .join()
            .map_err(|_| WalError::Failed("the log writer panicked".into()))?;
        self.shared
            .wal()
            .take()
            .ok_or_else(|| WalError::Failed("the log was already taken".into()))
    }
}

fn writer_stopped() -> WalError {
    WalError::Failed("the log writer has stopped".into())
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
        let mut guard = shared.wal();
        let Some(wal) = guard.as_mut() else { return };
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
                sync_time: started.elapsed(),
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
