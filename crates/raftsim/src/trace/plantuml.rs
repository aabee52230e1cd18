//! PlantUML sequence diagrams, one per section.
//!
//! Delivered sends are arrows (`n3 -> n1: label`), lost sends end in a cross (`n3 ->x n1: label`),
//! notes sit over their node (`NEW ROLE` shows the node's role after the change) and network
//! changes are dividers. Handled rows draw nothing: the arrow already shows the message.

use super::helpers::node_label;
use super::{Row, RowEvent, Section, Trace};

/// Renders every section's diagram, separated by a blank line.
pub fn render(trace: &Trace) -> String {
    let diagrams: Vec<String> = trace
        .sections
        .iter()
        .map(|s| render_section(trace, s))
        .collect();
    diagrams.join("\n")
}

/// Renders one section as a complete `@startuml` .. `@enduml` sequence diagram.
pub fn render_section(trace: &Trace, section: &Section) -> String {
    let mut out = String::from("@startuml\n");
    out.push_str(&format!(
        "title {} section {}: {}\n",
        trace.name, section.number, section.title
    ));
    for node in 1..=trace.column_count() {
        out.push_str(&format!(
            "participant \"{}\" as {}\n",
            node_label(node),
            alias(node)
        ));
    }
    for row in &section.rows {
        if let Some(line) = event_line(row) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push_str("@enduml\n");
    out
}

/// The diagram line for a row, if its event draws anything.
fn event_line(row: &Row) -> Option<String> {
    match &row.event {
        RowEvent::Sent {
            from,
            to,
            label,
            delivered,
        } => {
            let arrow = if *delivered { "->" } else { "->x" };
            Some(format!(
                "{} {arrow} {}: {}",
                alias(*from),
                alias(*to),
                one_line(label)
            ))
        }
        RowEvent::Handled { .. } => None,
        RowEvent::Note { node, text } => Some(note_line(row, *node, text)),
        RowEvent::Network { text, segments } => {
            let sides: Vec<String> = segments.iter().map(|s| segment(s)).collect();
            let divider = [one_line(text)]
                .into_iter()
                .chain(sides)
                .collect::<Vec<_>>()
                .join(" ");
            Some(format!("== {divider} =="))
        }
    }
}

/// `note over n3: NEW ROLE (LEAD)` for a role change, `note over n3: <text>` otherwise.
fn note_line(row: &Row, node: usize, text: &str) -> String {
    let role = node
        .checked_sub(1)
        .map(|i| row.cell(i).role.as_str())
        .unwrap_or("");
    if text == "NEW ROLE" && !role.is_empty() {
        format!("note over {}: NEW ROLE ({role})", alias(node))
    } else {
        format!("note over {}: {}", alias(node), one_line(text))
    }
}

/// One side of a split, e.g. `[1,2]`.
fn segment(nodes: &[usize]) -> String {
    let numbers: Vec<String> = nodes.iter().map(usize::to_string).collect();
    format!("[{}]", numbers.join(","))
}

/// The participant alias of a 1-based node, e.g. `n3`.
fn alias(node: usize) -> String {
    format!("n{node}")
}

/// Text safe for a single diagram line (newlines would end the statement).
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Cell;

    fn row(event: RowEvent, roles: [&str; 3]) -> Row {
        let cells = roles
            .iter()
            .map(|r| Cell {
                role: r.to_string(),
                ..Cell::default()
            })
            .collect();
        Row {
            step: 1,
            event,
            cells,
        }
    }

    fn sample() -> Trace {
        let label = "p_v_r t-1 li-0 lt-0".to_string();
        let rows = vec![
            row(
                RowEvent::Note {
                    node: 3,
                    text: "NEW ROLE".into(),
                },
                ["FLWR", "FLWR", "CNDI"],
            ),
            row(
                RowEvent::Sent {
                    from: 3,
                    to: 1,
                    label: label.clone(),
                    delivered: true,
                },
                ["FLWR"; 3],
            ),
            row(
                RowEvent::Handled {
                    node: 1,
                    from: 3,
                    label: label.clone(),
                },
                ["FLWR"; 3],
            ),
            row(
                RowEvent::Sent {
                    from: 3,
                    to: 2,
                    label,
                    delivered: false,
                },
                ["FLWR"; 3],
            ),
            row(
                RowEvent::Note {
                    node: 2,
                    text: "CRASH".into(),
                },
                ["FLWR"; 3],
            ),
            row(
                RowEvent::Network {
                    text: "NETSPLIT".into(),
                    segments: vec![vec![1, 2], vec![3]],
                },
                ["FLWR"; 3],
            ),
        ];
        let section = Section {
            number: 1,
            title: "Election".into(),
            rows,
            ..Section::default()
        };
        Trace {
            name: "demo".into(),
            node_count: 3,
            sections: vec![section.clone(), section],
            ..Trace::default()
        }
    }

    #[test]
    fn section_diagram_lines() {
        let trace = sample();
        let text = render_section(&trace, &trace.sections[0]);
        let expected = "@startuml\n\
            title demo section 1: Election\n\
            participant \"N-1\" as n1\nparticipant \"N-2\" as n2\nparticipant \"N-3\" as n3\n\
            note over n3: NEW ROLE (CNDI)\n\
            n3 -> n1: p_v_r t-1 li-0 lt-0\n\
            n3 ->x n2: p_v_r t-1 li-0 lt-0\n\
            note over n2: CRASH\n\
            == NETSPLIT [1,2] [3] ==\n\
            @enduml\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn whole_trace_separates_diagrams_with_a_blank_line() {
        let text = render(&sample());
        assert_eq!(text.matches("@startuml").count(), 2);
        assert!(text.contains("@enduml\n\n@startuml\n"));
        assert!(text.ends_with("@enduml\n"));
    }

    #[test]
    fn join_without_segments_is_a_plain_divider() {
        let event = RowEvent::Network {
            text: "NETJOIN".into(),
            segments: vec![],
        };
        assert_eq!(
            event_line(&row(event, ["FLWR"; 3])).as_deref(),
            Some("== NETJOIN ==")
        );
    }
}
