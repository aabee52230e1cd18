//! raftchaos: raftkv as users run it (separate processes, real sockets, disks and clocks) under
//! a seeded fault schedule, with every client history checked. See `docs/reliability.md`.
//!
//! - [`cluster`]: the raftkv processes, each on its own loopback address and tmpfs disk;
//! - [`firewall`]: partitions and loss with iptables, in a chain of our own;
//! - [`proxy`]: latency, jitter, bandwidth and stalls on the peer links (no `tc netem` here);
//! - [`faults`]: the fault kinds, injected and healed;
//! - [`workload`]: the clients and the history they record ([`model`]);
//! - [`check`]: linearizability (lincheck), counters, agreement, acknowledged writes;
//! - [`run`]: one run from start to report ([`report`]: the SVG timeline and HTML page);
//! - [`preflight`]: refusing to start without root or tools, and `cleanup`.

pub mod check;
pub mod cluster;
pub mod faults;
pub mod firewall;
pub mod model;
pub mod preflight;
pub mod proxy;
pub mod report;
pub mod run;
pub mod workload;
