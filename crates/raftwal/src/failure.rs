//! The failure record: where the frame of a write or sync that failed lies, so that the next
//! open does not trust it.
//!
//! After a failed `fdatasync` the frame's bytes may still be in the page cache, marked clean,
//! and read back intact by a restarted process although they never reached the disk (the
//! "fsyncgate" lesson). The thread whose write or sync failed writes this record at once; the
//! next [`crate::Wal::open`] cuts the log at that frame, reports the cut, and clears the record.
//! No operator is needed.
//!
//! The record lives in `<dir>/FAILURE`, a file of [`SLOT_BYTES`] zeros made when the log is
//! first opened; recording overwrites its first sector in place, so it needs no new space on a
//! full disk. Layout of the record (little endian, within one 512-byte sector, so a crash leaves
//! it whole or absent):
//!
//! ```text
//! 0   [u8; 8]  magic "RWFAIL\0\0"
//! 8   u64      segment seq of the failed frame
//! 16  u64      its offset in that segment
//! 24  u64      the log's last index that was durable before it
//! 32  u64      the last index the failed frame would have made durable
//! 40  u16      reason length (at most 464)
//! 42  [u8; 2]  zero
//! 44  u32      CRC-32C of bytes 0..44 and the reason
//! 48  reason (UTF-8)
//! ```
//!
//! Public as the reference for the on-disk layout, and for tests and tools that build, inspect
//! or damage data directories; an application needs only [`Wal`](crate::Wal).

use crate::error::WalError;
use crate::format::SECTOR_BYTES;
use crate::segment::sync_dir;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The record's file name in the data directory.
pub const FAILURE_FILE: &str = "FAILURE";
/// Size of the preallocated file.
pub const SLOT_BYTES: usize = 4096;
const MAGIC: &[u8; 8] = b"RWFAIL\0\0";
const FIXED_BYTES: usize = 48;
const MAX_REASON_BYTES: usize = SECTOR_BYTES - FIXED_BYTES;

/// A write or sync that failed: everything from `offset` of segment `seq` on is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailureRecord {
    pub seq: u64,
    pub offset: u64,
    pub durable_index: u64,
    pub unsynced_index: u64,
    pub reason: String,
}

impl FailureRecord {
    fn encode(&self) -> [u8; SECTOR_BYTES] {
        let mut reason = self.reason.as_bytes();
        if reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !self.reason.is_char_boundary(end) {
                end -= 1;
            }
            reason = &reason[..end];
        }
        let mut bytes = [0u8; SECTOR_BYTES];
        bytes[0..8].copy_from_slice(MAGIC);
        for (at, word) in [
            (8, self.seq),
            (16, self.offset),
            (24, self.durable_index),
            (32, self.unsynced_index),
        ] {
            bytes[at..at + 8].copy_from_slice(&word.to_le_bytes());
        }
        // MAX_REASON_BYTES < u16::MAX: the length fits.
        bytes[40..42].copy_from_slice(&(reason.len() as u16).to_le_bytes());
        bytes[FIXED_BYTES..FIXED_BYTES + reason.len()].copy_from_slice(reason);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[..44]), reason);
        bytes[44..48].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<FailureRecord, String> {
        if bytes.len() < FIXED_BYTES || &bytes[0..8] != MAGIC {
            return Err("not a failure record (bad magic)".into());
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let len = u16::from_le_bytes([bytes[40], bytes[41]]) as usize;
        let reason = bytes
            .get(FIXED_BYTES..FIXED_BYTES + len)
            .filter(|_| len <= MAX_REASON_BYTES)
            .ok_or("failure record reason length out of range")?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[..44]), reason);
        if crc.to_le_bytes() != bytes[44..48] {
            return Err("failure record checksum mismatch".into());
        }
        Ok(FailureRecord {
            seq: word(8),
            offset: word(16),
            durable_index: word(24),
            unsynced_index: word(32),
            reason: String::from_utf8_lossy(reason).into_owned(),
        })
    }
}

/// The open `FAILURE` file.
#[derive(Debug)]
pub(crate) struct FailureSlot {
    path: PathBuf,
    file: File,
}

impl FailureSlot {
    /// Opens `<dir>/FAILURE`, making it (zeros, synced, renamed into place) if it is missing.
    pub fn open(dir: &Path) -> Result<FailureSlot, WalError> {
        let path = dir.join(FAILURE_FILE);
        if !path.exists() {
            let temp = dir.join("FAILURE.tmp");
            let make = || -> std::io::Result<()> {
                let file = File::create(&temp)?;
                file.write_all_at(&[0u8; SLOT_BYTES], 0)?;
                file.sync_all()?;
                fs::rename(&temp, &path)
            };
            make().map_err(WalError::io(&path))?;
            sync_dir(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(WalError::io(&path))?;
        Ok(FailureSlot { path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record, if a failure was recorded and not yet cleared. A damaged record is an error:
    /// a failure happened, but where is unknown.
    pub fn read(&self) -> Result<Option<FailureRecord>, WalError> {
        let mut bytes = [0u8; SECTOR_BYTES];
        let len = self
            .file
            .metadata()
            .map_err(WalError::io(&self.path))?
            .len();
        let n = (len as usize).min(SECTOR_BYTES);
        self.file
            .read_exact_at(&mut bytes[..n], 0)
            .map_err(WalError::io(&self.path))?;
        if bytes.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        FailureRecord::decode(&bytes)
            .map(Some)
            .map_err(|reason| WalError::Corrupt {
                path: self.path.clone(),
                offset: 0,
                reason: format!("{reason}: a write or sync failed earlier, but where is unknown"),
            })
    }

    /// Records a failure durably (overwriting the file's first sector; no new space needed).
    pub fn record(&self, record: &FailureRecord) -> std::io::Result<()> {
        self.file.write_all_at(&record.encode(), 0)?;
        self.file.sync_data()
    }

    /// Clears the record durably.
    pub fn clear(&self) -> Result<(), WalError> {
        self.file
            .write_all_at(&[0u8; SECTOR_BYTES], 0)
            .and_then(|()| self.file.sync_data())
            .map_err(WalError::io(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let root = tempfile::tempdir().expect("temp dir");
        let slot = FailureSlot::open(root.path()).expect("make");
        assert_eq!(slot.read().expect("read"), None);
        let record = FailureRecord {
            seq: 3,
            offset: 4160,
            durable_index: 40,
            unsynced_index: 45,
            reason: "é".repeat(400),
        };
        slot.record(&record).expect("record");
        let read = FailureSlot::open(root.path())
            .expect("reopen")
            .read()
            .expect("read")
            .expect("a record");
        assert_eq!(read.offset, 4160);
        assert!(read.reason.len() <= MAX_REASON_BYTES && read.reason.starts_with("éé"));
        slot.file.write_all_at(&[0xFF], 20).expect("damage");
        assert!(matches!(slot.read(), Err(WalError::Corrupt { .. })));
        slot.clear().expect("clear");
        assert_eq!(slot.read().expect("read"), None);
        assert_eq!(
            fs::metadata(root.path().join(FAILURE_FILE))
                .expect("stat")
                .len(),
            SLOT_BYTES as u64
        );
    }
}
