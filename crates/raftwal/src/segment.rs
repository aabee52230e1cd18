//! Segment files: naming, preallocation and positioned I/O.
//!
//! A segment is named `<seq>-<first index>.wal` (both 16 hex digits): `seq` orders segments,
//! `first index` is the index the log expected next when the segment was opened. Segments are
//! made whole before they get that name: a header recording their capacity and salt (see
//! [`crate::format`]), then zeros, synced; so appending a frame overwrites allocated blocks,
//! an `fdatasync` has no file-size or block-allocation metadata to write, and a segment file
//! shorter than its recorded capacity is one that lost its end.

use crate::error::{WalError, WalErrorKind};
use crate::format::{HeaderAt, Position, SegmentHeader, SEGMENT_HEADER_BYTES};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

pub const SEGMENT_SUFFIX: &str = ".wal";
pub const SPARE_NAME: &str = "spare.tmp";
/// Where a segment for an oversized frame is made before it is renamed into place.
pub const LARGE_NAME: &str = "large.tmp";

#[derive(Debug)]
pub struct Segment {
    pub seq: u64,
    pub first_index: u64,
    pub path: PathBuf,
    pub file: File,
    /// The size the segment was made with (from its header).
    pub capacity: u64,
    pub salt: u64,
    /// Whether the segment holds a frame (a segment is created right before its first frame).
    pub has_frames: bool,
}

/// A segment file whose header does not check out, as recovery found it.
#[derive(Debug)]
pub struct BadHeader {
    pub path: PathBuf,
    /// The file's size.
    pub len: u64,
    /// Why: a file shorter than a header, or a damaged header.
    pub reason: String,
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
    /// Opens a segment and checks its header. `Ok(Err(..))`: the header is missing or damaged
    /// (recovery decides what that means); a version-1 file is an error.
    pub fn open(
        dir: &Path,
        seq: u64,
        first_index: u64,
    ) -> Result<Result<Segment, BadHeader>, WalError> {
        let path = dir.join(segment_name(seq, first_index));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(WalError::io(&path))?;
        let len = file.metadata().map_err(WalError::io(&path))?.len();
        let mut bytes = vec![0u8; (len as usize).min(4096)];
        file.read_exact_at(&mut bytes, 0)
            .map_err(WalError::io(&path))?;
        let header = match SegmentHeader::decode(&bytes) {
            HeaderAt::Valid(header) => header,
            HeaderAt::Version1 => {
                return Err(WalError::UnsupportedVersion {
                    path,
                    offset: 8,
                    found: 1,
                    supported: crate::format::FORMAT_VERSION,
                })
            }
            HeaderAt::Short => {
                let reason = format!("{len} bytes, shorter than a segment header");
                return Ok(Err(BadHeader { path, len, reason }));
            }
            HeaderAt::Damaged(reason) => return Ok(Err(BadHeader { path, len, reason })),
        };
        Ok(Ok(Segment {
            seq,
            first_index,
            path,
            file,
            capacity: header.capacity,
            salt: header.salt,
            has_frames: false,
        }))
    }

    /// Where a frame at `offset` of this segment is bound to.
    pub fn position(&self, offset: u64) -> Position {
        Position {
            salt: self.salt,
            seq: self.seq,
            offset,
        }
    }

    /// The file's size now (the capacity, unless something cut it short).
    pub fn len(&self) -> Result<u64, WalError> {
        Ok(self
            .file
            .metadata()
            .map_err(WalError::io(&self.path))?
            .len())
    }

    /// Gives a file that was cut short its capacity back (the end reads as zeros), durably.
    pub fn restore_capacity(&self) -> Result<(), WalError> {
        self.file
            .set_len(self.capacity)
            .and_then(|()| self.file.sync_all())
            .map_err(WalError::io(&self.path))
    }

