//! JSON rendering: the trace model as pretty-printed JSON, for tools.

use super::Trace;

/// Renders the trace as pretty-printed JSON followed by a newline.
pub fn render(trace: &Trace) -> String {
    // The model holds only strings, numbers, vectors and structs (no maps with non-string keys,
    // no custom Serialize impls), so serialization cannot fail.
    let mut text = serde_json::to_string_pretty(trace).expect("the trace model always serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Cell, Row, RowEvent, Section};

    #[test]
    fn round_trips_key_fields() {
        let row = Row {
            step: 3,
            event: RowEvent::Sent {
                from: 3,
                to: 1,
                label: "p_v_r t-1 li-0 lt-0".into(),
                delivered: false,
            },
            cells: vec![Cell {
                role: "CNDI".into(),
                op: "p_v_r+N-1 t-1 li-0 lt-0".into(),
                delta: String::new(),
            }],
        };
        let section = Section {
            number: 1,
            title: "Election".into(),
            rows: vec![row],
            ..Section::default()
        };
        let trace = Trace {
            name: "demo".into(),
            node_count: 1,
            sections: vec![section],
            ..Trace::default()
        };
        let text = render(&trace);
        assert!(text.ends_with("}\n"));
        assert!(text.contains("\"name\": \"demo\""));
        let value: serde_json::Value =
            serde_json::from_str(&text).expect("render emits valid JSON");
        let event = &value["sections"][0]["rows"][0]["event"];
        assert_eq!(event["kind"], "sent");
        assert_eq!(event["delivered"], false);
        assert_eq!(value["sections"][0]["rows"][0]["cells"][0]["role"], "CNDI");
    }
}
