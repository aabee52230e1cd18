//! Typed errors of the durable log, and how they map onto the core's [`StorageError`].

use raftengine::StorageError;
use std::io;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum WalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("data directory {dir} is in use by another process (lock file {dir}/LOCK is held)")]
    Locked { dir: PathBuf },
    /// Data that was made durable no longer reads back: the log refuses to start rather than
    /// drop it. An operator must restore the node (for example wipe it and let it catch up).
    #[error("corrupt log: {path} at byte offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{path} at byte offset {offset} has format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        path: PathBuf,
        offset: u64,
        found: u8,
        supported: u8,
    },
    /// A write that does not fit the log (a gap, a truncation into the purged prefix).
    #[error("write refused: {0}")]
    Refused(String),
    #[error("storage is marked broken: {0}")]
    Broken(String),
    /// An earlier write or sync failed. After a failed fsync the page cache can no longer be
    /// trusted, so the log stops accepting writes instead of retrying (the "fsyncgate" lesson).
    #[error("the log failed earlier and accepts no more writes: {0}")]
    Failed(String),
    #[error("invalid options: {0}")]
    Options(String),
}

impl WalError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> WalError {
        let path = path.into();
        move |source| WalError::Io { path, source }
    }
}

impl From<WalError> for StorageError {
    fn from(e: WalError) -> StorageError {
        match e {
            WalError::Corrupt { .. }
            | WalError::UnsupportedVersion { .. }
            | WalError::Refused(_) => StorageError::Corrupt(e.to_string()),
            WalError::Broken(reason) => StorageError::Broken(reason),
            _ => StorageError::Io(e.to_string()),
        }
    }
}
