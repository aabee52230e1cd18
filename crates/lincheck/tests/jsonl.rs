//! The JSON-lines history format.

mod common;

use common::{cas, generate, put, Builder, GenConfig};
use lincheck::{check, read_jsonl, write_jsonl, CheckResult, HistoryError, Operation};

fn to_jsonl(history: &[Operation]) -> String {
    let mut buffer = Vec::new();
    write_jsonl(history, &mut buffer).expect("writing to memory cannot fail");
    String::from_utf8(buffer).expect("JSON is UTF-8")
}

#[test]
fn round_trip_preserves_every_field() {
    let mut history = Builder::new()
        .put(0, 1, "x", "1")
        .get(2, 3, "x", Some("1"))
        .get(2, 3, "y", None)
        .delete(4, 5, "x", true)
        .cas(6, 7, "x", None, "2", true)
        .cas(8, 9, "x", Some("2"), "3", false)
        .unknown(10, put("x", "4"))
        .timed_out(11, 15, cas("x", Some("4"), "5"))
        .build();
    history.extend(generate(
        7,
        GenConfig {
            clients: 3,
            keys: 2,
            ops: 50,
            unknown_per_mille: 200,
            max_latency: 5,
            hot_key_per_mille: 0,
        },
    ));
    for (index, op) in history.iter_mut().enumerate() {
        op.id = index as u64; // the two parts overlap in ids
    }

    let text = to_jsonl(&history);
    assert_eq!(text.lines().count(), history.len());
    let read = read_jsonl(text.as_bytes()).expect("own output must parse");
    assert_eq!(read, history);
}

#[test]
fn format_is_readable_json_per_line() {
    let history = Builder::new()
        .put(3, 7, "x", "a")
        .unknown(4, cas("x", None, "b"))
        .get(8, 9, "x", Some("a"))
        .build();
    let expected = concat!(
        r#"{"id":1,"client":1,"call":3,"ret":7,"input":{"op":"put","key":"x","value":"a"},"output":{"op":"put"}}"#,
        "\n",
        r#"{"id":2,"client":2,"call":4,"ret":null,"input":{"op":"cas","key":"x","expected":null,"new":"b"},"output":null}"#,
        "\n",
        r#"{"id":3,"client":3,"call":8,"ret":9,"input":{"op":"get","key":"x"},"output":{"op":"get","value":"a"}}"#,
        "\n",
    );
    assert_eq!(to_jsonl(&history), expected);
}

#[test]
fn blank_lines_are_skipped() {
    let text = format!(
        "\n{}\n   \n",
        to_jsonl(&Builder::new().put(0, 1, "x", "1").build()).trim_end()
    );
    let read = read_jsonl(text.as_bytes()).expect("blank lines are fine");
    assert_eq!(read.len(), 1);
    assert!(matches!(check(&read), CheckResult::Linearizable));
}

#[test]
fn bad_line_reports_its_line_number() {
    let good = to_jsonl(
        &Builder::new()
            .put(0, 1, "x", "1")
            .get(2, 3, "x", Some("1"))
            .build(),
    );
    let bad_lines = [
        "not json",
        r#"{"id":3,"client":0,"call":0,"ret":1,"input":{"op":"frobnicate","key":"x"},"output":null}"#,
        r#"{"id":3,"client":0,"call":0,"ret":1,"input":{"op":"get","key":"x"}}"#,
        r#"{"id":3,"client":0,"call":0,"ret":1,"input":{"op":"get","key":"x"},"output":null,"extra":1}"#,
        r#"{"id":-3,"client":0,"call":0,"ret":1,"input":{"op":"get","key":"x"},"output":null}"#,
        r#"{"id":3,"client":0,"call":0,"ret":1,"input":{"op":"get","key":"x"},"output":{"op":"get","value":"1","typo":2}}"#,
    ];
    for bad in bad_lines {
        let text = format!("{good}{bad}\n{good}");
        match read_jsonl(text.as_bytes()) {
            Err(error @ HistoryError::Parse { line: 3, .. }) => {
                assert!(error.to_string().starts_with("line 3: "), "{error}");
            }
            other => panic!("{bad}: expected a parse error on line 3, got {other:?}"),
        }
    }
}

#[test]
fn invalid_utf8_reports_its_line_number() {
    let mut bytes = to_jsonl(&Builder::new().put(0, 1, "x", "1").build()).into_bytes();
    bytes.extend_from_slice(b"{\"id\":\xff}\n");
    assert!(matches!(
        read_jsonl(bytes.as_slice()),
        Err(HistoryError::Io { line: 2, .. })
    ));
}

#[test]
fn well_formed_lines_with_inconsistent_content_fail_validation_not_parsing() {
    // A put answered with a get output parses, and is then rejected by check.
    let text = r#"{"id":1,"client":0,"call":0,"ret":1,"input":{"op":"put","key":"x","value":"1"},"output":{"op":"get","value":null}}"#;
    let history = read_jsonl(text.as_bytes()).expect("syntactically fine");
    assert!(matches!(
        check(&history),
        CheckResult::Invalid(HistoryError::OutputMismatch { id: 1, .. })
    ));
}
