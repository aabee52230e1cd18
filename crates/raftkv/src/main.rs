//! `raftkv`: a replicated key-value service whose client port speaks RESP2.
//!
//! `raftkv serve` runs one node; see `raftkv serve --help` and `examples/raftkv.toml`.

use clap::{Parser, Subcommand};
use raftkv::config::ServeArgs;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

// Under load, glibc's allocator took about a seventh of a node's CPU (frames, entries, replies,
// keys); with mimalloc, puts at 64 and 256 clients run about 40% faster (docs/benchmarks/durable.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "raftkv", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node of a cluster.
    ///
    /// Raft on its raft address, RESP2 clients (redis-cli, redis-benchmark) on its client
    /// address, GET /status, /metrics and /cluster (and the cluster changes of `raftkv
    /// cluster`) on the admin address. With --join it starts without a configuration, to be
    /// added to a running cluster. Prints "raftkv node <id> ready:
    /// raft <addr> client <addr> admin <addr|off>" on stdout once it serves; logs go to stderr
    /// (filter: RAFTKV_LOG, default info). SIGTERM or Ctrl-C stops it gracefully. Exits with
    /// 3 if the node stopped on its own (a failed disk, state machine or task; the reason is
    /// logged), 2 for a bad configuration, 1 for other failures.
    Serve(Box<ServeArgs>),
    /// Start a local 3-node cluster (three processes, durable data in a fresh directory), run a
    /// workload, kill the leader, restart it, add a 4th node, remove the old leader, and check
    /// that no acknowledged write was lost.
    Demo(raftkv::demo::DemoArgs),
    /// Closed-loop load against a cluster (or a local 3-node one with --local): ops/s and
    /// latency percentiles, optionally as JSON.
    Bench(raftkv::bench::BenchArgs),
    /// GET a key (follows redirects).
    Get(raftkv::cli_client::GetArgs),
    /// SET a key (follows redirects).
    Set(raftkv::cli_client::SetArgs),
    /// DEL keys (follows redirects).
    Del(raftkv::cli_client::DelArgs),
    /// Change a running cluster through a node's admin port: show, add-learner, add, remove,
    /// transfer-leader, snapshot.
    Cluster(raftkv::cluster_cli::ClusterArgs),
    /// Development certificates: `raftkv certs init DIR --nodes 1,2,3` writes a CA, a
    /// certificate per node and a client certificate, for a cluster with TLS on.
    Certs {
        #[command(subcommand)]
        command: raftkv::certs::CertsCommand,
    },
    /// Hash a password for a [[users]] table's password_hash (argon2id PHC string), or an admin
    /// token for admin_token_hash (sha256:HEX).
    ///
    /// The password (or token) is the first line of stdin unless --password is given (a flag
    /// shows in `ps` and the shell history: prefer stdin). With --new-admin-token, a random
    /// token is made and printed with its hash.
    Passwd(PasswdArgs),
    /// Remove the BROKEN marker a fatal error left in a stopped node's data directory (after
    /// checking the data), so the node may start again. The same as `raftwal clear-broken`.
    /// I/O failures (a full disk, a failed sync) leave no marker: the log recovers by itself.
    ClearBroken {
        /// The node's data directory (the one holding wal/ and BROKEN).
        #[arg(long, value_name = "DIR")]
        data_dir: std::path::PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct PasswdArgs {
    /// The password or token to hash [default: the first line of stdin].
    #[arg(long, value_name = "TEXT")]
    password: Option<String>,
    /// Hash an admin token (sha256:HEX for admin_token_hash) instead of a user's password.
    #[arg(long)]
    admin_token: bool,
    /// Make a random admin token; print it and the admin_token_hash line.
    #[arg(long, conflicts_with_all = ["password", "admin_token"])]
    new_admin_token: bool,
}

/// Exit code for an unusable configuration (the same as clap's for bad flags).
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure while starting or running.
const EXIT_FAILURE: u8 = 1;
/// Exit code for a node that stopped on its own while serving: a task of it failed (the log,
/// the state machine, a snapshot that cannot be saved, the transport); the reason is logged.
const EXIT_NODE_STOPPED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Demo(args) => raftkv::demo::run_cli(args),
        Command::Bench(args) => raftkv::bench::run_cli(args),
        Command::Get(args) => {
            raftkv::cli_client::run_cli(raftkv::cli_client::ClientCommand::Get(args))
        }
        Command::Set(args) => {
            raftkv::cli_client::run_cli(raftkv::cli_client::ClientCommand::Set(args))
        }
        Command::Del(args) => {
            raftkv::cli_client::run_cli(raftkv::cli_client::ClientCommand::Del(args))
        }
        Command::Cluster(args) => raftkv::cluster_cli::run_cli(args),
        Command::Certs { command } => raftkv::certs::run_cli(command),
        Command::Passwd(args) => passwd(&args),
        Command::ClearBroken { data_dir } => clear_broken(&data_dir),
    }
}

fn passwd(args: &PasswdArgs) -> ExitCode {
    use raftkv::auth::{hash_password, new_admin_token, AdminTokenHash};
    if args.new_admin_token {
        return match new_admin_token() {
            Ok(token) => {
                println!("token: {token}");
                println!(
                    "admin_token_hash = \"{}\"",
                    AdminTokenHash::of(&token).to_config_string()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("raftkv passwd: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
        };
    }
    let secret = match &args.password {
        Some(password) => password.clone(),
        None => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                eprintln!("raftkv passwd: cannot read stdin: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if secret.is_empty() {
        eprintln!("raftkv passwd: the password is empty");
        return ExitCode::from(EXIT_CONFIG);
    }
    if args.admin_token {
        println!("{}", AdminTokenHash::of(&secret).to_config_string());
        return ExitCode::SUCCESS;
    }
    match hash_password(secret.as_bytes()) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raftkv passwd: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn clear_broken(data_dir: &std::path::Path) -> ExitCode {
    match raftwal::clear_broken_report(data_dir) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raftkv clear-broken: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match args.resolve() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("raftkv: error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging();
    let threads = raftkv::RuntimeThreads::Exactly(config.threads);
    match raftkv::block_on_fresh_runtime("raftkv: error", threads, raftkv::server::run(config)) {
        None => ExitCode::from(EXIT_FAILURE),
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(e)) => {
            tracing::error!("{e}");
            eprintln!("raftkv: error: {e}");
            match e {
                raftkv::server::ServerError::Stopped(_) => ExitCode::from(EXIT_NODE_STOPPED),
                _ => ExitCode::from(EXIT_FAILURE),
            }
        }
    }
}

/// Logs to stderr, filtered by `RAFTKV_LOG` (default `info`).
fn init_logging() {
    let filter = EnvFilter::try_from_env("RAFTKV_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
