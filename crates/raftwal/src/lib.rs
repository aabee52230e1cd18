//! raftwal: the durable log for raftengine.
//!
//! [`Wal`] implements the core's [`raftengine::LogStorage`] on preallocated segment files of
//! CRC-checked frames; [`GroupCommit`] runs it on a thread that makes many batches durable with
//! one `fdatasync`; [`SnapshotStore`] keeps snapshot files written atomically. A data directory
//! holds:
//!
//! ```text
//! <dir>/LOCK         held while a process has the log open
//! <dir>/BROKEN       present when the node stopped on a fatal error (reason inside)
//! <dir>/wal/<seq>-<first index>.wal   segments;  <dir>/wal/spare.tmp  the next, preallocated
//! <dir>/snapshots/<index>-<term>.snap
//! ```

mod error;
mod format;
mod group_commit;
mod segment;
mod snapshot;
mod wal;

pub use error::WalError;
pub use format::FORMAT_VERSION;
pub use group_commit::{Durable, GroupCommit};
pub use snapshot::{Snapshot, SnapshotStore};
pub use wal::{RecoveryReport, TornTail, Wal, WalOptions};
