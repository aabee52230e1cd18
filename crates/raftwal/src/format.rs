//! On-disk format (version 2): segment headers, frames and the records inside them.
//!
//! A segment file is a header, a run of frames, then zeros (segments are preallocated). One
//! frame holds everything written between two syncs, so at most one frame is ever unsynced: the
//! last one. All integers are little endian.
//!
//! ```text
//! segment header, 64 bytes, written and synced when the file is made (before it gets a name):
//! 0   [u8; 8]  magic "RAFTWAL\0"
//! 8   u8       format version (2)
//! 9   [u8; 7]  zero
//! 16  u64      capacity: the file's size when it was made
//! 24  u64      salt: random, chosen when the file was made
//! 32  [u8; 28] zero
//! 60  u32      CRC-32C of bytes 0..60
//!
//! frame, at offset 64 and after, padded with zeros to a multiple of 8 bytes:
//! 0   u32  body length (> 0, at most MAX_FRAME_BODY_BYTES)
//! 4   u32  CRC-32C of (salt, segment seq, frame offset in the file: three u64 that are not
//!          stored in the frame) followed by bytes 8 .. 24+length
//! 8   u8   format version (2)
//! 9   u8   frame kind (1 = records)
//! 10  [u8; 6] zero
//! 16  u64  frame number: one more than the frame before it, across segments
//! 24  body: postcard-encoded records, back to back
//! ```
//!
//! An all-zero frame header marks the end of the written part of a segment.
//!
//! **Why frames are bound to their position.** A frame's checksum covers where it lies: the
//! segment's sequence number (from the file name), the frame's offset, and the segment's salt.
//! So bytes that would make a valid frame *somewhere else* — a client value that embeds a frame
//! copied from the log, an old frame in a reused file — are not a valid frame where they are.
//! Recovery relies on that to tell a torn tail from damaged durable data: after a bad frame it
//! looks for a frame valid *at its own offset*; only such a frame proves that durable data
//! follows the damage. Without the binding, a crash that lost the first page of the last frame
//! while its later pages survived exposed the client's bytes, which recovery took for a frame
//! and so refused to start. The salt, unknown outside the data directory, keeps a client from
//! crafting a value that is valid at the very offset it will land on. Binding by position was
//! chosen over a checksum chained from the previous frame (etcd's way) because it lets a frame
//! be checked on its own: a catch-up read checks one frame without its predecessor, and the
//! scan after damage can test each offset independently.
//!
//! The frame number lets recovery see frames missing between two segments (a segment cut
//! short at a frame boundary), which position alone cannot show.
//!
//! **Version 1** (frames without position, segments without header, before this format) is
//! not read: opening such a log fails with [`WalError::UnsupportedVersion`] naming the file and
//! version 1. Its frames cannot be told from client bytes after a lost page, which is the flaw
//! this version fixes; a node with such a log is moved aside and caught up from the cluster.
//!
//! Public as the reference for the on-disk layout, and for tests and tools that build, inspect
//! or damage data directories; an application needs only [`Wal`](crate::Wal).

use crate::error::WalError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The on-disk format this build writes and reads (see the module docs).
pub const FORMAT_VERSION: u8 = 2;
/// Size of a segment's header, in bytes; frames start after it.
pub const SEGMENT_HEADER_BYTES: usize = 64;
/// Size of a frame's header, in bytes; its body follows.
pub const FRAME_HEADER_BYTES: usize = 24;
/// Frames start at offsets that are multiples of this many bytes (bodies are padded).
pub const FRAME_ALIGN: usize = 8;
/// The largest frame body: a frame's length, header and padding included, must fit the `u32`
/// of its header (and of the log's in-memory map). A sync with more to write writes several
/// frames, each synced before the next (see `Wal::write`).
pub const MAX_FRAME_BODY_BYTES: usize = u32::MAX as usize - FRAME_HEADER_BYTES - FRAME_ALIGN;
// A frame of the largest body, header and padding included, fits the u32 lengths.
const _: () = assert!(MAX_FRAME_BODY_BYTES + FRAME_HEADER_BYTES + FRAME_ALIGN <= u32::MAX as usize);
/// The largest segment file: [`crate::WalOptions::segment_bytes`] may not exceed it, and a
/// header recording a larger capacity is damaged. (The writer's segments are the configured size
/// or, for one oversized frame, the frame's size: at most about 4 GiB.) Recovery trusts a
/// header's capacity to give a cut-short newest segment its size back, so a capacity beyond any
/// the writer makes must not get that far.
pub const MAX_SEGMENT_BYTES: u64 = 64 << 30;
/// The unit a disk writes atomically: a crash leaves each sector old or new, never a mix.
pub const SECTOR_BYTES: usize = 512;
const SEGMENT_MAGIC: &[u8; 8] = b"RAFTWAL\0";
const KIND_RECORDS: u8 = 1;
const V1_HEADER_BYTES: usize = 12;

