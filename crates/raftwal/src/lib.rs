//! raftwal: the durable log for raftengine.
//!
//! [`Wal`] implements the core's [`raftengine::LogStorage`] on preallocated segment files of
//! CRC-checked frames, each bound to its position ([`mod@format`]); [`GroupCommit`] runs it on a
//! thread that makes many batches durable with one `fdatasync`; [`SnapshotStore`] keeps snapshot
//! files written atomically. A data directory holds:
//!
//! ```text
//! <dir>/LOCK         held while a process has the log open
//! <dir>/BROKEN       present when the node stopped on a fatal error (reason inside); cleared by
//!                    the operator with `raftwal clear-broken --data-dir <dir>` (bin raftwal)
//! <dir>/FAILURE      4 KiB, zeros, or the position of a write or sync that failed (see failure)
//! <dir>/wal/<seq>-<first index>.wal   segments;  <dir>/wal/START  where the log begins
//! <dir>/wal/spare.tmp                 the next segment, preallocated
//! <dir>/snapshots/<index>-<term>.snap
//! ```
//!
//! What happens on each kind of failure:
//! - **A write or sync fails** (ENOSPC, EIO, a read-only filesystem): the failing thread
//!   records where its frame lies in `FAILURE` and the log takes no more writes
//!   ([`WalError::Failed`], kind [`WalErrorKind::Io`]). The next [`Wal::open`] cuts that frame,
//!   reports it ([`RecoveryReport::failed_write`]) and carries on: no operator needed once the
//!   disk is back. [`Wal::mark_broken`] declines after such a failure.
//! - **A crash**: the next open cuts the torn unsynced frame and reports it
//!   ([`RecoveryReport::cuts`]).
//! - **Synced data lost** (the newest segment cut short or its last frame damaged): the next
//!   open cuts, logs an error and reports [`RecoveryReport::lost_synced_data`].
//! - **Damage anywhere else**: the open refuses with [`WalError::Corrupt`] naming file and offset.
//!
//! See [`recovery`] for the rules and [`error`]'s table for what each error kind needs.

#![deny(missing_docs)]

mod broken;
pub mod error;
pub mod failure;
pub mod format;
mod group_commit;
mod log_map;
pub mod recovery;
mod segment;
mod snapshot;
mod wal;

pub use broken::{clear_broken, clear_broken_report};
pub use error::{clear_broken_command, WalError, WalErrorKind};
pub use format::{FORMAT_VERSION, MAX_FRAME_BODY_BYTES, MAX_SEGMENT_BYTES};
pub use group_commit::{Durable, GroupCommit};
pub use recovery::{Cut, CutCause, FailedWrite, LossReason, RecoveryReport, SyncedDataLoss};
pub use snapshot::{decode_snapshot_file, encode_snapshot_file, Snapshot, SnapshotStore};
pub use wal::{Wal, WalOptions};
