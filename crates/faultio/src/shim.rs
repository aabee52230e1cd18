//! The interposed functions. Each asks [`fault`] whether to fail; if not, it calls the next
//! definition of the same symbol (libc's), found with `dlsym(RTLD_NEXT, ...)`.
//!
//! No lock is taken on any path (a process may `fork` while another thread is inside a
//! `write`): the parsed control file is published through an atomic pointer and never freed
//! (one small allocation per change of the file).

use crate::control::{Control, Effect, ErrnoName, Ops};
use libc::{c_int, c_void, iovec, off64_t, off_t, size_t, ssize_t};
use std::cell::Cell;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The environment variable naming the control file.
const CONTROL_ENV: &str = "FAULTIO_CONTROL";

/// What identifies one version of the control file. Replacing the file by `rename` always
/// changes the inode, so no change is missed even within one tick of the file timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

struct Loaded {
    /// `None`: the control file does not exist (no faults).
    version: Option<Version>,
    control: Control,
}

static CURRENT: AtomicPtr<Loaded> = AtomicPtr::new(std::ptr::null_mut());

thread_local! {
    /// Set while this thread is inside [`fault`], so a write it makes (the fault log, a
    /// message on stderr) passes straight through.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

fn control_path() -> Option<&'static OsString> {
    static PATH: OnceLock<Option<OsString>> = OnceLock::new();
    PATH.get_or_init(|| std::env::var_os(CONTROL_ENV)).as_ref()
}

/// The errno to fail `op` on `fd` with, if the control file says so.
fn fault(op: Ops, fd: c_int) -> Option<c_int> {
    let path = control_path()?;
    let entered = BUSY.try_with(|busy| !busy.replace(true)).unwrap_or(false);
    if !entered {
        return None;
    }
    let errno = check(path, op, fd);
    let _ = BUSY.try_with(|busy| busy.set(false));
    errno
}

fn check(control: &OsString, op: Ops, fd: c_int) -> Option<c_int> {
    let loaded = current(control);
    if !loaded.control.names(op) {
        return None;
    }
    let target = fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let errno = match loaded.control.fault(op, target.as_os_str().as_bytes())? {
        Effect::Fail(errno) => errno,
        Effect::Delay(ms) => {
            // A slow disk: the call still happens, late. Not logged: it fails nothing.
            std::thread::sleep(std::time::Duration::from_millis(u64::from(ms)));
            return None;
        }
    };
    if let Some(log) = &loaded.control.log {
        let line = format!(
            "{} {} {} {}\n",
            std::process::id(),
            op.name(),
            ErrnoName(errno),
            target.display()
        );
        let log = std::path::Path::new(std::ffi::OsStr::from_bytes(log));
        if let Ok(mut file) = fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = file.write_all(line.as_bytes());
        }
    }
    Some(errno)
}

/// The parsed control file, read again when it changed.
fn current(control: &OsString) -> &'static Loaded {
    let version = fs::metadata(control).ok().map(|m| Version {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    });
    let ptr = CURRENT.load(Ordering::Acquire);
    // SAFETY: a published pointer comes from Box::leak below and is never freed.
    if let Some(loaded) = unsafe { ptr.as_ref() } {
        if loaded.version == version {
            return loaded;
        }
    }
    let text = match version {
        Some(_) => fs::read(control)
            .map(|bytes| OsString::from_vec(bytes).to_string_lossy().into_owned())
            .unwrap_or_default(),
        None => String::new(),
    };
    let parsed = Control::parse(&text);
    for (line, error) in &parsed.errors {
        let _ = writeln!(
            std::io::stderr(),
            "faultio: {}:{line}: {error} (line ignored)",
            control.to_string_lossy()
        );
    }
    let loaded: &'static Loaded = Box::leak(Box::new(Loaded {
        version,
        control: parsed,
    }));
    // Two threads may both load a new version; either result is the same file's content.
    CURRENT.store(std::ptr::from_ref(loaded).cast_mut(), Ordering::Release);
    loaded
}

fn fail<T: From<i8>>(errno: c_int) -> T {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = errno };
    T::from(-1)
}