/// One change to the log, as stored. Entry payloads borrow from the frame being read so a scan
/// does not copy command bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Record<'a> {
    Entry {
        index: u64,
        term: u64,
        #[serde(borrow)]
        payload: Payload<'a>,
    },
    HardState {
        term: u64,
        voted_for: Option<u64>,
    },
    TruncateFrom {
        index: u64,
    },
    Purge {
        through: u64,
        term: u64,
    },
    /// The commit index reached `index` (see `LogWrite::Commit`).
    Commit {
        index: u64,
    },
    /// The node repairs lost data or has finished (see `LogWrite::Repair`).
    Repair {
        epoch: u64,
        repairing: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Payload<'a> {
    TermStart,
    Command(#[serde(borrow, with = "serde_bytes")] &'a [u8]),
    Membership(raftengine::Membership),
}

pub(crate) fn encode_record(record: &Record<'_>, body: &mut Vec<u8>) {
    // postcard::to_extend into a Vec cannot fail: the serializer has no size limit and every
    // record type is plain data.
    let taken = std::mem::take(body);
    *body = postcard::to_extend(record, taken).expect("encoding a record into a Vec cannot fail");
}

/// Total bytes a frame with a body of `body_len` bytes takes on disk.
pub(crate) fn frame_len(body_len: usize) -> usize {
    (FRAME_HEADER_BYTES + body_len).next_multiple_of(FRAME_ALIGN)
}

/// What a segment's header records about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// The file's size when it was made (a shorter file lost its end).
    pub capacity: u64,
    pub salt: u64,
}

/// What the first bytes of a segment file hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderAt {
    Valid(SegmentHeader),
    /// Fewer bytes than a header: the file was cut short.
    Short,
    /// A segment of format version 1 (no header; a frame starts at offset 0).
    Version1,
    Damaged(String),
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        bytes[0..8].copy_from_slice(SEGMENT_MAGIC);
        bytes[8] = FORMAT_VERSION;
        bytes[16..24].copy_from_slice(&self.capacity.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.salt.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> HeaderAt {
        if is_version_1(bytes) {
            return HeaderAt::Version1;
        }
        let Some(bytes) = bytes.get(..SEGMENT_HEADER_BYTES) else {
            return HeaderAt::Short;
        };
        if crc32c::crc32c(&bytes[..60]).to_le_bytes() != bytes[60..64] {
            return HeaderAt::Damaged("segment header checksum mismatch".into());
        }
        if &bytes[0..8] != SEGMENT_MAGIC {
            return HeaderAt::Damaged("not a segment file (bad magic)".into());
        }
        if bytes[8] != FORMAT_VERSION {
            return HeaderAt::Damaged(format!("segment header of version {}", bytes[8]));
        }
        let capacity = le_u64(&bytes[16..24]);
        if capacity < SEGMENT_HEADER_BYTES as u64
            || capacity > MAX_SEGMENT_BYTES
            || !capacity.is_multiple_of(FRAME_ALIGN as u64)
        {
            return HeaderAt::Damaged(format!(
                "segment header records a capacity of {capacity} bytes, which no segment has"
            ));
        }
        HeaderAt::Valid(SegmentHeader {
            capacity,
            salt: le_u64(&bytes[24..32]),
        })
    }
}

/// A version-1 segment starts with a version-1 frame: length, checksum, version 1, kind 1, two
/// zero bytes. Its checksum is checked when `bytes` holds the whole frame.
fn is_version_1(bytes: &[u8]) -> bool {
    let Some(header) = bytes.get(..V1_HEADER_BYTES) else {
        return false;
    };
    let len = le_u32(&header[0..4]) as usize;
    let signature = header[8..12] == [1, KIND_RECORDS, 0, 0] && len > 0;
    signature
        && bytes
            .get(8..V1_HEADER_BYTES + len)
            .is_none_or(|covered| crc32c::crc32c(covered).to_le_bytes() == header[4..8])
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}

/// What a frame's checksum binds it to: its segment (sequence number and salt) and its offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub salt: u64,
    pub seq: u64,
    pub offset: u64,
}

