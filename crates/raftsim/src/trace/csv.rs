//! CSV rendering: one record per row, for spreadsheets and scripts.
//!
//! Columns: `section,section_title,step,event`, then `N-k role,N-k op,N-k delta` for every node.

use super::helpers::node_label;
use super::{Row, RowEvent, Trace};

/// Renders every row of every section as CSV, header first.
pub fn render(trace: &Trace) -> String {
    let columns = trace.column_count();
    let mut writer = ::csv::Writer::from_writer(Vec::new());
    // A Vec-backed csv writer cannot fail, and every record has the header's length (here and
    // below), so `expect` cannot trigger.
    writer
        .write_record(header(columns))
        .expect("writing CSV to a Vec cannot fail");
    for section in &trace.sections {
        for row in &section.rows {
            let mut record = vec![section.number.to_string(), section.title.clone()];
            record.push(row.step.to_string());
            record.push(event_text(&row.event));
            record.extend(cell_texts(row, columns));
            writer
                .write_record(&record)
                .expect("writing CSV to a Vec cannot fail");
        }
    }
    let bytes = writer
        .into_inner()
        .expect("flushing CSV into a Vec cannot fail");
    // Only `String`s (valid UTF-8) were written, and CSV quoting adds only ASCII.
    String::from_utf8(bytes).expect("CSV built from strings is UTF-8")
}

/// The header record for `columns` nodes.
fn header(columns: usize) -> Vec<String> {
    let fixed = ["section", "section_title", "step", "event"].map(String::from);
    let per_node = (1..=columns)
        .flat_map(|n| ["role", "op", "delta"].map(|c| format!("{} {c}", node_label(n))));
    fixed.into_iter().chain(per_node).collect()
}

/// Role, op and delta of every node, flattened.
fn cell_texts(row: &Row, columns: usize) -> impl Iterator<Item = String> + '_ {
    (0..columns)
        .map(|i| row.cell(i))
        .flat_map(|c| [c.role.clone(), c.op.clone(), c.delta.clone()])
}

/// A short description of the event, e.g. `sent N-3->N-1` or `handled N-1<-N-3`.
pub fn event_text(event: &RowEvent) -> String {
    match event {
        RowEvent::Sent {
            from,
            to,
            delivered,
            ..
        } => {
            let verb = if *delivered { "sent" } else { "lost" };
            format!("{verb} {}->{}", node_label(*from), node_label(*to))
        }
        RowEvent::Handled { node, from, .. } => {
            format!("handled {}<-{}", node_label(*node), node_label(*from))
        }
        RowEvent::Note { node, .. } => format!("note {}", node_label(*node)),
        RowEvent::Network { .. } => "network".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Cell, Section};

    fn row(step: usize, event: RowEvent, op: &str) -> Row {
        let cells = vec![
            Cell {
                role: "FLWR".into(),
                op: op.into(),
                delta: "t-1".into(),
            },
            Cell {
                role: "LEAD".into(),
                ..Cell::default()
            },
        ];
        Row { step, event, cells }
    }

    #[test]
    fn header_and_records() {
        let rows = vec![
            row(
                1,
                RowEvent::Sent {
                    from: 2,
                    to: 1,
                    label: "ae".into(),
                    delivered: true,
                },
                "",
            ),
            row(
                2,
                RowEvent::Handled {
                    node: 1,
                    from: 2,
                    label: "ae".into(),
                },
                "N-2+ae t-1, i-0",
            ),
        ];
        let section = Section {
            number: 1,
            title: "First, then".into(),
            rows,
            ..Section::default()
        };
        let trace = Trace {
            node_count: 2,
            sections: vec![section],
            ..Trace::default()
        };
        let expected = "section,section_title,step,event,N-1 role,N-1 op,N-1 delta,N-2 role,N-2 op,N-2 delta\n\
            1,\"First, then\",1,sent N-2->N-1,FLWR,,t-1,LEAD,,\n\
            1,\"First, then\",2,handled N-1<-N-2,FLWR,\"N-2+ae t-1, i-0\",t-1,LEAD,,\n";
        assert_eq!(render(&trace), expected);
    }

    #[test]
    fn event_texts() {
        let lost = RowEvent::Sent {
            from: 3,
            to: 1,
            label: String::new(),
            delivered: false,
        };
        assert_eq!(event_text(&lost), "lost N-3->N-1");
        assert_eq!(
            event_text(&RowEvent::Note {
                node: 3,
                text: "CRASH".into()
            }),
            "note N-3"
        );
        let split = RowEvent::Network {
            text: "NETSPLIT".into(),
            segments: vec![vec![1], vec![2]],
        };
        assert_eq!(event_text(&split), "network");
    }

    #[test]
    fn empty_trace_is_just_the_header() {
        assert_eq!(
            render(&Trace::default()),
            "section,section_title,step,event\n"
        );
    }
}
