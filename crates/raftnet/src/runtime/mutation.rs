//! Known defects of the runtime, put back on purpose (the `mutations` feature, test builds only),
//! so that a test can show it catches each one: with the mutation on, the test's scenario must
//! fail; with it off, pass (`tests/mutations.rs`). The core's own defects are
//! `raftengine::Mutation`, switched on in [`NodeConfig::raft`](super::NodeConfig::raft).

/// A runtime defect to put back, set in [`NodeConfig::mutation`](super::NodeConfig::mutation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeMutation {
    /// The bootstrap membership is never saved: no cluster record is written or read
    /// (`bootstrap::reconcile` takes the voters from the configuration alone), so a node
    /// restarted without its peer list believes it is the only voter and leads alone.
    BootstrapRecordNotSaved,
}
