//! Group commit on a thread: batches submitted while a sync is running are written together and
//! made durable by the next single `fdatasync`.

use crate::error::WalError;
use crate::wal::Wal;
use raftengine::{LogIndex, PersistBatch, StorageError};
use std::sync::mpsc::{self, Receiver, Sender};
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
    writer: Option<JoinHandle<Wal>>,
}

impl GroupCommit {
    /// Starts the writer. `on_durable` runs on the writer thread after each sync; after an error
    /// it is called once with the error and the writer stops (the log is failed).
    pub fn spawn(
        wal: Wal,
        on_durable: impl FnMut(Result<Durable, StorageError>) + Send + 'static,
    ) -> GroupCommit {
        let (requests, inbox) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("raftwal-writer".into())
            .spawn(move || run_writer(wal, inbox, on_durable));
        match writer {
            Ok(handle) => GroupCommit {
                requests: Some(requests),
                writer: Some(handle),
            },
            // No thread, no writer: every submit reports the log as closed.
            Err(_) => GroupCommit {
                requests: None,
                writer: None,
            },
        }
    }

    /// Queues a batch. Fails only when the writer has stopped (after a storage error).
    pub fn submit(&self, batch: PersistBatch) -> Result<(), WalError> {
        self.send(WriterRequest::Persist(batch))
    }

    /// Marks the log broken (after the queued batches are written), so it refuses to load until
    /// an operator clears it.
    pub fn mark_broken(&self, reason: &str) -> Result<(), WalError> {
        self.send(WriterRequest::MarkBroken(reason.to_string()))
    }

    fn send(&self, request: WriterRequest) -> Result<(), WalError> {
        self.requests
            .as_ref()
            .and_then(|tx| tx.send(request).ok())
            .ok_or_else(|| WalError::Failed("the log writer has stopped".into()))
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
            .map_err(|_| WalError::Failed("the log writer panicked".into()))
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
    mut wal: Wal,
    inbox: Receiver<WriterRequest>,
    mut on_durable: impl FnMut(Result<Durable, StorageError>),
) -> Wal {
    let mut broken = None;
    while let Ok(first) = inbox.recv() {
        let started = Instant::now();
        let (mut seq, mut batches) = (0, 0);
        let mut result = Ok(());
        let mut next = Some(first);
        // Everything that queued up while the previous sync ran goes into this one.
        while let Some(request) = next.take() {
            match request {
                WriterRequest::Persist(batch) => {
                    seq = batch.seq;
                    batches += 1;
                    result = write_batch(&mut wal, &batch);
                }
                WriterRequest::MarkBroken(reason) => broken = Some(reason),
            }
            if result.is_err() {
                break;
            }
            next = inbox.try_recv().ok();
        }
        let result = result.and_then(|()| wal.sync().map_err(StorageError::from));
        if let Some(reason) = broken.take() {
            if let Err(e) = wal.mark_broken(&reason) {
                on_durable(Err(e.into()));
            }
        }
        match result {
            Ok(()) if batches == 0 => {}
            Ok(()) => on_durable(Ok(Durable {
                seq,
                last_index: wal.last_index(),
                batches,
                sync_time: started.elapsed(),
            })),
            Err(e) => {
                // Hang up first, so no submit succeeds once the error is reported.
                drop(inbox);
                on_durable(Err(e));
                return wal;
            }
        }
    }
    wal
}

fn write_batch(wal: &mut Wal, batch: &PersistBatch) -> Result<(), StorageError> {
    batch
        .writes
        .iter()
        .try_for_each(|write| wal.write(write).map_err(StorageError::from))
}
