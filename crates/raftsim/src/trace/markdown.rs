//! GitHub-flavoured Markdown rendering: title, features, description, and per section a table and
//! its PlantUML diagram in a fenced block.

use super::helpers::{dedent_lines, node_label};
use super::{plantuml, Row, Section, Trace};

/// Renders the whole scenario document.
pub fn render(trace: &Trace) -> String {
    let mut out = format!("# Test {} from file {}\n\n", trace.name, trace.source);
    if !trace.features.is_empty() {
        out.push_str(&format!("Features: {}\n\n", trace.features.join(", ")));
    }
    push_paragraph(&mut out, &trace.description);
    for section in &trace.sections {
        write_section(&mut out, trace, section);
    }
    out
}

/// Heading, description, table and diagram of one section.
fn write_section(out: &mut String, trace: &Trace, section: &Section) {
    out.push_str(&format!("## {}\n\n", section.heading()));
    push_paragraph(out, &section.description);
    for line in table_lines(section, trace.column_count()) {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("\n```plantuml\n");
    out.push_str(&plantuml::render_section(trace, section));
    out.push_str("```\n\n");
}

/// The text, dedented (so it is not taken for a code block), followed by a blank line.
fn push_paragraph(out: &mut String, text: &str) {
    let lines = dedent_lines(text);
    if lines.is_empty() {
        return;
    }
    out.push_str(&lines.join("\n"));
    out.push_str("\n\n");
}

/// Header, alignment line and one line per row.
pub fn table_lines(section: &Section, columns: usize) -> Vec<String> {
    let header: Vec<String> = (1..=columns)
        .flat_map(|n| ["Role", "Op", "Delta"].map(|name| format!("{} {name}", node_label(n))))
        .collect();
    let mut lines = vec![
        table_line(&header),
        table_line(&vec!["---".to_string(); header.len()]),
    ];
    lines.extend(
        section
            .rows
            .iter()
            .map(|row| table_line(&row_texts(row, columns))),
    );
    lines
}

/// Role, op and delta of every node, flattened and escaped.
fn row_texts(row: &Row, columns: usize) -> Vec<String> {
    (0..columns)
        .map(|i| row.cell(i))
        .flat_map(|c| [&c.role, &c.op, &c.delta])
        .map(|text| escape(text))
        .collect()
}

/// `| a | b |`; an empty cell shows as `|  |`.
fn table_line(cells: &[String]) -> String {
    format!("| {} |", cells.join(" | "))
}

/// Escapes what would break a table cell: `|` and line breaks.
fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Cell, RowEvent};

    fn sample() -> Trace {
        let cell = |role: &str, op: &str| Cell {
            role: role.into(),
            op: op.into(),
            delta: String::new(),
        };
        let row = Row {
            step: 7,
            event: RowEvent::Note {
                node: 1,
                text: "CMD START".into(),
            },
            cells: vec![cell("FLWR", "CMD a|b"), cell("LEAD", "")],
        };
        let section = Section {
            number: 2,
            title: "Command".into(),
            description: "  Runs a command.".into(),
            rows: vec![row],
            ..Section::default()
        };
        Trace {
            name: "demo".into(),
            source: "scenarios/demo.rsc".into(),
            description: "    Intro line.\n    More.\n".into(),
            features: vec!["log_replication".into(), "leader_election".into()],
            node_count: 2,
            sections: vec![section],
        }
    }

    #[test]
    fn document_key_lines() {
        let text = render(&sample());
        let expected_start = "# Test demo from file scenarios/demo.rsc\n\n\
            Features: log_replication, leader_election\n\n\
            Intro line.\nMore.\n\n\
            ## Section 2: Command\n\n\
            Runs a command.\n\n\
            | N-1 Role | N-1 Op | N-1 Delta | N-2 Role | N-2 Op | N-2 Delta |\n\
            | --- | --- | --- | --- | --- | --- |\n\
            | FLWR | CMD a\\|b |  | LEAD |  |  |\n\n\
            ```plantuml\n@startuml\ntitle demo section 2: Command\n";
        assert!(text.starts_with(expected_start), "got:\n{text}");
        assert!(
            text.ends_with("note over n1: CMD START\n@enduml\n```\n\n"),
            "got:\n{text}"
        );
    }

    #[test]
    fn no_features_line_without_features() {
        let trace = Trace {
            name: "x".into(),
            source: "y".into(),
            ..Trace::default()
        };
        assert_eq!(render(&trace), "# Test x from file y\n\n");
    }
}
