//! tokio runtime for raftengine: the pieces that give the sans-IO core real I/O.
//!
//! - [`transport`]: the node-to-node TCP transport that carries [`raftengine::Message`]s.
pub mod transport;
