//! The snapshot file decoder (`raftwal::decode_snapshot_file`, what `SnapshotStore::latest`
//! runs on the newest file): magic, version, checksum, ids, lengths, the postcard membership.
//!
//! Checks, beyond "no panic": a decoded snapshot's data is no longer than the file, and
//! re-encoding it (`encode_snapshot_file`, the bytes `save` writes) gives a file that decodes to
//! the same snapshot. With the first input byte odd, the checksum is recomputed before decoding,
//! so mutations reach the length checks and the membership decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raftengine_fuzz as _;
use raftwal::{decode_snapshot_file, encode_snapshot_file};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, file)) = data.split_first() else {
        return;
    };
    let mut file = file.to_vec();
    if flags & 1 == 1 && file.len() >= 16 {
        let crc = crc32c::crc32c(&file[16..]);
        file[12..16].copy_from_slice(&crc.to_le_bytes());
    }
    let path = Path::new("fuzz.snap");
    let Ok(snapshot) = decode_snapshot_file(path, &file) else {
        return;
    };
    assert!(snapshot.data.len() <= file.len());
    let encoded =
        encode_snapshot_file(snapshot.last_included, &snapshot.membership, &snapshot.data);
    let again = decode_snapshot_file(path, &encoded).expect("a re-encoded snapshot decodes");
    assert_eq!(again, snapshot);
});
