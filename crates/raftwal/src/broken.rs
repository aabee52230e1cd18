//! The broken marker, `<dir>/BROKEN`: written when a node stops on a fatal error an operator
//! must look at (not after an I/O failure, which the next open recovers from by itself). While
//! it exists the log refuses to load, with [`WalError::Broken`] naming the file and the command
//! that clears it: `raftwal clear-broken --data-dir DIR` ([`clear_broken`]).

use crate::error::WalError;
use crate::segment::{sync_dir, write_atomically};
use std::fs;
use std::path::{Path, PathBuf};

pub const BROKEN_FILE: &str = "BROKEN";

pub fn marker_path(dir: &Path) -> PathBuf {
    dir.join(BROKEN_FILE)
}

/// The reason the marker records, if it exists.
pub fn read(dir: &Path) -> Result<Option<String>, WalError> {
    let path = marker_path(dir);
    match fs::read_to_string(&path) {
        Ok(reason) => Ok(Some(reason)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(WalError::io(&path)(e)),
    }
}

pub fn mark(dir: &Path, reason: &str) -> Result<(), WalError> {
    write_atomically(
        &marker_path(dir),
        &dir.join("BROKEN.tmp"),
        &[reason.as_bytes()],
    )
}

/// Removes the marker durably; returns the reason it held.
pub fn remove(dir: &Path) -> Result<Option<String>, WalError> {
    let reason = read(dir)?;
    let path = marker_path(dir);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(WalError::io(&path)(e)),
        _ => {}
    }
    sync_dir(dir)?;
    Ok(reason)
}

/// [`clear_broken`], told as an operator's tool prints it: what was cleared (and the reason the
/// marker gave), or that there was nothing to clear.
pub fn clear_broken_report(dir: &Path) -> Result<String, WalError> {
    Ok(match clear_broken(dir)? {
        Some(reason) => format!(
            "cleared {}/BROKEN; it said: {}",
            dir.display(),
            reason.trim_end()
        ),
        None => format!("{} has no BROKEN marker", dir.display()),
    })
}

/// The operator's command: clears the broken marker of the data directory `dir`, which no
/// process may have open (the directory's lock is taken), and returns the reason it held
/// (`None`: there was no marker). Only the marker is touched; the log is not opened.
pub fn clear_broken(dir: &Path) -> Result<Option<String>, WalError> {
    if !dir.is_dir() {
        return Err(WalError::io(dir)(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such data directory",
        )));
    }
    let _lock = crate::wal::lock_dir(dir)?;
    remove(dir)
}
