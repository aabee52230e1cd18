//! raftsim: a deterministic cluster harness for raftengine, a scenario language and trace documents.

pub mod trace;
