//! `raftsim`: run scenario files, check them against their golden traces, write the docs.

use clap::{Parser, Subcommand, ValueEnum};
use raftsim::docs::{self, Format};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "raftsim",
    about = "Deterministic Raft scenarios and their trace documents"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Rst,
    Md,
    Csv,
    Json,
    Puml,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one scenario and print (or write) its trace document.
    Run {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "rst")]
        format: FormatArg,
        /// Write `<name>.<ext>` into this directory instead of printing.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run every scenario and compare it with its golden trace and its generated docs.
    Check {
        #[arg(long, default_value = "scenarios")]
        dir: PathBuf,
        #[arg(long, default_value = "docs/scenarios")]
        docs: PathBuf,
        /// Rewrite goldens and docs instead of comparing (review the diff before committing).
        #[arg(long)]
        rewrite: bool,
    },
    /// Randomized fault simulation with safety, linearizability and liveness checks; failures are
    /// shrunk and written as scenario files.
    Fuzz {
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Random steps per seed before the liveness phase.
        #[arg(long, default_value_t = 1000)]
        steps: u64,
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=5))]
        nodes: u64,
        /// Where failing runs are written (scenario file and trace document).
        #[arg(long, default_value = "failures")]
        failures: PathBuf,
        /// Stop at the first failure.
        #[arg(long)]
        fail_fast: bool,
        /// Replay a scenario file with every check instead of generating runs.
        #[arg(long)]
        replay: Option<PathBuf>,
        /// No progress bar (for logs).
        #[arg(long)]
        quiet: bool,
        /// Also write every seed's client history as JSON lines into this directory.
        #[arg(long)]
        histories: Option<PathBuf>,
        /// Read with leases on every seed while clocks drift beyond the bound the lease
        /// documents: a labelled mode, expected to find stale reads.
        #[arg(long)]
        lease_beyond_drift_bound: bool,
        /// Switch on a known protocol bug (builds with the `mutations` feature only), e.g.
        /// CommitPreviousTerm, to see the checkers catch it.
        #[cfg(feature = "mutations")]
        #[arg(long)]
        mutation: Option<String>,
    },
    /// Core micro-benchmark: entries committed per second through 3 in-process nodes, no I/O.
    Bench {
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        /// Proposals per round (entries batched per AppendEntries when up to max_entries).
        #[arg(long, default_value_t = 64)]
        batch: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run { file, format, out } => docs::run_one(&file, format.into(), out.as_deref()),
        Cmd::Check {
            dir,
            docs: docs_dir,
            rewrite,
        } => docs::check_all(&dir, &docs_dir, rewrite),
        Cmd::Fuzz {
            seeds,
            start,
            steps,
            nodes,
            failures,
            fail_fast,
            replay,
            quiet,
            histories,
            lease_beyond_drift_bound,
            #[cfg(feature = "mutations")]
            mutation,
        } => match replay {
            Some(file) => raftsim::fuzz::cli::replay_file(&file),
            None => {
                let mut options = raftsim::fuzz::FuzzOptions::new(nodes as usize, steps);
                if lease_beyond_drift_bound {
                    options = options.with_lease_beyond_drift_bound();
                }
                #[cfg(feature = "mutations")]
                let options = match mutation.as_deref() {
                    None => options,
                    Some(name) => match raftengine::Mutation::named(name) {
                        Some(m) => options.with_mutation(Some(m)),
                        None => {
                            eprintln!("raftsim: no mutation named {name}");
                            return ExitCode::FAILURE;
                        }
                    },
                };
                raftsim::fuzz::cli::run(raftsim::fuzz::cli::FuzzRun {
                    seeds,
                    start,
                    options,
                    failures,
                    fail_fast,
                    quiet,
                    histories,
                })
            }
        },
        Cmd::Bench { entries, batch } => {
            raftsim::bench::run(entries, batch).map(|report| println!("{report}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftsim: {e}");
            ExitCode::FAILURE
        }
    }
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Rst => Format::Rst,
            FormatArg::Md => Format::Markdown,
            FormatArg::Csv => Format::Csv,
            FormatArg::Json => Format::Json,
            FormatArg::Puml => Format::PlantUml,
        }
    }
}
