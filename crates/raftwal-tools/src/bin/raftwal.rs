//! raftwal: the operator's tool for a node's data directory.
//!
//! ```text
//! raftwal clear-broken --data-dir DIR   remove DIR/BROKEN after checking the data
//! ```
//!
//! A node that stopped on a fatal error (not an I/O failure: the log recovers from those by
//! itself) leaves a `BROKEN` marker, and refuses to start until it is cleared. The node must be
//! stopped: the command takes the directory's lock. Exit codes: 0 done (or nothing to clear),
//! 1 failed (the message says why), 2 usage.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "raftwal",
    about = "Operator commands for a raftwal data directory"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Remove the BROKEN marker a fatal error left, so the node may start again.
    ClearBroken {
        /// The node's data directory (the one holding wal/ and BROKEN).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let Command::ClearBroken { data_dir } = Args::parse().command;
    match raftwal::clear_broken_report(&data_dir) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raftwal clear-broken: {e}");
            ExitCode::FAILURE
        }
    }
}