impl Position {
    fn checksum(&self, covered: &[u8]) -> u32 {
        let mut bound = [0u8; 24];
        bound[0..8].copy_from_slice(&self.salt.to_le_bytes());
        bound[8..16].copy_from_slice(&self.seq.to_le_bytes());
        bound[16..24].copy_from_slice(&self.offset.to_le_bytes());
        crc32c::crc32c_append(crc32c::crc32c(&bound), covered)
    }
}

/// Records waiting for the next sync, encoded behind room for the frame header, so the frame is
/// written straight from this buffer without copying the body again.
#[derive(Debug)]
pub(crate) struct FrameBuffer {
    buf: Vec<u8>,
}

impl Default for FrameBuffer {
    fn default() -> FrameBuffer {
        FrameBuffer {
            buf: vec![0; FRAME_HEADER_BYTES],
        }
    }
}

impl FrameBuffer {
    pub fn is_empty(&self) -> bool {
        self.buf.len() == FRAME_HEADER_BYTES
    }

    pub fn body(&self) -> &[u8] {
        &self.buf[FRAME_HEADER_BYTES..]
    }

    pub fn body_len(&self) -> usize {
        self.buf.len() - FRAME_HEADER_BYTES
    }

    /// Bytes the frame will take on disk.
    pub fn frame_len(&self) -> usize {
        frame_len(self.body_len())
    }

    pub fn push(&mut self, record: &Record<'_>) {
        encode_record(record, &mut self.buf);
    }

    pub fn extend_body(&mut self, body: &[u8]) {
        self.buf.extend_from_slice(body);
    }

    /// Removes and returns the body from byte `at` on (records pushed after the body had `at`
    /// bytes).
    pub fn split_off_body(&mut self, at: usize) -> Vec<u8> {
        self.buf.split_off(FRAME_HEADER_BYTES + at)
    }

    pub fn truncate_body(&mut self, len: usize) {
        self.buf.truncate(FRAME_HEADER_BYTES + len);
    }

    /// Fills in the header and the padding for a frame numbered `number` at `position`; the
    /// result is the frame to write there.
    pub fn seal(&mut self, position: Position, number: u64) -> &[u8] {
        let body_len = self.body_len();
        // The writer splits bodies at MAX_FRAME_BODY_BYTES (Wal::stage), so this holds.
        let stored_len = u32::try_from(body_len)
            .ok()
            .filter(|_| body_len <= MAX_FRAME_BODY_BYTES)
            .expect("frame bodies are split below the u32 limit");
        self.buf[8..16].copy_from_slice(&[FORMAT_VERSION, KIND_RECORDS, 0, 0, 0, 0, 0, 0]);
        self.buf[16..24].copy_from_slice(&number.to_le_bytes());
        let crc = position.checksum(&self.buf[8..]);
        self.buf[0..4].copy_from_slice(&stored_len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.buf.resize(frame_len(body_len), 0);
        &self.buf
    }

    pub fn clear(&mut self) {
        self.buf.truncate(FRAME_HEADER_BYTES);
    }
}

/// What lies at an offset of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameAt<'a> {
    /// A complete frame with a good checksum for this position: its body, its length on disk
    /// and its number.
    Valid {
        body: &'a [u8],
        len: usize,
        number: u64,
    },
    /// An all-zero header: nothing was written here.
    End,
    /// Something that is not a valid frame here (torn, corrupted, garbage, or a frame that
    /// belongs at another position).
    Bad { reason: String },
}

/// Reads the frame at `position` in `data` (a segment's bytes from offset 0). Errors only for
/// a frame valid here but of a format this build cannot read.
pub(crate) fn frame_at<'a>(
    data: &'a [u8],
    position: Position,
    path: &Path,
) -> Result<FrameAt<'a>, WalError> {
    let offset = usize::try_from(position.offset).unwrap_or(usize::MAX);
    frame_in(data, offset, position, path)
}

/// Reads the frame in `frame` (the bytes read from the file at `position`).
pub(crate) fn frame_alone<'a>(
    frame: &'a [u8],
    position: Position,
    path: &Path,
) -> Result<FrameAt<'a>, WalError> {
    frame_in(frame, 0, position, path)
}

