//! On-disk format: frames and the records inside them.
//!
//! A segment file is a run of frames followed by zeros (segments are preallocated with zeros).
//! One frame holds everything written between two syncs, so at most one frame is ever unsynced:
//! the last one. Frame layout (little endian), padded with zeros to a multiple of 8 bytes:
//!
//! ```text
//! 0   u32  body length (> 0)
//! 4   u32  CRC-32C of bytes 8 .. 12+length (version, kind, reserved, body)
//! 8   u8   format version (1)
//! 9   u8   frame kind (1 = records)
//! 10  u16  reserved, zero
//! 12  body: postcard-encoded records, back to back
//! ```
//!
//! An all-zero header marks the end of the written part of a segment.

use crate::error::WalError;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FORMAT_VERSION: u8 = 1;
pub const FRAME_HEADER_BYTES: usize = 12;
pub const FRAME_ALIGN: usize = 8;
const KIND_RECORDS: u8 = 1;

/// One change to the log, as stored. Entry payloads borrow from the frame being read so a scan
/// does not copy command bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record<'a> {
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
pub enum Payload<'a> {
    TermStart,
    Command(#[serde(borrow, with = "serde_bytes")] &'a [u8]),
    Membership(raftengine::Membership),
}

pub fn encode_record(record: &Record<'_>, body: &mut Vec<u8>) {
    // postcard::to_extend into a Vec cannot fail: the serializer has no size limit and every
    // record type is plain data.
    let taken = std::mem::take(body);
    *body = postcard::to_extend(record, taken).expect("encoding a record into a Vec cannot fail");
}

/// Total bytes a frame with a body of `body_len` bytes takes on disk.
pub fn frame_len(body_len: usize) -> usize {
    (FRAME_HEADER_BYTES + body_len).next_multiple_of(FRAME_ALIGN)
}

/// Records waiting for the next sync, encoded behind room for the frame header, so the frame is
/// written straight from this buffer without copying the body again.
#[derive(Debug)]
pub struct FrameBuffer {
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

    /// Bytes the frame will take on disk.
    pub fn frame_len(&self) -> usize {
        frame_len(self.buf.len() - FRAME_HEADER_BYTES)
    }

    pub fn push(&mut self, record: &Record<'_>) {
        encode_record(record, &mut self.buf);
    }

    pub fn extend_body(&mut self, body: &[u8]) {
        self.buf.extend_from_slice(body);
    }

    /// Fills in the header and the padding; the result is the frame to write.
    pub fn seal(&mut self) -> &[u8] {
        let body_len = self.buf.len() - FRAME_HEADER_BYTES;
        self.buf[8..12].copy_from_slice(&[FORMAT_VERSION, KIND_RECORDS, 0, 0]);
        let crc = crc32c::crc32c(&self.buf[8..]);
        self.buf[0..4].copy_from_slice(&(body_len as u32).to_le_bytes());
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
pub enum FrameAt<'a> {
    /// A complete frame with a good checksum: its body and its length on disk.
    Valid { body: &'a [u8], len: usize },
    /// An all-zero header: nothing was written here.
    End,
    /// Something that is not a valid frame (torn, corrupted or garbage).
    Bad { reason: String },
}

/// Reads the frame starting at `offset` of `data`. Errors only for a checksum-valid frame of a
/// format this build cannot read.
pub fn frame_at<'a>(data: &'a [u8], offset: usize, path: &Path) -> Result<FrameAt<'a>, WalError> {
    let Some(header) = data.get(offset..offset + FRAME_HEADER_BYTES) else {
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
    let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let stored_crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
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
    if crc32c::crc32c(&data[offset + 8..end]) != stored_crc {
        return Ok(FrameAt::Bad {
            reason: "frame checksum mismatch".into(),
        });
    }
    let (version, kind) = (header[8], header[9]);
    if version != FORMAT_VERSION {
        return Err(WalError::UnsupportedVersion {
            path: path.to_path_buf(),
            offset: offset as u64,
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if kind != KIND_RECORDS {
        return Err(WalError::Corrupt {
            path: path.to_path_buf(),
            offset: offset as u64,
            reason: format!("unknown frame kind {kind}"),
        });
    }
    Ok(FrameAt::Valid {
        body: &data[offset + FRAME_HEADER_BYTES..end],
        len: frame_len(body_len),
    })
}

/// The records of a checksum-valid frame body, in order. A body that does not decode was
/// written by a buggy or foreign writer: corruption, located at the frame.
pub fn decode_records<'a>(
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

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let mut frame = FrameBuffer::default();
        frame.push(&Record::Entry {
            index: 7,
            term: 2,
            payload: Payload::Command(b"hello"),
        });
        frame.push(&Record::TruncateFrom { index: 3 });
        let body = frame.body().to_vec();
        let mut data = frame.seal().to_vec();
        assert_eq!(data.len() % FRAME_ALIGN, 0);
        data.extend_from_slice(&[0; 16]);
        let path = Path::new("test.wal");
        let FrameAt::Valid { body: read, len } = frame_at(&data, 0, path).unwrap() else {
            panic!("frame should be valid");
        };
        assert_eq!(len, frame_len(body.len()));
        let records = decode_records(read, path, 0).unwrap();
        assert_eq!(records[1], Record::TruncateFrom { index: 3 });
        assert_eq!(frame_at(&data, len, path).unwrap(), FrameAt::End);
        for i in 0..len {
            let mut damaged = data.clone();
            damaged[i] ^= 0x40;
            let at = frame_at(&damaged, 0, path);
            assert!(
                matches!(at, Ok(FrameAt::Bad { .. }))
                    || (i < len
                        && matches!(at, Ok(FrameAt::Valid { .. }))
                        && i >= FRAME_HEADER_BYTES + body.len()),
                "flipping byte {i} gave {at:?}"
            );
        }
    }
}
