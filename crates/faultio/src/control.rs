//! The control file: which operations fail, with which error, for which paths.
//!
//! One directive per line; `#` starts a comment; blank lines are ignored:
//!
//! ```text
//! fail <ops> <errno> under <path>   # <path> itself and everything below it
//! fail <ops> <errno> at <path>      # exactly <path> (a file, or a directory's own fsync)
//! log <path>                        # append one line per injected fault to <path>
//! ```
//!
//! `<ops>` is a comma-separated list of `fsync` (fsync, fdatasync, syncfs), `write` (write,
//! pwrite, pwrite64, writev, pwritev, pwritev2 and their 64-bit names), `fallocate` (fallocate,
//! posix_fallocate and their 64-bit names) or `all`. `<errno>` is a name such as `EIO`,
//! `ENOSPC`, `EROFS`, `EDQUOT`, `EFBIG`, `EINTR`, `EAGAIN`, `ENOMEM`, `EPERM`, `EACCES`,
//! `EBADF` or a number. Paths are absolute and canonical (symbolic links resolved), as
//! `/proc/self/fd` shows them. The first matching rule wins.

use std::fmt;

/// A set of intercepted operations, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ops(u8);

impl Ops {
    pub const FSYNC: Ops = Ops(1);
    pub const WRITE: Ops = Ops(2);
    pub const FALLOCATE: Ops = Ops(4);
    pub const ALL: Ops = Ops(7);

    pub fn contains(self, op: Ops) -> bool {
        self.0 & op.0 == op.0
    }

    fn union(self, other: Ops) -> Ops {
        Ops(self.0 | other.0)
    }

    pub fn name(self) -> &'static str {
        match self {
            Ops::FSYNC => "fsync",
            Ops::WRITE => "write",
            Ops::FALLOCATE => "fallocate",
            _ => "ops",
        }
    }
}

/// Which paths a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The path itself and everything below it.
    Under(Vec<u8>),
    /// Exactly this path.
    At(Vec<u8>),
}

impl Target {
    pub fn matches(&self, path: &[u8]) -> bool {
        match self {
            Target::At(p) => path == p.as_slice(),
            Target::Under(p) => {
                path == p.as_slice()
                    || (path.starts_with(p)
                        && (p.ends_with(b"/") || path.get(p.len()) == Some(&b'/')))
            }
        }
    }
}

/// What a rule does to a matching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Fail with this errno, doing nothing.
    Fail(i32),
    /// Sleep this many milliseconds, then do the call: a slow disk.
    Delay(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub ops: Ops,
    pub effect: Effect,
    pub target: Target,
}

/// A parsed control file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    pub rules: Vec<Rule>,
    /// Where to append a line per injected fault.
    pub log: Option<Vec<u8>>,
    /// Lines that did not parse: `(line number, what was wrong)`. Reported on stderr.
    pub errors: Vec<(usize, String)>,
}

impl Control {
    pub fn parse(text: &str) -> Control {
        let mut control = Control::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Err(e) = control.directive(line) {
                control.errors.push((number + 1, e));
            }
        }
        control
    }

    fn directive(&mut self, line: &str) -> Result<(), String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["log", path] => {
                self.log = Some(absolute(path)?.to_vec());
                Ok(())
            }
            [verb @ ("fail" | "delay"), ops, amount, place, path] => {
                let effect = if *verb == "fail" {
                    Effect::Fail(parse_errno(amount)?)
                } else {
                    Effect::Delay(parse_millis(amount)?)
                };
                let path = absolute(path)?;
                let target = match *place {
                    "under" => {
                        let trimmed = path.strip_suffix(b"/").filter(|p| !p.is_empty());
                        Target::Under(trimmed.unwrap_or(path).to_vec())
                    }
                    "at" => Target::At(path.to_vec()),
                    other => return Err(format!("expected `under` or `at`, found `{other}`")),
                };
                self.rules.push(Rule {
                    ops: parse_ops(ops)?,
                    effect,
                    target,
                });
                Ok(())
            }
            _ => Err(format!(
                "expected `fail <ops> <errno> under|at <path>`, `delay <ops> <N>ms under|at <path>` or `log <path>`, found `{line}`"
            )),
        }
    }

    /// What the first rule naming `op` and `path` does to the call, if any rule does.
    pub fn fault(&self, op: Ops, path: &[u8]) -> Option<Effect> {
        self.rules
            .iter()
            .find(|r| r.ops.contains(op) && r.target.matches(path))
            .map(|r| r.effect)
    }

    /// Whether any rule names `op` (if none does, the path need not be looked up).
    pub fn names(&self, op: Ops) -> bool {
        self.rules.iter().any(|r| r.ops.contains(op))
    }
}

fn absolute(path: &str) -> Result<&[u8], String> {
    if path.starts_with('/') {
        Ok(path.as_bytes())
    } else {
        Err(format!("paths must be absolute, found `{path}`"))
    }
}

