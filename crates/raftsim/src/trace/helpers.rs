//! Small read-only helpers over the trace model, shared by the renderers.

use std::collections::BTreeSet;

use super::{Cell, Row, Section, Trace};

/// A cell for a node the row has no entry for (renderers treat it as blank).
static EMPTY_CELL: Cell = Cell {
    role: String::new(),
    op: String::new(),
    delta: String::new(),
};

impl Trace {
    /// Number of node columns to render: `node_count`, widened if any row carries more cells.
    pub fn column_count(&self) -> usize {
        let widest = self
            .sections
            .iter()
            .flat_map(|s| &s.rows)
            .map(|r| r.cells.len())
            .max();
        self.node_count.max(widest.unwrap_or(0))
    }

    /// Every feature the trace shows: its own plus each section's, sorted and without duplicates.
    pub fn all_features(&self) -> BTreeSet<&str> {
        let own = self.features.iter();
        let per_section = self.sections.iter().flat_map(|s| &s.features);
        own.chain(per_section).map(String::as_str).collect()
    }

    /// The first non-blank line of the description, trimmed; empty if there is none.
    pub fn summary(&self) -> &str {
        self.description
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
    }
}

impl Section {
    /// The section's heading text, `Section k: <title>`.
    pub fn heading(&self) -> String {
        format!("Section {}: {}", self.number, self.title)
    }
}

impl Row {
    /// The cell of node `index` (0-based); a blank cell if the row has none for it.
    pub fn cell(&self, index: usize) -> &Cell {
        self.cells.get(index).unwrap_or(&EMPTY_CELL)
    }
}

/// The label of 1-based node `node`, e.g. `N-3`.
pub fn node_label(node: usize) -> String {
    format!("N-{node}")
}

/// The text's lines with common indentation, trailing whitespace and outer blank lines removed.
pub fn dedent_lines(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let first = lines.iter().position(|l| !l.is_empty());
    let last = lines.iter().rposition(|l| !l.is_empty());
    let (Some(first), Some(last)) = (first, last) else {
        return Vec::new();
    };
    let body = &lines[first..=last];
    let indent_of = |l: &&str| l.chars().take_while(|c| c.is_whitespace()).count();
    let common = body
        .iter()
        .filter(|l| !l.is_empty())
        .map(indent_of)
        .min()
        .unwrap_or(0);
    // Non-empty lines start with at least `common` whitespace chars; empty lines skip to "".
    body.iter()
        .map(|l| l.chars().skip(common).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::RowEvent;

    fn row(cells: usize) -> Row {
        let event = RowEvent::Network {
            text: "NETJOIN".into(),
            segments: vec![],
        };
        Row {
            step: 1,
            event,
            cells: vec![Cell::default(); cells],
        }
    }

    #[test]
    fn column_count_widens_to_the_widest_row() {
        let section = Section {
            rows: vec![row(4)],
            ..Section::default()
        };
        let trace = Trace {
            node_count: 3,
            sections: vec![section],
            ..Trace::default()
        };
        assert_eq!(trace.column_count(), 4);
        assert_eq!(trace.sections[0].rows[0].cell(9), &Cell::default());
    }

    #[test]
    fn features_merge_trace_and_sections() {
        let section = Section {
            features: vec!["b".into(), "a".into()],
            ..Section::default()
        };
        let trace = Trace {
            features: vec!["b".into()],
            sections: vec![section],
            ..Trace::default()
        };
        assert_eq!(
            trace.all_features().into_iter().collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn summary_is_first_non_blank_line() {
        let trace = Trace {
            description: "\n   \n  First line.  \nSecond".into(),
            ..Trace::default()
        };
        assert_eq!(trace.summary(), "First line.");
        assert_eq!(Trace::default().summary(), "");
    }

    #[test]
    fn dedent_removes_common_indent_and_outer_blanks() {
        let lines = dedent_lines("\n    a  \n   \n      b\n    c\n\n");
        assert_eq!(lines, ["a", "", "  b", "c"]);
        assert!(dedent_lines(" \n\t\n").is_empty());
    }
}
