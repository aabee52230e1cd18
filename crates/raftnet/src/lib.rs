//! tokio runtime for raftengine: the pieces that give the sans-IO core real I/O.
//!
//! - [`runtime`]: the node: the core on a tokio task, its durable log, applying, client API.
//! - [`transport`]: the node-to-node TCP transport that carries [`raftengine::Message`]s.
//! - [`inbox`]: the channel of messages a node receives, bounded in messages and bytes.
pub mod inbox;
pub mod runtime;
pub mod transport;