fn parse_ops(text: &str) -> Result<Ops, String> {
    let mut ops = Ops(0);
    for name in text.split(',') {
        ops = ops.union(match name {
            "fsync" => Ops::FSYNC,
            "write" => Ops::WRITE,
            "fallocate" => Ops::FALLOCATE,
            "all" => Ops::ALL,
            other => {
                return Err(format!(
                    "unknown operation `{other}` (fsync, write, fallocate, all)"
                ))
            }
        });
    }
    Ok(ops)
}

const ERRNOS: &[(&str, i32)] = &[
    ("EIO", libc::EIO),
    ("ENOSPC", libc::ENOSPC),
    ("EROFS", libc::EROFS),
    ("EDQUOT", libc::EDQUOT),
    ("EFBIG", libc::EFBIG),
    ("EINTR", libc::EINTR),
    ("EAGAIN", libc::EAGAIN),
    ("ENOMEM", libc::ENOMEM),
    ("EPERM", libc::EPERM),
    ("EACCES", libc::EACCES),
    ("EBADF", libc::EBADF),
];

/// `250ms`: at most a minute, so a typo cannot hang a process for good.
fn parse_millis(text: &str) -> Result<u32, String> {
    match text.strip_suffix("ms").map(str::parse::<u32>) {
        Some(Ok(ms)) if ms <= 60_000 => Ok(ms),
        _ => Err(format!(
            "expected a delay such as `50ms` (at most 60000ms), found `{text}`"
        )),
    }
}

fn parse_errno(text: &str) -> Result<i32, String> {
    if let Some(&(_, value)) = ERRNOS.iter().find(|(name, _)| *name == text) {
        return Ok(value);
    }
    match text.parse::<i32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("unknown errno `{text}`")),
    }
}

/// The name of an errno, for the fault log.
pub struct ErrnoName(pub i32);

impl fmt::Display for ErrnoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match ERRNOS.iter().find(|(_, value)| *value == self.0) {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_match_by_path_component() {
        let control = Control::parse(
            "# comment\n\nfail fsync EIO under /data/n1/wal/  # trailing comment\n\
             fail write,fallocate ENOSPC under /data\nfail all 5 at /data/n1\nlog /tmp/faults.log\n",
        );
        assert_eq!(control.errors, vec![]);
        assert_eq!(control.log.as_deref(), Some(&b"/tmp/faults.log"[..]));
        let wal = b"/data/n1/wal/0001.wal".as_slice();
        assert_eq!(
            control.fault(Ops::FSYNC, wal),
            Some(Effect::Fail(libc::EIO))
        );
        assert_eq!(
            control.fault(Ops::FSYNC, b"/data/n1/wal"),
            Some(Effect::Fail(libc::EIO))
        );
        assert_eq!(
            control.fault(Ops::FSYNC, b"/data/n1/wal2"),
            None,
            "not below wal/"
        );
        assert_eq!(
            control.fault(Ops::WRITE, wal),
            Some(Effect::Fail(libc::ENOSPC))
        );
        assert_eq!(
            control.fault(Ops::FALLOCATE, b"/data/x"),
            Some(Effect::Fail(libc::ENOSPC))
        );
        assert_eq!(control.fault(Ops::WRITE, b"/database"), None);
        assert_eq!(
            control.fault(Ops::FSYNC, b"/data/n1"),
            Some(Effect::Fail(libc::EIO)),
            "`at`"
        );
        assert_eq!(control.fault(Ops::FSYNC, b"/data/n1/other"), None);
        assert!(control.names(Ops::FALLOCATE));
        assert!(!Control::parse("fail fsync EIO under /a").names(Ops::WRITE));
    }

    #[test]
    fn mistakes_are_reported_by_line() {
        let control = Control::parse(
            "fail fsync EWHAT under /a\nfail sync EIO under /a\nfail fsync EIO near /a\n\
             fail fsync EIO under a\nbogus\nfail fsync EIO under /ok\n",
        );
        let lines: Vec<usize> = control.errors.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, vec![1, 2, 3, 4, 5]);
        assert_eq!(control.rules.len(), 1, "the good line still counts");
        assert!(control.errors[0].1.contains("EWHAT"));
    }

    #[test]
    fn delays_parse_and_match() {
        let control = Control::parse(
            "delay fsync 40ms under /data/n1\nfail fsync EIO under /data\ndelay write 5s under /x\n",
        );
        assert_eq!(
            control.errors.len(),
            1,
            "a delay needs milliseconds: {:?}",
            control.errors
        );
        assert_eq!(
            control.fault(Ops::FSYNC, b"/data/n1/wal/1"),
            Some(Effect::Delay(40)),
            "the first matching rule wins"
        );
        assert_eq!(
            control.fault(Ops::FSYNC, b"/data/n2"),
            Some(Effect::Fail(libc::EIO))
        );
        assert!(!Control::parse("delay fsync 70000ms under /a")
            .errors
            .is_empty());
    }

    #[test]
    fn errno_names_round_trip() {
        assert_eq!(ErrnoName(libc::ENOSPC).to_string(), "ENOSPC");
        assert_eq!(ErrnoName(4242).to_string(), "4242");
    }
}
