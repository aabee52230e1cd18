//! reStructuredText rendering, laid out like `shared/seed/test_command_1.rst`.
//!
//! The PlantUML directive names the file `<name>_<k>.puml` relative to the document, because the
//! diagrams are written beside it (the seed used an absolute path).

use std::fmt::Write;

use super::helpers::{dedent_lines, node_label};
use super::{Row, Section, Trace};

/// Indentation of everything inside a `collapse` block.
const BLOCK_INDENT: &str = "   ";

/// Renders the whole scenario document.
pub fn render(trace: &Trace) -> String {
    let mut out = String::new();
    write_header(&mut out, trace);
    for section in &trace.sections {
        write_section(&mut out, trace, section);
    }
    out
}

/// Label, boxed title and the description indented by 4 spaces.
fn write_header(out: &mut String, trace: &Trace) {
    let title = format!("Test {} from file {}", trace.name, trace.source);
    let bar = "=".repeat(title.chars().count());
    // Writing to a String cannot fail.
    writeln!(out, ".. _{}:\n\n{bar}\n{title}\n{bar}\n\n", trace.name).unwrap();
    let description = dedent_lines(&trace.description);
    if description.is_empty() {
        return;
    }
    for line in description {
        push_line(out, "    ", &line);
    }
    out.push_str("\n\n");
}

/// One section: heading, description, the trace table and the diagram directive.
fn write_section(out: &mut String, trace: &Trace, section: &Section) {
    let heading = section.heading();
    let k = section.number;
    // Writing to a String cannot fail (here and below).
    writeln!(
        out,
        "{heading}\n{}\n\n",
        "=".repeat(heading.chars().count())
    )
    .unwrap();
    for line in dedent_lines(&section.description) {
        push_line(out, "", &line);
    }
    out.push_str("\n\n");
    writeln!(
        out,
        ".. collapse:: section {k} trace table (click to toggle view)\n"
    )
    .unwrap();
    writeln!(
        out,
        "{BLOCK_INDENT}- See :ref:`Trace Table Legend` for help interpreting table contents\n"
    )
    .unwrap();
    for line in table_lines(section, trace.column_count()) {
        push_line(out, BLOCK_INDENT, &line);
    }
    out.push_str("\n\n\n.. collapse:: trace sequence diagram (click to toggle view)\n\n");
    writeln!(out, "{BLOCK_INDENT}.. plantuml:: {}_{k}.puml", trace.name).unwrap();
    out.push_str("          :scale: 100%\n\n\n");
}

/// Appends `indent` + `line` + newline, leaving blank lines without trailing whitespace.
fn push_line(out: &mut String, indent: &str, line: &str) {
    if !line.is_empty() {
        out.push_str(indent);
        out.push_str(line);
    }
    out.push('\n');
}

/// The grid table of a section, unindented, one entry per line.
///
/// Each node has `Role`, `Op` and `Delta` columns; two header rows (node label, column name)
/// are separated from the body by a `=` line. A section without rows renders just the two header
/// rows, closed by a `-` line, since docutils rejects a table that ends with its `=` separator.
pub fn table_lines(section: &Section, columns: usize) -> Vec<String> {
    let labels: Vec<String> = (1..=columns)
        .flat_map(|n| std::iter::repeat_n(node_label(n), 3))
        .collect();
    let names: Vec<String> = (0..columns)
        .flat_map(|_| ["Role", "Op", "Delta"])
        .map(String::from)
        .collect();
    let body: Vec<Vec<String>> = section.rows.iter().map(|r| row_texts(r, columns)).collect();
    let mut widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for texts in [&labels, &names].into_iter().chain(&body) {
        for (width, text) in widths.iter_mut().zip(texts) {
            *width = (*width).max(text.chars().count());
        }
    }
    let mut lines = vec![rule(&widths, '-'), cells_line(&widths, &labels)];
    lines.push(rule(&widths, '-'));
    lines.push(cells_line(&widths, &names));
    lines.push(rule(&widths, if body.is_empty() { '-' } else { '=' }));
    for texts in &body {
        lines.push(cells_line(&widths, texts));
        lines.push(rule(&widths, '-'));
    }
    lines
}

/// Role, op and delta of every node, flattened.
fn row_texts(row: &Row, columns: usize) -> Vec<String> {
    (0..columns)
        .map(|i| row.cell(i))
        .flat_map(|c| [c.role.clone(), c.op.clone(), c.delta.clone()])
        .collect()
}

/// A separator line such as `+------+----+`.
fn rule(widths: &[usize], fill: char) -> String {
    let mut line = String::from("+");
    for width in widths {
        line.extend(std::iter::repeat_n(fill, width + 2));
        line.push('+');
    }
    line
}