/// Resolves the next definition of a symbol once and caches it.
fn next_symbol(slot: &AtomicUsize, name: &'static [u8]) -> usize {
    let cached = slot.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: `name` is a NUL-terminated symbol name; RTLD_NEXT is a valid pseudo-handle.
    let found = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) } as usize;
    slot.store(found, Ordering::Relaxed);
    found
}

/// Defines `$name` with C linkage: fail with the control file's errno for `$op`, else call the
/// next `$name`. `$fd` names the file-descriptor argument. `$on_fault` turns an errno into the
/// return value (set errno and return -1, except for the posix_fallocate family).
macro_rules! interpose {
    ($op:expr, $on_fault:expr, fn $name:ident($fd:ident: c_int $(, $arg:ident: $ty:ty)*) -> $ret:ty) => {
        /// Interposed (see the crate docs).
        ///
        /// # Safety
        /// The same contract as the libc function of this name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($fd: c_int $(, $arg: $ty)*) -> $ret {
            if let Some(errno) = fault($op, $fd) {
                return $on_fault(errno);
            }
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let next = next_symbol(&NEXT, concat!(stringify!($name), "\0").as_bytes());
            if next == 0 {
                return $on_fault(libc::ENOSYS);
            }
            // SAFETY: `next` is the address of the libc function of this very signature.
            let next: unsafe extern "C" fn(c_int $(, $ty)*) -> $ret =
                unsafe { std::mem::transmute(next) };
            // SAFETY: the caller's arguments, passed on unchanged.
            unsafe { next($fd $(, $arg)*) }
        }
    };
}

/// The posix_fallocate family returns the error instead of setting errno.
fn returned(errno: c_int) -> c_int {
    errno
}

interpose!(Ops::FSYNC, fail::<c_int>, fn fsync(fd: c_int) -> c_int);
interpose!(Ops::FSYNC, fail::<c_int>, fn fdatasync(fd: c_int) -> c_int);
interpose!(Ops::FSYNC, fail::<c_int>, fn syncfs(fd: c_int) -> c_int);
interpose!(Ops::WRITE, fail::<ssize_t>, fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t);
interpose!(Ops::WRITE, fail::<ssize_t>, fn pwrite(fd: c_int, buf: *const c_void, count: size_t, offset: off_t) -> ssize_t);
interpose!(Ops::WRITE, fail::<ssize_t>, fn pwrite64(fd: c_int, buf: *const c_void, count: size_t, offset: off64_t) -> ssize_t);
interpose!(Ops::WRITE, fail::<ssize_t>, fn writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t);
interpose!(Ops::WRITE, fail::<ssize_t>, fn pwritev(fd: c_int, iov: *const iovec, iovcnt: c_int, offset: off_t) -> ssize_t);
interpose!(Ops::WRITE, fail::<ssize_t>, fn pwritev64(fd: c_int, iov: *const iovec, iovcnt: c_int, offset: off64_t) -> ssize_t);
interpose!(Ops::WRITE, fail::<ssize_t>, fn pwritev2(fd: c_int, iov: *const iovec, iovcnt: c_int, offset: off_t, flags: c_int) -> ssize_t);
interpose!(Ops::WRITE, fail::<ssize_t>, fn pwritev64v2(fd: c_int, iov: *const iovec, iovcnt: c_int, offset: off64_t, flags: c_int) -> ssize_t);
interpose!(Ops::FALLOCATE, fail::<c_int>, fn fallocate(fd: c_int, mode: c_int, offset: off_t, len: off_t) -> c_int);
interpose!(Ops::FALLOCATE, fail::<c_int>, fn fallocate64(fd: c_int, mode: c_int, offset: off64_t, len: off64_t) -> c_int);
interpose!(Ops::FALLOCATE, returned, fn posix_fallocate(fd: c_int, offset: off_t, len: off_t) -> c_int);
interpose!(Ops::FALLOCATE, returned, fn posix_fallocate64(fd: c_int, offset: off64_t, len: off64_t) -> c_int);
