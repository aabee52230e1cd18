//! The feature index: an RST page listing each Raft feature with the scenarios that show it, then
//! every scenario with the first line of its description.
//!
//! Links are anonymous (`` `name <path>`__ ``) because a scenario is linked once per feature, and
//! repeated named links (`` `name <path>`_ ``) would define duplicate targets in docutils.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::Trace;

/// The page title.
pub const TITLE: &str = "Raft features and the scenarios that show them";

/// Renders the index page. Each entry of `docs` is a trace and the path of its rendered document,
/// relative to the index page. Features are sorted; scenarios keep the order of `docs`.
pub fn render_feature_index(docs: &[(Trace, String)]) -> String {
    let bar = "=".repeat(TITLE.len());
    let mut out = format!(".. _raft_feature_index:\n\n{bar}\n{TITLE}\n{bar}\n\n");
    out.push_str(
        "Each feature lists the scenarios that exercise it; the scenarios follow, each with\n",
    );
    out.push_str("the first line of its description.\n\n");
    write_features(&mut out, docs);
    write_scenarios(&mut out, docs);
    out
}

/// `Features` section: one definition-list entry per feature with the scenarios showing it.
fn write_features(out: &mut String, docs: &[(Trace, String)]) {
    out.push_str("Features\n========\n\n");
    let mut by_feature: BTreeMap<&str, Vec<&(Trace, String)>> = BTreeMap::new();
    for doc in docs {
        for feature in doc.0.all_features() {
            by_feature.entry(feature).or_default().push(doc);
        }
    }
    if by_feature.is_empty() {
        out.push_str("No scenario declares a feature.\n\n");
    }
    for (feature, shown_in) in by_feature {
        // Writing to a String cannot fail (here and below).
        writeln!(out, "``{feature}``").unwrap();
        for (trace, path) in shown_in {
            writeln!(out, "    - {}", link(trace, path)).unwrap();
        }
        out.push('\n');
    }
}

/// `Scenarios` section: every scenario with the first line of its description.
fn write_scenarios(out: &mut String, docs: &[(Trace, String)]) {
    out.push_str("Scenarios\n=========\n\n");
    if docs.is_empty() {
        out.push_str("No scenarios.\n");
    }
    for (trace, path) in docs {
        let summary = trace.summary();
        if summary.is_empty() {
            writeln!(out, "- {}", link(trace, path)).unwrap();
        } else {
            writeln!(out, "- {}: {summary}", link(trace, path)).unwrap();
        }
    }
}

/// An anonymous RST link to a scenario document, e.g. `` `test_command_1 <commands/x.rst>`__ ``.
fn link(trace: &Trace, path: &str) -> String {
    format!("`{} <{path}>`__", trace.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Section;

    fn doc(
        name: &str,
        features: &[&str],
        section_features: &[&str],
        description: &str,
    ) -> (Trace, String) {
        let section = Section {
            number: 1,
            features: section_features.iter().map(|f| f.to_string()).collect(),
            ..Section::default()
        };
        let trace = Trace {
            name: name.into(),
            description: description.into(),
            features: features.iter().map(|f| f.to_string()).collect(),
            sections: vec![section],
            ..Trace::default()
        };
        (trace, format!("scenarios/{name}.rst"))
    }

    #[test]
    fn features_sorted_with_their_scenarios() {
        let docs = [
            doc(
                "test_b",
                &["log_replication", "leader_election"],
                &["leader_election"],
                "\n  B does it.\nMore",
            ),
            doc("test_a", &[], &["crash_recovery", "leader_election"], ""),
        ];
        let text = render_feature_index(&docs);
        let bar = "=".repeat(TITLE.len());
        assert!(text.starts_with(&format!(
            ".. _raft_feature_index:\n\n{bar}\n{TITLE}\n{bar}\n\n"
        )));
        let expected = "Features\n========\n\n\
            ``crash_recovery``\n    - `test_a <scenarios/test_a.rst>`__\n\n\
            ``leader_election``\n    - `test_b <scenarios/test_b.rst>`__\n    - `test_a <scenarios/test_a.rst>`__\n\n\
            ``log_replication``\n    - `test_b <scenarios/test_b.rst>`__\n\n\
            Scenarios\n=========\n\n\
            - `test_b <scenarios/test_b.rst>`__: B does it.\n\
            - `test_a <scenarios/test_a.rst>`__\n";
        assert!(text.ends_with(expected), "got:\n{text}");
    }

    #[test]
    fn empty_index_says_so() {
        let text = render_feature_index(&[]);
        assert!(text.contains("No scenario declares a feature.\n"));
        assert!(text.ends_with("Scenarios\n=========\n\nNo scenarios.\n"));
    }
}
