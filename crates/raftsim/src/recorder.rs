//! Builds trace rows: every node's role, the op of the node(s) an event concerns, and each node's
//! delta since the previous row of the section.

use crate::trace::{Cell, Row, RowEvent, Section, Trace};
use std::fmt::Write;

/// What the delta column compares from row to row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub role: &'static str,
    pub term: u64,
    pub last_term: u64,
    pub last_index: u64,
    pub commit: u64,
    /// 1 on the majority side (or no split), 2 on a minority side.
    pub net: u8,
    /// The configuration in effect, in `cfg-` notation (see [`config_text`]).
    pub config: String,
}

/// A configuration in trace notation: voters by number (`1,2,3`); during a joint change C_new
/// then C_old (`2,4,5/1,2,3`); learners after a tilde (`1,2,3~4`); `none` for a node that knows
/// no configuration yet.
pub fn config_text(m: &raftengine::Membership) -> String {
    let list = |set: &std::collections::BTreeSet<raftengine::NodeId>| {
        set.iter()
            .map(|n| n.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    if m.voters.is_empty() && m.learners.is_empty() {
        return "none".into();
    }
    let mut text = list(&m.voters);
    if m.is_joint() {
        text.push('/');
        text.push_str(&list(&m.outgoing));
    }
    if !m.learners.is_empty() {
        text.push('~');
        text.push_str(&list(&m.learners));
    }
    text
}

#[derive(Debug, Default)]
pub struct Recorder {
    pub trace: Trace,
    previous: Option<Vec<NodeView>>,
    step: usize,
}

impl Recorder {
    pub fn new(node_count: usize) -> Recorder {
        let trace = Trace {
            node_count,
            ..Trace::default()
        };
        Recorder {
            trace,
            previous: None,
            step: 0,
        }
    }

    pub fn start_section(&mut self, title: &str) {
        let number = self.trace.sections.len() + 1;
        let section = Section {
            number,
            title: title.to_string(),
            ..Section::default()
        };
        self.trace.sections.push(section);
        self.previous = None;
    }

    pub fn current_section(&mut self) -> &mut Section {
        if self.trace.sections.is_empty() {
            self.start_section("Setup");
        }
        let last = self.trace.sections.len() - 1;
        &mut self.trace.sections[last]
    }

    /// Adds a row. `ops` gives the Op cell text of the nodes the event concerns (0-based).
    pub fn row(&mut self, event: RowEvent, ops: &[(usize, String)], views: Vec<NodeView>) {
        self.step += 1;
        let mut cells: Vec<Cell> = views
            .iter()
            .enumerate()
            .map(|(i, v)| Cell {
                role: v.role.to_string(),
                op: String::new(),
                delta: self
                    .previous
                    .as_ref()
                    .map(|p| delta(&p[i], v))
                    .unwrap_or_default(),
            })
            .collect();
        for (node, op) in ops {
            if let Some(cell) = cells.get_mut(*node) {
                cell.op = op.clone();
            }
        }
        self.previous = Some(views);
        let step = self.step;
        self.current_section().rows.push(Row { step, event, cells });
    }
}

fn delta(before: &NodeView, after: &NodeView) -> String {
    let mut out = String::new();
    let mut put = |name: &str, old: u64, new: u64| {
        if old != new {
            if !out.is_empty() {
                out.push(' ');
            }
            // Writing to a String cannot fail.
            let _ = write!(out, "{name}-{new}");
        }
    };
    put("t", before.term, after.term);
    put("lt", before.last_term, after.last_term);
    put("li", before.last_index, after.last_index);
    put("ci", before.commit, after.commit);
    if before.net != after.net {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "n={}", after.net);
    }
    if before.config != after.config {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "cfg-{}", after.config);
    }
    out
}
