//! Segment files: naming, preallocation and positioned I/O.
//!
//! A segment is named `<seq>-<first index>.wal` (both 16 hex digits): `seq` orders segments,
//! `first index` is the index the log expected next when the segment was opened. Segments are
//! filled with zeros before use, so appending a frame overwrites allocated blocks and an
//! `fdatasync` has no file-size or block-allocation metadata to write.

use crate::error::WalError;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

pub const SEGMENT_SUFFIX: &str = ".wal";
pub const SPARE_NAME: &str = "spare.tmp";

#[derive(Debug)]
pub struct Segment {
    pub seq: u64,
    pub first_index: u64,
    pub path: PathBuf,
    pub file: File,
    /// Size of the file (its preallocated capacity).
    pub capacity: u64,
    /// Whether the segment holds a frame (a segment is created right before its first frame).
    pub has_frames: bool,
}

pub fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}{SEGMENT_SUFFIX}")
}

/// `(seq, first index)` of a segment file name, `None` for any other file.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    let (seq, first) = stem.split_once('-')?;
    if seq.len() != 16 || first.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(seq, 16).ok()?,
        u64::from_str_radix(first, 16).ok()?,
    ))
}

impl Segment {
    pub fn open(dir: &Path, seq: u64, first_index: u64) -> Result<Segment, WalError> {
        let path = dir.join(segment_name(seq, first_index));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(WalError::io(&path))?;
        let capacity = file.metadata().map_err(WalError::io(&path))?.len();
        Ok(Segment {
            seq,
            first_index,
            path,
            file,
            capacity,
            has_frames: false,
        })
    }

    pub fn read_all(&self) -> Result<Vec<u8>, WalError> {
        let mut data = vec![0; self.capacity as usize];
        self.file
            .read_exact_at(&mut data, 0)
            .map_err(WalError::io(&self.path))?;
        Ok(data)
    }

    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, WalError> {
        let mut data = vec![0; len];
        self.file
            .read_exact_at(&mut data, offset)
            .map_err(WalError::io(&self.path))?;
        Ok(data)
    }

    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), WalError> {
        self.file
            .write_all_at(data, offset)
            .map_err(WalError::io(&self.path))
    }

    pub fn sync_data(&self) -> Result<(), WalError> {
        self.file.sync_data().map_err(WalError::io(&self.path))
    }
}

/// How a new segment gets its space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Write zeros: later appends overwrite allocated blocks, so an `fdatasync` writes no
    /// metadata. Costs a second write of every byte, which only pays off for small syncs.
    Zeros,
    /// `fallocate`: blocks are reserved but marked unwritten, so each sync also journals the
    /// conversion of what it wrote. Cheap per byte, so better for large syncs.
    Reserve,
}

impl Allocation {
    /// Syncs this large (on average) amortize the per-sync extent conversion better than a
    /// second write of every byte.
    pub const RESERVE_FROM_FRAME_BYTES: u64 = 256 << 10;

    pub fn for_average_frame(bytes: u64) -> Allocation {
        if bytes >= Allocation::RESERVE_FROM_FRAME_BYTES {
            Allocation::Reserve
        } else {
            Allocation::Zeros
        }
    }
}

/// Makes `path` a durable file of `size` bytes that read as zeros.
pub fn create_segment_file(path: &Path, size: u64, allocation: Allocation) -> Result<(), WalError> {
    if allocation == Allocation::Reserve {
        let file = File::create(path).map_err(WalError::io(path))?;
        match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size) {
            Ok(()) => return file.sync_all().map_err(WalError::io(path)),
            // A filesystem without fallocate: fall back to zeros.
            Err(rustix::io::Errno::OPNOTSUPP) => {}
            Err(e) => return Err(WalError::io(path)(e.into())),
        }
    }
    let mut file = File::create(path).map_err(WalError::io(path))?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).map_err(WalError::io(path))?;
        left -= n as u64;
    }
    file.sync_all().map_err(WalError::io(path))
}

/// Replaces `path` with `parts` (concatenated) so that a crash leaves the old file or the new
/// one, never a mix: a temporary file beside it, `fsync`, rename, directory `fsync`.
pub fn write_atomically(path: &Path, temp: &Path, parts: &[&[u8]]) -> Result<(), WalError> {
    let write = || -> std::io::Result<()> {
        let mut file = File::create(temp)?;
        for part in parts {
            file.write_all(part)?;
        }
        file.sync_all()?;
        fs::rename(temp, path)
    };
    write().map_err(WalError::io(path))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Makes a rename or removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(WalError::io(dir))
}

/// Keeps one spare segment ready, made on a background thread, so rolling to a new segment costs
/// a rename instead of allocating a whole segment on the append path.
#[derive(Debug)]
pub struct Preallocator {
    spare: PathBuf,
    size: u64,
    in_progress: Option<JoinHandle<Result<(), WalError>>>,
}

impl Preallocator {
    pub fn new(dir: &Path, size: u64) -> Result<Preallocator, WalError> {
        let spare = dir.join(SPARE_NAME);
        // A spare of the wrong size was cut short by a crash (or made for another segment size):
        // start over. One of the right size reads as zeros even if a crash lost some of its
        // blocks (they come back as holes), so it is kept.
        match fs::metadata(&spare) {
            Ok(meta) if meta.len() == size => {}
            Ok(_) => fs::remove_file(&spare).map_err(WalError::io(&spare))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(WalError::io(&spare)(e)),
        }
        Ok(Preallocator {
            spare,
            size,
            in_progress: None,
        })
    }

    /// Starts making the next spare unless one exists or is on its way.
    pub fn prepare(&mut self, allocation: Allocation) {
        if self.in_progress.is_none() && !self.spare.exists() {
            let (path, size) = (self.spare.clone(), self.size);
            self.in_progress = Some(std::thread::spawn(move || {
                create_segment_file(&path, size, allocation)
            }));
        }
    }

    /// Renames the spare (waiting for it if needed) to `target`, durably, and starts the next one.
    pub fn install(&mut self, target: &Path, next: Allocation) -> Result<(), WalError> {
        if !self.spare.exists() {
            self.prepare(next);
        }
        let made = self
            .in_progress
            .take()
            .map(|handle| {
                handle.join().unwrap_or_else(|_| {
                    Err(WalError::Failed("preallocation thread panicked".into()))
                })
            })
            .unwrap_or(Ok(()));
        made?;
        fs::rename(&self.spare, target).map_err(WalError::io(target))?;
        if let Some(dir) = target.parent() {
            sync_dir(dir)?;
        }
        self.prepare(next);
        Ok(())
    }

    /// A spare is being made: the disk is busy with a whole segment's worth of writes.
    pub fn busy(&self) -> bool {
        self.in_progress
            .as_ref()
            .is_some_and(|handle| !handle.is_finished())
    }

    /// Waits for a spare being made, so no thread outlives the log.
    pub fn finish(&mut self) {
        if let Some(handle) = self.in_progress.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Preallocator {
    fn drop(&mut self) {
        self.finish();
    }
}
