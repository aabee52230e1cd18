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
