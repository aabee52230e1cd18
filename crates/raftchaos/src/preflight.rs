//! Before a run: refuse clearly when something needed is missing. After an interrupted one:
//! remove what it left.

use crate::cluster::{leftover_mounts, unmount, Setup, RAFT_PORT};
use crate::firewall;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

/// Where Debian's `faketime` package puts libfaketime.
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Every reason the run cannot start, or `Ok`.
pub fn check(setup: &Setup, needs_faketime: bool) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        problems
            .push("not root: iptables rules and tmpfs mounts need root (run with sudo)".to_owned());
    }
    let runs = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !runs("iptables", "--version") {
        problems.push("iptables is missing (Debian: apt-get install iptables)".to_owned());
    }
    if !runs("mount", "--version") || !runs("umount", "--version") {
        problems.push("mount/umount are missing (Debian: util-linux)".to_owned());
    }
    let file = |path: &Path, what: &str, hint: &str| {
        (!path.is_file()).then(|| format!("{what} not found at {} ({hint})", path.display()))
    };
    problems.extend(file(
        &setup.raftkv,
        "the raftkv executable",
        "cargo build --release -p raftkv, or --raftkv PATH",
    ));
    problems.extend(file(
        &setup.faultio,
        "the faultio shim",
        "cargo build --release -p faultio, or --faultio PATH",
    ));
    if needs_faketime {
        problems.extend(file(
            &setup.faketime,
            "libfaketime",
            "Debian: apt-get install faketime; or leave out the clock fault",
        ));
    }
    if firewall::chain_exists() || !leftover_mounts().is_empty() {
        problems.push(
            "an earlier run left rules or mounts behind: run `raftchaos cleanup` first".to_owned(),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn interrupted() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Removes our chain, kills our raftkv processes and unmounts our disks; says what it did.
pub fn cleanup() -> String {
    let mut done = Vec::new();
    if firewall::chain_exists() {
        firewall::remove_all();
        done.push(format!("iptables chain {} removed", firewall::CHAIN));
    }
    let killed = kill_nodes();
    if killed > 0 {
        done.push(format!("{killed} raftkv node(s) killed"));
    }
    for mount in leftover_mounts() {
        unmount(&mount);
        done.push(format!("unmounted {}", mount.display()));
    }
    if done.is_empty() {
        "nothing to clean up".to_owned()
    } else {
        done.join("; ")
    }
}

/// Kills `raftkv serve` processes started by a run: they listen for peers on `127.0.0.1N:7000`.
fn kill_nodes() -> usize {
    let mut killed = 0;
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    let marker = format!(":{RAFT_PORT}");
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let ours = args.iter().any(|a| a == "serve")
            && args.windows(2).any(|w| {
                w[0] == "--raft-listen" && w[1].starts_with("127.0.0.1") && w[1].ends_with(&marker)
            });
        if ours {
            // SAFETY: kill(2) has no memory effects.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGKILL);
            }
            killed += 1;
        }
    }
    killed
}
