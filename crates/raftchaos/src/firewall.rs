//! Network partitions and packet loss with iptables, scoped to the nodes' own loopback addresses
//! and peer ports: every rule lives in one chain of our own ([`CHAIN`]), jumped to from `INPUT`
//! for loopback traffic, so removing the chain removes every rule we added and nothing else.
//!
//! Rules drop packets on the way *in* (not out): the sender's TCP sees loss and retransmits, as
//! it would on a real network, instead of a local `EPERM`.

use std::net::Ipv4Addr;
use std::process::Command;
use thiserror::Error;

/// Our chain in the `filter` table.
pub const CHAIN: &str = "RAFTCHAOS";

#[derive(Debug, Error)]
pub enum FirewallError {
    #[error("cannot run iptables: {0}")]
    Spawn(std::io::Error),
    #[error("iptables {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
}

/// One direction of peer traffic cut (or made lossy): connections that `from` opens to `to`'s
/// peer ports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cut {
    pub from: Ipv4Addr,
    pub to: Ipv4Addr,
    /// `None`: every packet; `Some(p)`: each packet with probability `p`.
    pub probability: Option<f64>,
}

/// The chain and the cuts in force.
#[derive(Debug)]
pub struct Firewall {
    /// The peer ports a node listens on (its raft port and its proxy port).
    ports: Vec<u16>,
    installed: bool,
}

fn iptables(args: &[&str]) -> Result<(), FirewallError> {
    // `-w`: wait for the xtables lock instead of failing when another iptables runs.
    let output = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(FirewallError::Spawn)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(FirewallError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

const JUMP: &[&str] = &["INPUT", "-i", "lo", "-j", CHAIN];

impl Firewall {
    /// Creates (or empties) the chain and hooks it into `INPUT`.
    pub fn install(ports: Vec<u16>) -> Result<Firewall, FirewallError> {
        remove_all();
        iptables(&["-N", CHAIN])?;
        let mut insert = vec!["-I"];
        insert.extend_from_slice(JUMP);
        iptables(&insert)?;
        Ok(Firewall {
            ports,
            installed: true,
        })
    }

    /// Drops the packets of `cut`'s connections, both ways (TCP needs its acknowledgements), so
    /// messages from `cut.from` to `cut.to` are lost while the other direction still flows.
    pub fn cut(&mut self, cut: Cut) -> Result<(), FirewallError> {
        let (from, to) = (cut.from.to_string(), cut.to.to_string());
        let probability = cut.probability.map(|p| format!("{p:.4}"));
        for port in &self.ports {
            let port = port.to_string();
            for (src, dst, side) in [(&from, &to, "--dport"), (&to, &from, "--sport")] {
                let mut args = vec!["-A", CHAIN, "-s", src, "-d", dst, "-p", "tcp", side, &port];
                if let Some(p) = &probability {
                    args.extend_from_slice(&["-m", "statistic", "--mode", "random"]);
                    args.extend_from_slice(&["--probability", p]);
                }
                args.extend_from_slice(&["-j", "DROP"]);
                iptables(&args)?;
            }
        }
        Ok(())
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_both(
        &mut self,
        a: Ipv4Addr,
        b: Ipv4Addr,
        probability: Option<f64>,
    ) -> Result<(), FirewallError> {
        self.cut(Cut {
            from: a,
            to: b,
            probability,
        })?;
        self.cut(Cut {
            from: b,
            to: a,
            probability,
        })
    }

    /// Removes every cut; the chain stays hooked in.
    pub fn heal(&mut self) -> Result<(), FirewallError> {
        iptables(&["-F", CHAIN])
    }

    /// Unhooks and deletes the chain.
    pub fn uninstall(mut self) {
        remove_all();
        self.installed = false;
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        if self.installed {
            remove_all();
        }
    }
}

/// Removes our chain and every jump to it, whatever state a previous run left (`--cleanup`).
/// Errors are ignored: each step may find nothing to remove.
pub fn remove_all() {
    let mut delete = vec!["-D"];
    delete.extend_from_slice(JUMP);
    while iptables(&delete).is_ok() {}
    let _ = iptables(&["-F", CHAIN]);
    let _ = iptables(&["-X", CHAIN]);
}

/// Whether our chain exists (what `--cleanup` reports).
pub fn chain_exists() -> bool {
    iptables(&["-n", "-L", CHAIN]).is_ok()
}