    /// The whole file as it is (its length may differ from the capacity).
    pub fn read_all(&self) -> Result<Vec<u8>, WalError> {
        let mut data = zeroed(self.len()?).map_err(WalError::io(&self.path))?;
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

/// `len` zero bytes, or an error (not an abort) when memory for them cannot be had: a file
/// grown beyond reason reads as an error naming it.
fn zeroed(len: u64) -> std::io::Result<Vec<u8>> {
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            format!("cannot hold the file's {len} bytes in memory"),
        )
    };
    let len = usize::try_from(len).map_err(|_| too_large())?;
    let mut data = Vec::new();
    data.try_reserve_exact(len).map_err(|_| too_large())?;
    data.resize(len, 0);
    Ok(data)
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

/// Makes `path` a durable segment file of `size` bytes: a header with a fresh salt, then zeros.
/// On failure the partial file is removed (it may hold space a full disk needs back).
pub fn create_segment_file(path: &Path, size: u64, allocation: Allocation) -> Result<(), WalError> {
    let made = write_segment_file(path, size, allocation);
    if made.is_err() {
        let _ = fs::remove_file(path);
    }
    made
}

fn write_segment_file(path: &Path, size: u64, allocation: Allocation) -> Result<(), WalError> {
    let header = SegmentHeader {
        capacity: size,
        salt: fresh_salt(),
    }
    .encode();
    if allocation == Allocation::Reserve {
        let file = File::create(path).map_err(WalError::io(path))?;
        match fallocate(&file, size) {
            Ok(()) => {
                return file
                    .write_all_at(&header, 0)
                    .and_then(|()| file.sync_all())
                    .map_err(WalError::io(path))
            }
            // A filesystem without fallocate: fall back to zeros.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            Err(e) => return Err(WalError::io(path)(e)),
        }
    }
    let mut file = File::create(path).map_err(WalError::io(path))?;
    file.write_all(&header).map_err(WalError::io(path))?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = size.saturating_sub(SEGMENT_HEADER_BYTES as u64);
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).map_err(WalError::io(path))?;
        left -= n as u64;
    }
    file.sync_all().map_err(WalError::io(path))
}

/// A salt no one outside the data directory can predict: std's hasher keys come from the
/// operating system's random source.
fn fresh_salt() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Whether `path` is a complete segment file of `size` bytes (header and length check out).
pub fn is_whole_segment_file(path: &Path, size: u64) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    file.metadata().is_ok_and(|m| m.len() == size)
        && file.read_exact_at(&mut header, 0).is_ok()
        && matches!(SegmentHeader::decode(&header), HeaderAt::Valid(h) if h.capacity == size)
}

/// Reserves `size` bytes for `file` with `fallocate(2)`, through libc (not a raw system call) so
/// that an `LD_PRELOAD` fault injector such as `faultio` sees it.
fn fallocate(file: &File, size: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len =
        libc::off_t::try_from(size).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: `file` keeps the descriptor open for the duration of the call.
    let ret = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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

/// Makes a creation, rename or removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(WalError::io(dir))
}

/// Creates `dir` and any missing parents, syncing the parent of each directory it creates, so
/// that a crash cannot lose a directory (and the files made in it) that was reported made.
pub fn create_dir_durably(dir: &Path) -> Result<(), WalError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durably(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Made meanwhile by someone else, who syncs it.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(WalError::io(dir)(e)),
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    sync_dir(parent.unwrap_or(Path::new(".")))
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
        // A spare without a good header or of the wrong size was cut short by a crash (or made
        // for another segment size): start over. A whole one reads as zeros after its header
        // even if a crash lost some of its blocks (they come back as holes), so it is kept.
        if spare.exists() && !is_whole_segment_file(&spare, size) {
            fs::remove_file(&spare).map_err(WalError::io(&spare))?;
            sync_dir(dir)?;
        }
        // An oversized segment a crash interrupted before its rename.
        let large = dir.join(LARGE_NAME);
        if large.exists() {
            fs::remove_file(&large).map_err(WalError::io(&large))?;
            sync_dir(dir)?;
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
                    Err(WalError::Failed {
                        kind: WalErrorKind::Io,
                        reason: "preallocation thread panicked".into(),
                    })
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
