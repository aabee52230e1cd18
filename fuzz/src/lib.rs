//! Shared by the fuzz targets: the memory bound every target runs under, and the layout of the
//! `wal` target's inputs (also used by the seed generator, `src/bin/seeds.rs`).
//!
//! libFuzzer's own `-malloc_limit_mb` needs a sanitizer runtime's malloc hooks, which a build
//! without a sanitizer (stable Rust) does not have. So the limit is enforced here, by the global
//! allocator of every target: one allocation larger than [`MAX_ALLOCATION`], or more than
//! [`MAX_LIVE`] bytes live at once, prints a line and aborts, which libFuzzer reports as a crash
//! and saves the input for. A decoder that allocates what an untrusted length announces is
//! caught here even when the memory is never touched (so RSS alone would not show it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest single allocation a target may make, whatever its input.
pub const MAX_ALLOCATION: usize = 256 << 20;
/// The most bytes a target may hold allocated at once.
pub const MAX_LIVE: usize = 768 << 20;

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// [`System`], with the limits above.
pub struct LimitedAlloc;

fn over_limit(what: &[u8]) -> ! {
    // No allocation, no formatting: we are inside the allocator.
    let message: [&[u8]; 2] = [b"fuzz allocator: ", what];
    for part in message {
        // SAFETY: writing a valid buffer to stderr.
        unsafe { libc_write(2, part.as_ptr(), part.len()) };
    }
    std::process::abort();
}

extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, count: usize) -> isize;
}

fn admit(size: usize) {
    if size > MAX_ALLOCATION {
        over_limit(b"one allocation exceeds MAX_ALLOCATION (256 MiB)\n");
    }
    if LIVE.fetch_add(size, Ordering::Relaxed) + size > MAX_LIVE {
        over_limit(b"live allocations exceed MAX_LIVE (768 MiB)\n");
    }
}

// SAFETY: every call is forwarded to `System` with the same arguments; the counters only
// observe.
unsafe impl GlobalAlloc for LimitedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        admit(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        admit(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        admit(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: LimitedAlloc = LimitedAlloc;

/// The `wal` target's input: the files of a log's `wal/` directory.
///
/// ```text
/// u8      flags: bit 0 = recompute the segment headers' checksums,
///                bit 1 = recompute the frames' checksums (see `fix_checksums`)
/// then up to MAX_SEGMENTS segments, each:
///   u64   first index (little endian): the file is named <seq>-<first index>.wal, seq 1, 2, ...
///   u32   length n (little endian; the last segment may be shorter than it says)
///   n bytes of the segment file
/// ```
///
/// Frames are bound to their position by a checksum over the segment's salt, sequence number and
/// the frame's offset, so mutated bytes almost never form a valid frame; with the flags the
/// target recomputes those checksums, so mutations reach the record decoder and the rules of
/// recovery, and without them the checks that refuse damaged frames are exercised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalInput {
    pub fix_headers: bool,
    pub fix_frames: bool,
    /// `(first index, file bytes)` of segments 1, 2, ...
    pub segments: Vec<(u64, Vec<u8>)>,
}

pub const MAX_SEGMENTS: usize = 4;
pub const SEGMENT_HEADER_BYTES: usize = 64;
pub const FRAME_HEADER_BYTES: usize = 24;

impl WalInput {
    pub fn parse(data: &[u8]) -> WalInput {
        let (&flags, mut rest) = data.split_first().unwrap_or((&0, &[]));
        let mut segments = Vec::new();
        while rest.len() >= 12 && segments.len() < MAX_SEGMENTS {
            let first = u64::from_le_bytes(rest[0..8].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
            rest = &rest[12..];
            let take = len.min(rest.len());
            segments.push((first, rest[..take].to_vec()));
            rest = &rest[take..];
        }
        WalInput {
            fix_headers: flags & 1 != 0,
            fix_frames: flags & 2 != 0,
            segments,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.fix_headers) | (u8::from(self.fix_frames) << 1)];
        for (first, bytes) in &self.segments {
            out.extend_from_slice(&first.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// The name of segment `seq` (from 1) starting at `first`, as the log names it.
    pub fn segment_name(seq: u64, first: u64) -> String {
        format!("{seq:016x}-{first:016x}.wal")
    }
}

/// Recomputes, as the flags say, the checksum of a segment's header and of each frame in the
/// chain that starts after it (raftwal's format 2: see `crates/raftwal/src/format.rs`). Stops at
/// the first all-zero frame header or the first frame that runs past the end.
pub fn fix_checksums(seq: u64, data: &mut [u8], headers: bool, frames: bool) {
    if data.len() < SEGMENT_HEADER_BYTES {
        return;
    }
    if headers {
        let crc = crc32c::crc32c(&data[..60]);
        data[60..64].copy_from_slice(&crc.to_le_bytes());
    }
    if !frames {
        return;
    }
    let salt = u64::from_le_bytes(data[24..32].try_into().expect("8 bytes"));
    let mut offset = SEGMENT_HEADER_BYTES;
    while offset + FRAME_HEADER_BYTES <= data.len() {
        let header = &data[offset..offset + FRAME_HEADER_BYTES];
        if header.iter().all(|&b| b == 0) {
            return;
        }
        let body_len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let Some(end) = (offset + FRAME_HEADER_BYTES)
            .checked_add(body_len)
            .filter(|&end| body_len > 0 && end <= data.len())
        else {
            return;
        };
        let mut bound = [0u8; 24];
        bound[0..8].copy_from_slice(&salt.to_le_bytes());
        bound[8..16].copy_from_slice(&seq.to_le_bytes());
        bound[16..24].copy_from_slice(&(offset as u64).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bound), &data[offset + 8..end]);
        data[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
        offset = end.next_multiple_of(8);
    }
}

/// A directory for one input's files, emptied first: in `/dev/shm` (memory) when it exists.
pub fn scratch_dir(target: &str) -> std::path::PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("raftengine-fuzz-{target}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Limits small enough that a short input reaches every "too large" branch of the RESP codecs;
/// the RESP targets run each input under these and under the defaults.
pub fn tight_resp_limits() -> raftkv::resp::RespLimits {
    raftkv::resp::RespLimits {
        max_bulk_len: 16,
        max_array_len: 4,
        max_inline_len: 32,
        max_request_len: 96,
        max_reply_depth: 2,
    }
}
