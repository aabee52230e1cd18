//! raftsim: a deterministic cluster harness for raftengine, a scenario language and trace documents.

pub mod cluster;
pub mod counter;
pub mod disk;
pub mod recorder;
pub mod trace;
pub mod traffic;

pub use cluster::{Block, Cluster, ClusterSettings, CommandOutcome, HarnessError, Trigger};
pub use disk::{SimDisk, SyncMode};
pub mod bench;
pub mod docs;
pub mod fuzz;
pub mod runner;
pub mod scenario;