/// The frame at `offset` of `data`, checked as lying at `position` of its segment.
fn frame_in<'a>(
    data: &'a [u8],
    offset: usize,
    position: Position,
    path: &Path,
) -> Result<FrameAt<'a>, WalError> {
    let Some(header) = data.get(offset..offset.saturating_add(FRAME_HEADER_BYTES)) else {
        let rest = &data[offset.min(data.len())..];
        return Ok(if rest.iter().all(|&b| b == 0) {
            FrameAt::End
        } else {
            FrameAt::Bad {
                reason: "partial frame header at the end of the file".into(),
            }
        });
    };
    if header.iter().all(|&b| b == 0) {
        return Ok(FrameAt::End);
    }
    let body_len = le_u32(&header[0..4]) as usize;
    if body_len == 0 {
        return Ok(FrameAt::Bad {
            reason: "frame header with zero length".into(),
        });
    }
    let end = offset + FRAME_HEADER_BYTES + body_len;
    if end > data.len() {
        return Ok(FrameAt::Bad {
            reason: format!("frame of {body_len} bytes runs past the end of the file"),
        });
    }
    if position.checksum(&data[offset + 8..end]) != le_u32(&header[4..8]) {
        return Ok(FrameAt::Bad {
            reason: "frame checksum mismatch".into(),
        });
    }
    let (version, kind) = (header[8], header[9]);
    if version != FORMAT_VERSION {
        return Err(WalError::UnsupportedVersion {
            path: path.to_path_buf(),
            offset: position.offset,
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if kind != KIND_RECORDS {
        return Err(WalError::Corrupt {
            path: path.to_path_buf(),
            offset: position.offset,
            reason: format!("unknown frame kind {kind}"),
        });
    }
    Ok(FrameAt::Valid {
        body: &data[offset + FRAME_HEADER_BYTES..end],
        len: frame_len(body_len),
        number: le_u64(&header[16..24]),
    })
}

/// Whether the bad frame at `offset` looks like a write a crash interrupted rather than a
/// complete frame damaged afterwards. A crash leaves every sector either as it was before the
/// write (zeros: segments are preallocated with zeros and cut tails are zeroed) or as written;
/// so a torn frame has a sector whose part inside the frame is all zeros, or a header too
/// damaged to say where the frame ends. A frame that fails its checksum with every sector
/// written was damaged after the write, and may have been synced. (etcd's `isTornEntry` makes
/// the same test.) A frame whose body holds a sector's worth of zeros counts as torn.
pub(crate) fn looks_torn(data: &[u8], offset: usize) -> bool {
    let Some(header) = data.get(offset..offset + FRAME_HEADER_BYTES) else {
        return true;
    };
    let body_len = le_u32(&header[0..4]) as usize;
    let end = offset + FRAME_HEADER_BYTES + body_len;
    if body_len == 0 || header.iter().all(|&b| b == 0) || end > data.len() {
        return true;
    }
    let mut start = offset;
    while start < end {
        let sector_end = (start / SECTOR_BYTES + 1) * SECTOR_BYTES;
        let piece = &data[start..sector_end.min(end)];
        if piece.iter().all(|&b| b == 0) {
            return true;
        }
        start = sector_end;
    }
    false
}

/// The records of a checksum-valid frame body, in order. A body that does not decode was
/// written by a buggy or foreign writer: corruption, located at the frame.
pub(crate) fn decode_records<'a>(
    mut body: &'a [u8],
    path: &Path,
    frame_offset: u64,
) -> Result<Vec<Record<'a>>, WalError> {
    let mut records = Vec::new();
    while !body.is_empty() {
        let (record, rest) =
            postcard::take_from_bytes::<Record<'a>>(body).map_err(|e| WalError::Corrupt {
                path: path.to_path_buf(),
                offset: frame_offset,
                reason: format!("undecodable record in a checksum-valid frame: {e}"),
            })?;
        records.push(record);
        body = rest;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Position = Position {
        salt: 0x5A17,
        seq: 3,
        offset: 64,
    };

    fn sample_frame() -> (Vec<u8>, Vec<u8>) {
        let mut frame = FrameBuffer::default();
        frame.push(&Record::Entry {
            index: 7,
            term: 2,
            payload: Payload::Command(b"hello"),
        });
        frame.push(&Record::TruncateFrom { index: 3 });
        let body = frame.body().to_vec();
        (frame.seal(AT, 9).to_vec(), body)
    }

    /// `frame` placed at `AT` in a segment-like buffer, followed by 16 zero bytes.
    fn placed(frame: &[u8]) -> Vec<u8> {
        let mut data = vec![0u8; AT.offset as usize];
        data.extend_from_slice(frame);
        data.extend_from_slice(&[0; 16]);
        data
    }

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let (frame, body) = sample_frame();
        assert_eq!(frame.len() % FRAME_ALIGN, 0);
        let data = placed(&frame);
        let path = Path::new("test.wal");
        let FrameAt::Valid {
            body: read,
            len,
            number,
        } = frame_at(&data, AT, path).unwrap()
        else {
            panic!("frame should be valid");
        };
        assert_eq!((len, number), (frame_len(body.len()), 9));
        let records = decode_records(read, path, AT.offset).unwrap();
        assert_eq!(records[1], Record::TruncateFrom { index: 3 });
        let after = Position {
            offset: AT.offset + len as u64,
            ..AT
        };
        assert_eq!(frame_at(&data, after, path).unwrap(), FrameAt::End);
        let start = AT.offset as usize;
        for i in start..start + len {
            let mut damaged = data.clone();
            damaged[i] ^= 0x40;
            let at = frame_at(&damaged, AT, path);
            let padding = i >= start + FRAME_HEADER_BYTES + body.len();
            assert!(
                matches!(at, Ok(FrameAt::Bad { .. }))
                    || (padding && matches!(at, Ok(FrameAt::Valid { .. }))),
                "flipping byte {i} gave {at:?}"
            );
        }
    }

    #[test]
    fn a_frame_is_valid_only_at_its_own_position() {
        let (frame, _) = sample_frame();
        let path = Path::new("test.wal");
        // The same bytes eight bytes further on, in another segment, or under another salt.
        let mut moved = vec![0u8; 8];
        moved.extend_from_slice(&placed(&frame));
        let elsewhere = [
            (
                moved.as_slice(),
                Position {
                    offset: AT.offset + 8,
                    ..AT
                },
            ),
            (&placed(&frame), Position { seq: 4, ..AT }),
            (&placed(&frame), Position { salt: 1, ..AT }),
        ];
        for (data, position) in elsewhere {
            assert!(
                matches!(frame_at(data, position, path), Ok(FrameAt::Bad { .. })),
                "{position:?}"
            );
        }
    }

    #[test]
    fn segment_headers_round_trip_and_version_1_is_recognized() {
        let header = SegmentHeader {
            capacity: 1 << 20,
            salt: 0xDEAD_BEEF,
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), HeaderAt::Valid(header));
        assert_eq!(SegmentHeader::decode(&bytes[..40]), HeaderAt::Short);
        let mut damaged = bytes;
        damaged[20] ^= 1;
        assert!(matches!(
            SegmentHeader::decode(&damaged),
            HeaderAt::Damaged(_)
        ));
        // Found by the `wal` fuzz target: a header with a good checksum recording a capacity of
        // 504 GiB; recovery grew the cut-short newest segment to that size, and the next open
        // tried to read all of it into memory. Capacities no segment has are damage.
        for capacity in [541_165_883_392, MAX_SEGMENT_BYTES + 8, 4097, 8, 0] {
            let bytes = SegmentHeader { capacity, ..header }.encode();
            assert!(
                matches!(SegmentHeader::decode(&bytes), HeaderAt::Damaged(_)),
                "capacity {capacity}"
            );
        }
        // A version-1 segment: a frame (len, crc, version 1, kind 1, 0, 0, body) at offset 0.
        let body = b"records";
        let mut v1 = (body.len() as u32).to_le_bytes().to_vec();
        v1.extend_from_slice(&[0; 4]);
        v1.extend_from_slice(&[1, 1, 0, 0]);
        v1.extend_from_slice(body);
        let crc = crc32c::crc32c(&v1[8..]);
        v1[4..8].copy_from_slice(&crc.to_le_bytes());
        v1.resize(4096, 0);
        assert_eq!(SegmentHeader::decode(&v1), HeaderAt::Version1);
        // A first frame longer than the bytes read: recognized by its signature.
        v1[0..4].copy_from_slice(&5000u32.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&v1), HeaderAt::Version1);
    }

    #[test]
    fn torn_frames_have_an_unwritten_sector_and_damaged_ones_do_not() {
        let mut frame = FrameBuffer::default();
        frame.push(&Record::Entry {
            index: 1,
            term: 1,
            payload: Payload::Command(&[0xAB; 1500]),
        });
        let frame = frame.seal(AT, 1).to_vec();
        let data = placed(&frame);
        let start = AT.offset as usize;
        let mut flipped = data.clone();
        flipped[start + 700] ^= 1;
        assert!(!looks_torn(&flipped, start), "every sector written");
        for sector in 0..data.len() / SECTOR_BYTES {
            let mut lost = data.clone();
            let range = sector * SECTOR_BYTES..(sector + 1) * SECTOR_BYTES;
            let (lo, hi) = (range.start.max(start), range.end.min(start + frame.len()));
            lost[lo..hi].fill(0);
            assert!(looks_torn(&lost, start), "sector {sector} lost");
        }
        let mut header_lost = data.clone();
        header_lost[start..start + 8].fill(0);
        assert!(looks_torn(&header_lost, start), "a length of zero");
    }
}