/// A content line such as `| FLWR | CMD START |`.
fn cells_line(widths: &[usize], texts: &[String]) -> String {
    let mut line = String::from("|");
    for (width, text) in widths.iter().zip(texts) {
        let pad = width - text.chars().count();
        line.push(' ');
        line.push_str(text);
        line.extend(std::iter::repeat_n(' ', pad + 1));
        line.push('|');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Cell, RowEvent};

    /// Section 4 of the seed, lines 193-202, without the 3-space block indentation.
    const SEED_SECTION_4: &str = "\
+------+-----------+-------+------+-----+-------+------+-----+-------+
| N-1  | N-1       | N-1   | N-2  | N-2 | N-2   | N-3  | N-3 | N-3   |
+------+-----------+-------+------+-----+-------+------+-----+-------+
| Role | Op        | Delta | Role | Op  | Delta | Role | Op  | Delta |
+======+===========+=======+======+=====+=======+======+=====+=======+
| FLWR | CMD START |       | FLWR |     |       | LEAD |     |       |
+------+-----------+-------+------+-----+-------+------+-----+-------+
| FLWR | CMD DONE  |       | FLWR |     |       | LEAD |     |       |
+------+-----------+-------+------+-----+-------+------+-----+-------+";

    fn cell(role: &str, op: &str) -> Cell {
        Cell {
            role: role.into(),
            op: op.into(),
            delta: String::new(),
        }
    }

    fn note_row(step: usize, text: &str) -> Row {
        let event = RowEvent::Note {
            node: 1,
            text: text.into(),
        };
        Row {
            step,
            event,
            cells: vec![cell("FLWR", text), cell("FLWR", ""), cell("LEAD", "")],
        }
    }

    fn seed_section_4() -> Section {
        Section {
            number: 4,
            title: "Trying to run command at follower, looking for redirect".into(),
            rows: vec![note_row(1, "CMD START"), note_row(2, "CMD DONE")],
            ..Section::default()
        }
    }

    fn trace_with(sections: Vec<Section>, description: &str) -> Trace {
        Trace {
            name: "test_command_1".into(),
            source: "test_commands_1".into(),
            description: description.into(),
            node_count: 3,
            sections,
            ..Trace::default()
        }
    }

    #[test]
    fn table_matches_seed_section_4() {
        assert_eq!(table_lines(&seed_section_4(), 3).join("\n"), SEED_SECTION_4);
    }

    #[test]
    fn section_block_matches_seed_layout() {
        let text = render(&trace_with(vec![seed_section_4()], ""));
        let table: String = SEED_SECTION_4
            .lines()
            .map(|l| format!("   {l}\n"))
            .collect();
        let expected = format!(
            "Section 4: Trying to run command at follower, looking for redirect\n{}\n\n\n\n\n\
             .. collapse:: section 4 trace table (click to toggle view)\n\n   \
             - See :ref:`Trace Table Legend` for help interpreting table contents\n\n{table}\n\n\n\
             .. collapse:: trace sequence diagram (click to toggle view)\n\n   \
             .. plantuml:: test_command_1_4.puml\n          :scale: 100%\n\n\n",
            "=".repeat(66)
        );
        assert!(text.ends_with(&expected), "got:\n{text}");
    }

    #[test]
    fn header_boxes_title_and_indents_description() {
        let text = render(&trace_with(
            vec![],
            "  First line.\n\n  Second\n    nested\n",
        ));
        let bar = "=".repeat(45);
        let expected = format!(
            ".. _test_command_1:\n\n{bar}\nTest test_command_1 from file test_commands_1\n{bar}\n\n\n    \
             First line.\n\n    Second\n      nested\n\n\n"
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn section_description_is_a_paragraph() {
        let mut section = seed_section_4();
        section.description = "Why this matters.".into();
        let text = render(&trace_with(vec![section], ""));
        assert!(
            text.contains("=\n\n\nWhy this matters.\n\n\n.. collapse:: section 4"),
            "got:\n{text}"
        );
    }

    #[test]
    fn empty_section_keeps_both_header_rows() {
        let section = Section {
            number: 1,
            title: "t".into(),
            ..Section::default()
        };
        let lines = table_lines(&section, 2);
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[1], "| N-1  | N-1 | N-1   | N-2  | N-2 | N-2   |");
        assert_eq!(lines[3], "| Role | Op  | Delta | Role | Op  | Delta |");
        assert_eq!(lines[4], "+------+-----+-------+------+-----+-------+");
    }
}
