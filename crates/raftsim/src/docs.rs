//! Files: running scenario files, golden traces beside them, generated docs under docs/scenarios.

use crate::runner;
use crate::scenario;
use crate::trace::{self, Trace};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Rst,
    Markdown,
    Csv,
    Json,
    PlantUml,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Rst => "rst",
            Format::Markdown => "md",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::PlantUml => "puml",
        }
    }

    pub fn render(self, trace: &Trace) -> String {
        match self {
            Format::Rst => trace::rst::render(trace),
            Format::Markdown => trace::markdown::render(trace),
            Format::Csv => trace::csv::render(trace),
            Format::Json => trace::json::render(trace),
            Format::PlantUml => trace::plantuml::render(trace),
        }
    }
}

/// Parses and runs one scenario file; a failure names the file and line.
pub fn run_file(path: &Path) -> Result<Trace, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let parsed = scenario::parse(&path.to_string_lossy(), &text).map_err(|e| e.to_string())?;
    let (trace, result) = runner::run(&parsed);
    result.map_err(|e| e.to_string())?;
    Ok(trace)
}

/// The trace of a scenario even when it stops on an error (the rows up to there); an unreadable
/// file gives an empty trace.
pub fn run_file_lenient(path: &Path) -> Trace {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Trace::default();
    };
    match scenario::parse(&path.to_string_lossy(), &text) {
        Ok(parsed) => runner::run(&parsed).0,
        Err(_) => Trace::default(),
    }
}

pub fn run_one(path: &Path, format: Format, out: Option<&Path>) -> Result<(), String> {
    let trace = run_file(path)?;
    let text = format.render(&trace);
    match out {
        None => print!("{text}"),
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let file = dir.join(format!("{}.{}", trace.name, format.extension()));
            write(&file, &text)?;
            if format == Format::Rst {
                for section in &trace.sections {
                    let puml = dir.join(format!("{}_{}.puml", trace.name, section.number));
                    write(&puml, &trace::plantuml::render_section(&trace, section))?;
                }
            }
        }
    }
    Ok(())
}

/// Every `.scn` file under `dir`, sorted, so runs and the index are stable.
pub fn scenario_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "scn") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The files a scenario produces: (path, expected content). The golden RST sits beside the
/// scenario; the docs get RST, Markdown and one PlantUML file per section.
fn expected_files(scn: &Path, dir: &Path, docs: &Path, trace: &Trace) -> Vec<(PathBuf, String)> {
    let rst = trace::rst::render(trace);
    let relative = scn.strip_prefix(dir).unwrap_or(scn).with_extension("");
    let doc_dir = docs.join(relative.parent().unwrap_or(Path::new("")));
    let mut files = vec![
        (scn.with_extension("trace.rst"), rst.clone()),
        (doc_dir.join(format!("{}.rst", trace.name)), rst),
        (
            doc_dir.join(format!("{}.md", trace.name)),
            trace::markdown::render(trace),
        ),
    ];
    for section in &trace.sections {
        let puml = trace::plantuml::render_section(trace, section);
        files.push((
            doc_dir.join(format!("{}_{}.puml", trace.name, section.number)),
            puml,
        ));
    }
    files
}

/// Runs every scenario; compares (or rewrites) goldens, docs and the feature index.
pub fn check_all(dir: &Path, docs: &Path, rewrite: bool) -> Result<(), String> {
    let mut problems = String::new();
    let mut all = Vec::new();
    let mut index_entries = Vec::new();
    let files = scenario_files(dir)?;
    for scn in &files {
        match run_file(scn) {
            Ok(trace) => {
                let relative = scn.strip_prefix(dir).unwrap_or(scn).with_extension("rst");
                index_entries.push((trace.clone(), relative.to_string_lossy().into_owned()));
                all.extend(expected_files(scn, dir, docs, &trace));
            }
            Err(e) => {
                let _ = writeln!(problems, "FAILED {e}");
            }
        }
    }
    all.push((
        docs.join("index.rst"),
        trace::index::render_feature_index(&index_entries),
    ));
    let mut stale = 0;
    for (path, content) in &all {
        if rewrite {
            write(path, content)?;
        } else if std::fs::read_to_string(path).ok().as_deref() != Some(content.as_str()) {
            stale += 1;
            let _ = writeln!(
                problems,
                "STALE {} (run `raftsim check --rewrite` and review the diff)",
                path.display()
            );
        }
    }
    println!(
        "{} scenarios, {} files {}",
        files.len(),
        all.len(),
        if rewrite { "written" } else { "compared" }
    );
    if problems.is_empty() {
        println!("{} passed, 0 failed", files.len());
        Ok(())
    } else {
        print!("{problems}");
        let failed = problems.lines().filter(|l| l.starts_with("FAILED")).count();
        Err(format!(
            "{failed} scenarios failed, {stale} files differ from their golden/doc"
        ))
    }
}

fn write(path: &Path, content: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(path, content).map_err(|e| format!("{}: {e}", path.display()))
}
