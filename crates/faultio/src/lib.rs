//! faultio: make a real process's file writes, syncs and allocations fail, chosen at run time.
//!
//! Built as `target/<profile>/libfaultio.so` (`cargo build -p faultio`), it is loaded into a
//! process with `LD_PRELOAD` and intercepts, through the dynamic linker, the libc functions a
//! program writes and syncs files with:
//!
//! | operation   | functions |
//! |-------------|-----------|
//! | `fsync`     | `fsync`, `fdatasync`, `syncfs` |
//! | `write`     | `write`, `pwrite`, `pwrite64`, `writev`, `pwritev`, `pwritev64`, `pwritev2`, `pwritev64v2` |
//! | `fallocate` | `fallocate`, `fallocate64`, `posix_fallocate`, `posix_fallocate64` |
//!
//! Which calls fail is read from the *control file* named by `FAULTIO_CONTROL`; the file is
//! checked (one `stat`) on every intercepted call and parsed again when it changed, so faults
//! switch on and off while the process runs. Without `FAULTIO_CONTROL`, or while the file does
//! not exist, every call goes straight to libc. Syntax (see [`control`]):
//!
//! ```text
//! fail fsync EIO under /srv/raft/node-1/wal     # fsync/fdatasync of anything below wal/
//! fail write,fallocate ENOSPC under /srv/raft/node-1
//! fail fsync EIO at /srv/raft/node-1            # the directory's own fsync only
//! log /tmp/faults.log                           # one line per injected fault: pid op errno path
//! ```
//!
//! A failed call returns -1 with `errno` set (the `posix_fallocate` family returns the error
//! number) and does nothing: a failed write writes no byte, a failed fsync syncs nothing (the
//! data stays in the page cache and is written back later as usual, so a program must assume
//! neither that it reached the disk nor that it did not).
//!
//! ```sh
//! cargo build --release -p faultio
//! export FAULTIO_CONTROL=/tmp/node-1.faults
//! LD_PRELOAD=$PWD/target/release/libfaultio.so ./target/release/raftkv serve ... &
//! # switch a fault on: write a new file and rename it over the control file
//! echo "fail fsync EIO under $(realpath data/node-1)/wal" > /tmp/node-1.faults.new
//! mv /tmp/node-1.faults.new /tmp/node-1.faults
//! rm /tmp/node-1.faults                                 # and off again
//! ```
//!
//! Rules:
//! - **Replace the control file by `rename`**, never rewrite it in place: a rename gives it a new
//!   inode, which is always noticed; an in-place rewrite within one tick of the filesystem's
//!   timestamps (a few milliseconds) with the same length may be missed.
//! - **Paths are absolute and canonical**: a call's file is found by reading
//!   `/proc/self/fd/<fd>`, which resolves symbolic links (`realpath` your data directory). A
//!   deleted file's name ends in ` (deleted)` and still matches `under` its directory.
//! - A line that does not parse is reported on the process's stderr (`faultio: FILE:LINE: ...`)
//!   and ignored; the other lines still apply.
//!
//! What it cannot see: calls that do not go through the dynamic libc symbols. Raw system calls
//! (`rustix` with its default `linux_raw` backend, Go programs, io_uring), libc's internal calls
//! (`fwrite`/`fflush` of stdio write through libc-internal symbols), memory-mapped writes and
//! `msync`, `sync_file_range`, `copy_file_range`, `sendfile`, `ftruncate` and metadata calls
//! (`open`, `rename`, `unlink`, `mkdir`) are not intercepted. Rust's `std::fs` goes through the
//! intercepted functions (`File::write` → `write`, `write_at` → `pwrite64`, `sync_data` →
//! `fdatasync`, `sync_all` → `fsync`, including a directory's).
//!
//! Cost: when no rule names the operation, one `stat` of the control file per call; otherwise
//! also one `readlink`. No lock is taken (a process may `fork` at any time).
//!
//! This crate is a preload library, not a Rust library: do not `use` it from a program (its
//! exported `write`, `fsync`, ... would replace libc's in that program). It is an `rlib` too
//! only so that another package's tests can list it as a dev-dependency and find
//! `libfaultio.so` built beside them in `target/<profile>/deps/`.

pub mod control;

#[cfg(not(test))]
mod shim;
