//! The trace model: one table of rows per scenario section, one renderer per output format.
//!
//! A row shows every node's role, and the op and delta of the nodes the event concerns
//! (see `shared/trace-format.md`). The harness builds rows; renderers only format them.

use serde::Serialize;

pub mod csv;
mod helpers;
pub mod index;
pub mod json;
pub mod markdown;
pub mod plantuml;
pub mod rst;

/// A whole scenario run: what `raftsim run` renders.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Trace {
    /// Scenario name, e.g. `test_command_1` (the file stem).
    pub name: String,
    /// Path of the scenario file as given on the command line, relative to the repo root.
    pub source: String,
    /// The scenario's prose introduction (may span several lines; may be empty).
    pub description: String,
    /// Raft features the scenario as a whole exercises, e.g. `leader_election.pre_vote`.
    pub features: Vec<String>,
    /// Number of node columns (nodes are labelled `N-1` .. `N-<node_count>`).
    pub node_count: usize,
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Section {
    /// 1-based section number.
    pub number: usize,
    pub title: String,
    /// Optional prose for the section (may be empty).
    pub description: String,
    /// Features this section exercises (in addition to the scenario's).
    pub features: Vec<String>,
    pub rows: Vec<Row>,
}

/// One line of a trace table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Global step number within the run (1-based), for CSV/JSON consumers.
    pub step: usize,
    /// What happened; drives the sequence diagram.
    pub event: RowEvent,
    /// One cell per node, index 0 is `N-1`.
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Cell {
    /// `FLWR`, `CNDI` or `LEAD` (a crashed node shows `FLWR`).
    pub role: String,
    /// E.g. `p_v_r+N-1 t-1 li-0 lt-0`, `N-3+ae t-1 i-0 lt-0 e-1 c-0`, `NEW ROLE`; empty if none.
    pub op: String,
    /// E.g. `t-1 lt-1 li-1 ci-1`; empty if nothing changed.
    pub delta: String,
}

/// The event behind a row. Node numbers are 1-based.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RowEvent {
    /// `from` forwarded a message to `to`; `label` is the message text without the `code+N-x` prefix
    /// decoration, e.g. `p_v_r t-1 li-0 lt-0`. `delivered` is false when the message was lost
    /// (target crashed, blocked with drop, or on the other side of a split).
    Sent {
        from: usize,
        to: usize,
        label: String,
        delivered: bool,
    },
    /// `node` handled a message that came from `from`.
    Handled {
        node: usize,
        from: usize,
        label: String,
    },
    /// A node-local event without a message: `NEW ROLE`, `CMD START`, `CMD DONE`, `CRASH`, `RESTART`,
    /// `STARTED`, ...; `text` is what the Op cell shows.
    Note { node: usize, text: String },
    /// The network was split (`NETSPLIT`) or healed (`NETJOIN`); `segments` lists node numbers per side.
    Network {
        text: String,
        segments: Vec<Vec<usize>>,
    },
}
