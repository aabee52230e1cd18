//! Snapshot files, written atomically: a temporary file, `fsync`, rename, directory `fsync`. A
//! crash leaves either the old snapshot or the new one, never a half-written file under a
//! snapshot's name.
//!
//! File layout (little endian): magic `RESNAP\0\0`, u8 format version, 3 zero bytes, u32 CRC-32C
//! of everything after it, u64 last included index, u64 its term, u64 membership length, u64 data
//! length, the membership (postcard), data.

use crate::error::WalError;
use crate::segment::{create_dir_durably, sync_dir, write_atomically};
use raftengine::{LogId, LogIndex, Membership, Term};
use std::fs;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RESNAP\0\0";
const VERSION: u8 = 2;
const HEADER_BYTES: usize = 48;
const SUFFIX: &str = ".snap";

/// A snapshot read back from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last log entry the snapshot covers.
    pub last_included: LogId,
    /// The configuration in effect at `last_included`.
    pub membership: Membership,
    /// The state machine's bytes.
    pub data: Vec<u8>,
    /// The file it was read from.
    pub path: PathBuf,
}

/// A directory of snapshot files (`<index>-<term>.snap`), each written to a temporary file,
/// synced and renamed into place, so a crash leaves either the whole snapshot or none.
#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    /// Opens `dir` (creating it, and syncing its parent) and removes temporary files a crash
    /// left behind.
    pub fn open(dir: impl Into<PathBuf>) -> Result<SnapshotStore, WalError> {
        let dir = dir.into();
        create_dir_durably(&dir)?;
        let temporary = list(&dir, ".tmp")?;
        for (path, _) in &temporary {
            fs::remove_file(path).map_err(WalError::io(path))?;
        }
        if !temporary.is_empty() {
            sync_dir(&dir)?;
        }
        Ok(SnapshotStore { dir })
    }

    /// Writes a snapshot durably and atomically, then keeps only the newest `keep` (at least 1).
    pub fn save(
        &self,
        last_included: LogId,
        membership: &Membership,
        data: &[u8],
        keep: usize,
    ) -> Result<PathBuf, WalError> {
        let name = format!(
            "{:016x}-{:016x}",
            last_included.index.0, last_included.term.0
        );
        let temp = self.dir.join(format!("{name}.tmp"));
        let path = self.dir.join(format!("{name}{SUFFIX}"));
        let header = encode_header(last_included, membership, data);
        write_atomically(&path, &temp, &[&header, data])?;
        let mut all = list(&self.dir, SUFFIX)?;
        all.sort_by_key(|(_, id)| *id);
        let excess = all.len().saturating_sub(keep.max(1));
        for (old, _) in all.into_iter().take(excess) {
            fs::remove_file(&old).map_err(WalError::io(&old))?;
        }
        if excess > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(path)
    }

    /// The newest snapshot, checked. A damaged newest snapshot is an error, not a fallback to an
    /// older one: the log behind it may already be purged.
    pub fn latest(&self) -> Result<Option<Snapshot>, WalError> {
        let Some((path, _)) = list(&self.dir, SUFFIX)?
            .into_iter()
            .max_by_key(|(_, id)| *id)
        else {
            return Ok(None);
        };
        let bytes = fs::read(&path).map_err(WalError::io(&path))?;
        decode_snapshot_file(&path, &bytes).map(Some)
    }
}

/// Everything of a snapshot file before its data: magic, version, checksum, ids, lengths and
/// the membership.
fn encode_header(last_included: LogId, membership: &Membership, data: &[u8]) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail (no size limit, no custom serializer).
    let membership = postcard::to_allocvec(membership).expect("membership encodes");
    let mut body = Vec::with_capacity(32 + membership.len());
    body.extend_from_slice(&last_included.index.0.to_le_bytes());
    body.extend_from_slice(&last_included.term.0.to_le_bytes());
    body.extend_from_slice(&(membership.len() as u64).to_le_bytes());
    body.extend_from_slice(&(data.len() as u64).to_le_bytes());
    body.extend_from_slice(&membership);
    let mut crc = crc32c::crc32c(&body);
    crc = crc32c::crc32c_append(crc, data);
    let mut header = Vec::with_capacity(16 + body.len());
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&[VERSION, 0, 0, 0]);
    header.extend_from_slice(&crc.to_le_bytes());
    header.extend_from_slice(&body);
    header
}

/// The bytes of a snapshot file, as [`SnapshotStore::save`] writes them (for tools and the
/// fuzz targets; `save` writes the same bytes without copying `data`).
pub fn encode_snapshot_file(last_included: LogId, membership: &Membership, data: &[u8]) -> Vec<u8> {
    let mut file = encode_header(last_included, membership, data);
    file.extend_from_slice(data);
    file
}

/// Decodes and checks the bytes of a snapshot file (`path` names it in errors): the decoder
/// [`SnapshotStore::latest`] uses, and the one the `snapshot_file` fuzz target drives. Every
/// malformed file is a [`WalError`], never a panic.
pub fn decode_snapshot_file(path: &Path, bytes: &[u8]) -> Result<Snapshot, WalError> {
    let corrupt = |reason: &str| WalError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: reason.to_string(),
    };
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err(corrupt("not a snapshot file (bad magic or too short)"));
    }
    if bytes[8] != VERSION {
        return Err(WalError::UnsupportedVersion {
            path: path.to_path_buf(),
            offset: 8,
            found: bytes[8],
            supported: VERSION,
        });
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let stored_crc = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[16..]) != stored_crc {
        return Err(corrupt("snapshot checksum mismatch"));
    }
    let (membership_len, data_len) = (word(32), word(40));
    let body_len = bytes.len() - HEADER_BYTES;
    if membership_len.checked_add(data_len) != Some(body_len as u64) {
        return Err(corrupt("snapshot length does not match its header"));
    }
    let data_start = HEADER_BYTES + membership_len as usize;
    let membership = postcard::from_bytes(&bytes[HEADER_BYTES..data_start])
        .map_err(|_| corrupt("snapshot membership does not decode"))?;
    Ok(Snapshot {
        last_included: LogId {
            index: LogIndex(word(16)),
            term: Term(word(24)),
        },
        membership,
        data: bytes[data_start..].to_vec(),
        path: path.to_path_buf(),
    })
}

/// A snapshot file and its `(index, term)` id.
type Listed = (PathBuf, (u64, u64));

/// Files in `dir` ending with `suffix` whose names are `<index>-<term>`, with their ids.
fn list(dir: &Path, suffix: &str) -> Result<Vec<Listed>, WalError> {
    let mut found = Vec::new();
    for item in fs::read_dir(dir).map_err(WalError::io(dir))? {
        let item = item.map_err(WalError::io(dir))?;
        let name = item.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(suffix)) else {
            continue;
        };
        let Some((index, term)) = stem.split_once('-') else {
            continue;
        };
        if let (Ok(index), Ok(term)) = (
            u64::from_str_radix(index, 16),
            u64::from_str_radix(term, 16),
        ) {
            found.push((item.path(), (index, term)));
        }
    }
    Ok(found)
}
