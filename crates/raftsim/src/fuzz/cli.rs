//! `raftsim fuzz`: many seeds with a progress bar; failures shrunk and written to files.

use super::{replay, run_seed, scenario_text, shrink, FuzzOptions};

use crate::docs::{self, Format};
use crate::scenario;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct FuzzRun {
    pub seeds: u64,
    pub start: u64,
    pub options: FuzzOptions,
    pub failures: PathBuf,
    pub fail_fast: bool,
    pub quiet: bool,
    /// Write every seed's history as JSON lines here (failures always get theirs).
    pub histories: Option<PathBuf>,
}

/// Replays allowed while shrinking one failure.
const SHRINK_REPLAYS: usize = 2000;

pub fn run(run: FuzzRun) -> Result<(), String> {
    let bar = if run.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(run.seeds)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} seeds  {per_sec}  {msg}",
        )
        .map_err(|e| e.to_string())?
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut operations = 0;
    for seed in run.start..run.start + run.seeds {
        let report = run_seed(seed, run.options);
        operations += report.operations;
        if let Some(dir) = &run.histories {
            write_history(
                &dir.join(format!("seed_{seed}.history.jsonl")),
                &report.history,
            )?;
        }
        if let Some(violation) = &report.violation {
            bar.println(format!("seed {seed}: {violation}"));
            let (commands, violation) = shrink(
                &report.settings,
                &report.commands,
                violation,
                SHRINK_REPLAYS,
            );
            let path = write_failure(&run.failures, seed, &report.settings, &violation, &commands)?;
            write_history(&path.with_extension("history.jsonl"), &report.history)?;
            bar.println(format!(
                "  shrunk from {} to {} commands: {}",
                report.commands.len(),
                commands.len(),
                path.display()
            ));
            failed.push(seed);
            if run.fail_fast {
                break;
            }
        }
        bar.inc(1);
        bar.set_message(format!("{} failed", failed.len()));
    }
    bar.finish();
    let elapsed = started.elapsed().as_secs_f64();
    let done = bar.position();
    println!(
        "{done} seeds ({} nodes, {} steps each), {operations} client operations, {:.1} s, {:.1} seeds/s, {} failed{}",
        run.options.nodes,
        run.options.steps,
        elapsed,
        done as f64 / elapsed.max(1e-9),
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(": seeds {failed:?}")
        }
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} seeds failed", failed.len()))
    }
}

fn write_failure(
    dir: &Path,
    seed: u64,
    settings: &crate::cluster::ClusterSettings,
    violation: &super::Violation,
    commands: &[scenario::Command],
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let slug: String = violation
        .property
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = dir.join(format!("seed_{seed}_{slug}.scn"));
    std::fs::write(&path, scenario_text(seed, settings, violation, commands))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // The trace document beside it; a run that stops with an error still renders its rows.
    let trace = docs::run_file_lenient(&path);
    let trace_path = path.with_extension("trace.md");
    std::fs::write(&trace_path, Format::Markdown.render(&trace))
        .map_err(|e| format!("{}: {e}", trace_path.display()))?;
    Ok(path)
}

/// The clients' history as JSON lines (`lincheck`'s format), for external checkers.
fn write_history(path: &Path, history: &[lincheck::Operation]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    lincheck::write_jsonl(history, std::io::BufWriter::new(file))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Replays a scenario file (a saved failure, or any scenario) with every check.
pub fn replay_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let parsed = scenario::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())?;
    let commands: Vec<scenario::Command> = parsed.steps.into_iter().map(|s| s.command).collect();
    match replay(&parsed.settings, &commands) {
        None => {
            println!("{}: every check passes", path.display());
            Ok(())
        }
        Some(v) => {
            eprint!("{}", super::explain(&parsed.settings, &commands));
            Err(format!("{}: {v}", path.display()))
        }
    }
}
