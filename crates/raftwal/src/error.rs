//! Typed errors of the durable log, what kind of failure each is, and how they map onto the
//! core's [`StorageError`].
//!
//! A driver reporting a storage failure should say *storage failed* and use
//! [`WalError::kind`] (or the [`StorageError`] variant it maps to) to say what happened:
//!
//! | kind | what happened | what the node needs |
//! |---|---|---|
//! | [`WalErrorKind::Io`] | the disk or filesystem failed a call (ENOSPC, EIO, EROFS...) | nothing: after a failed write or sync the log recorded where; the next open cuts that frame, reports it and carries on (space must be back first) |
//! | [`WalErrorKind::Corrupt`] | data that was durable does not read back, or has an unknown format | an operator: the node refuses to start on it |
//! | [`WalErrorKind::Broken`] | the node stopped on a fatal error earlier and marked its storage | an operator, who clears the marker with `raftwal clear-broken --data-dir DIR` |
//! | [`WalErrorKind::Locked`] | another process has the data directory open | that process to stop |
//! | [`WalErrorKind::Refused`] | a write that does not fit the log (a bug in the caller) | a fix; the node stops |
//! | [`WalErrorKind::Options`] | invalid options | a configuration change |

use raftengine::StorageError;
use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// The command an operator runs to clear a broken marker, for messages.
pub fn clear_broken_command(dir: &std::path::Path) -> String {
    format!("raftwal clear-broken --data-dir {}", dir.display())
}

/// A failure of the durable log; [`WalError::kind`] sorts it into what it needs.
#[derive(Debug, Error)]
pub enum WalError {
    /// A system call failed on `path`: an I/O error, not damaged data.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The system call's error.
        #[source]
        source: io::Error,
    },
    /// Another process holds the data directory's `LOCK`.
    #[error("data directory {dir} is in use by another process (lock file {dir}/LOCK is held)")]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
    /// Data that was made durable no longer reads back: the log refuses to start rather than
    /// drop it. An operator must restore the node (for example wipe it and let it catch up).
    #[error(
        "corrupt log: {path} at byte offset {offset}: {reason} (the node will not start on \
         damaged durable data: move the data directory aside and let the node catch up from \
         the cluster)"
    )]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where in it, in bytes.
        offset: u64,
        /// What is wrong (bad checksum, bad length, ...).
        reason: String,
    },
    /// A file written in a format this build does not read.
    #[error(
        "{path} at byte offset {offset} has format version {found}; this build reads version \
         {supported} (run the build that wrote it, or move the data directory aside and let \
         the node catch up from the cluster)"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Where the version was read, in bytes.
        offset: u64,
        /// The version found.
        found: u8,
        /// The version this build reads ([`FORMAT_VERSION`](crate::FORMAT_VERSION)).
        supported: u8,
    },
    /// A write that does not fit the log (a gap, a truncation into the purged prefix).
    #[error("write refused: {0}")]
    Refused(String),
    /// The node stopped on a fatal error earlier and recorded it in `marker`; the log refuses
    /// to load until an operator has checked the data and cleared the marker.
    #[error(
        "storage is marked broken: {reason} (marker {marker}; after checking the data, clear it \
         with `{command}`)",
        command = clear_broken_command(marker.parent().unwrap_or(marker))
    )]
    Broken {
        /// The `BROKEN` file.
        marker: PathBuf,
        /// The reason recorded in it.
        reason: String,
    },
    /// An earlier write or sync failed. After a failed fsync the page cache can no longer be
    /// trusted, so the log stops accepting writes instead of retrying (the "fsyncgate" lesson).
    /// `kind` is the kind of the first failure.
    #[error("the log failed earlier and accepts no more writes: {reason}")]
    Failed {
        /// The kind of the first failure.
        kind: WalErrorKind,
        /// The first failure's text.
        reason: String,
    },
    /// [`WalOptions`](crate::WalOptions) that cannot work (e.g. a segment too small for a frame).
    #[error("invalid options: {0}")]
    Options(String),
}

/// What kind of failure a [`WalError`] is (see the module docs for what each needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalErrorKind {
    /// The disk or filesystem failed a call; the next open recovers.
    Io,
    /// Durable data does not read back (or has an unknown format); needs an operator.
    Corrupt,
    /// The storage is marked broken; an operator clears the marker.
    Broken,
    /// Another process has the data directory open.
    Locked,
    /// A write that does not fit the log: a bug in the caller.
    Refused,
    /// Invalid options.
    Options,
}

impl WalError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> WalError {
        let path = path.into();
        move |source| WalError::Io { path, source }
    }

    /// What kind of failure this is (see the module's table).
    pub fn kind(&self) -> WalErrorKind {
        match self {
            WalError::Io { .. } => WalErrorKind::Io,
            WalError::Locked { .. } => WalErrorKind::Locked,
            WalError::Corrupt { .. } | WalError::UnsupportedVersion { .. } => WalErrorKind::Corrupt,
            WalError::Refused(_) => WalErrorKind::Refused,
            WalError::Broken { .. } => WalErrorKind::Broken,
            WalError::Failed { kind, .. } => *kind,
            WalError::Options(_) => WalErrorKind::Options,
        }
    }
}

impl From<WalError> for StorageError {
    /// I/O failures (and a lock or options problem) become [`StorageError::Io`], damaged data
    /// and refused writes [`StorageError::Corrupt`], the marker [`StorageError::Broken`]; the
    /// message is the full [`WalError`] text.
    fn from(e: WalError) -> StorageError {
        match e.kind() {
            WalErrorKind::Corrupt | WalErrorKind::Refused => StorageError::Corrupt(e.to_string()),
            WalErrorKind::Broken => match e {
                // StorageError::Broken says "marked broken" itself.
                WalError::Broken { marker, reason } => StorageError::Broken(format!(
                    "{reason} (marker {}; after checking the data, clear it with `{}`)",
                    marker.display(),
                    clear_broken_command(marker.parent().unwrap_or(&marker))
                )),
                other => StorageError::Broken(other.to_string()),
            },
            WalErrorKind::Io | WalErrorKind::Locked | WalErrorKind::Options => {
                StorageError::Io(e.to_string())
            }
        }
    }
}
