//! `raftchaos`: raftkv under real faults. `raftchaos run` runs a seeded fault schedule against a
//! cluster of raftkv processes and checks every client history; `raftchaos cleanup` removes
//! whatever an interrupted run left (firewall rules, mounts, processes).

use clap::{Parser, Subcommand};
use raftchaos::cluster::Setup;
use raftchaos::faults::{Kind, ALL_KINDS};
use raftchaos::preflight;
use raftchaos::proxy::{Proxy, Route, Toxics};
use raftchaos::run::{run, summary_text, RunConfig};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "raftchaos",
    about = "raftkv under partitions, pauses, kills, slow and full disks and skewed clocks, with every history checked"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one seeded fault schedule and checks the history (needs root: iptables, mounts).
    Run(Box<RunArgs>),
    /// Removes what an interrupted run left: our iptables chain, tmpfs mounts and nodes.
    Cleanup,
    /// Runs the fault proxy alone with the same latency, jitter or bandwidth on every link
    /// (for measurements of any system under a degraded network), until SIGINT or SIGTERM.
    Proxy(ProxyArgs),
    /// Checks a report directory's history.jsonl again, or the part of it called in a window.
    Check(CheckArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The report directory of a run.
    report: PathBuf,
    /// Only operations called at or after this many seconds.
    #[arg(long, default_value_t = 0.0)]
    from: f64,
    /// Only operations called before this many seconds.
    #[arg(long)]
    until: Option<f64>,
    /// Counter keys (checked as counters, not registers), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "n0,n1")]
    counters: Vec<String>,
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// LISTEN=UPSTREAM, repeated: where the proxy listens and where it forwards to.
    #[arg(long = "route", value_name = "LISTEN=UPSTREAM", required = true)]
    routes: Vec<String>,
    /// Added one-way delay in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Extra delay drawn uniformly from 0..jitter, in milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Bytes per second per link and direction.
    #[arg(long)]
    bandwidth: Option<u64>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Nodes in the cluster (3 or 5 are the usual; 1 to 9).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
    /// Seed of the fault schedule and the workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of faults (recovery and the final checks come on top).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Fault kinds to draw from, comma-separated [default: all].
    #[arg(long, value_delimiter = ',')]
    faults: Vec<Kind>,
    /// Report directory (must be empty or absent) [default: ./raftchaos-report/seed-<seed>].
    #[arg(long)]
    report: Option<PathBuf>,
    /// The raftkv executable [default: next to this one].
    #[arg(long)]
    raftkv: Option<PathBuf>,
    /// The faultio shim [default: libfaultio.so next to this executable].
    #[arg(long)]
    faultio: Option<PathBuf>,
    /// libfaketime (Debian package `faketime`).
    #[arg(long, default_value = preflight::FAKETIME_LIB)]
    faketime: PathBuf,
    /// Clients per node.
    #[arg(long, default_value_t = 2)]
    clients_per_node: usize,
    /// Operations per second per client, at most.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Register keys (SET, GET, CAS).
    #[arg(long, default_value_t = 5)]
    registers: usize,
    /// Counter keys (INCR, GET).
    #[arg(long, default_value_t = 2)]
    counters: usize,
    /// Shortest and longest fault, in seconds.
    #[arg(long, default_value = "2..6")]
    fault_secs: Range,
    /// Shortest and longest quiet time between faults, in seconds.
    #[arg(long, default_value = "1..3")]
    quiet_secs: Range,
    /// After the final heal, every node must serve a write within this many seconds.
    #[arg(long, default_value_t = 30)]
    recovery_bound: u64,
    /// Run the nodes with lease reads on (expect stale reads under clock faults).
    #[arg(long)]
    lease_reads: bool,
    /// One more argument for every `raftkv serve`, repeated (e.g. --server-arg=--election-ms
    /// --server-arg=150..300).
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Print only the summary, not the timeline.
    #[arg(long)]
    quiet: bool,
    /// Clock rates a clock fault draws from, comma-separated (each 0.1 to 10).
    #[arg(long, value_delimiter = ',', default_values_t = raftchaos::faults::CLOCK_RATES.to_vec())]
    clock_rates: Vec<f64>,
}

#[derive(Clone, Copy)]
struct Range(f64, f64);

impl std::str::FromStr for Range {
    type Err = String;
    fn from_str(text: &str) -> Result<Range, String> {
        let bad = || format!("'{text}': expected MIN..MAX in seconds, e.g. 2..6");
        let (min, max) = text.split_once("..").ok_or_else(bad)?;
        let (min, max): (f64, f64) = (
            min.trim().parse().map_err(|_| bad())?,
            max.trim().parse().map_err(|_| bad())?,
        );
        if !(0.0..=3600.0).contains(&min) || max < min || max > 3600.0 {
            return Err(bad());
        }
        Ok(Range(min, max))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Cleanup => {
            let report = preflight::cleanup();
            println!("{report}");
            ExitCode::SUCCESS
        }
        Command::Run(args) => run_cli(*args),
        Command::Proxy(args) => proxy_cli(args),
        Command::Check(args) => check_cli(args),
    }
}

fn check_cli(args: CheckArgs) -> ExitCode {
    let path = args.report.join("history.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("raftchaos check: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let (from, until) = (
        (args.from * 1e6) as u64,
        args.until.map_or(u64::MAX, |s| (s * 1e6) as u64),
    );
    let mut history = Vec::new();
    for (number, line) in text.lines().enumerate() {
        match serde_json::from_str::<raftchaos::model::Record>(line) {
            Ok(r) if r.call_us >= from && r.call_us < until => history.push(r),
            Ok(_) => {}
            Err(e) => {
                eprintln!("raftchaos check: {}:{}: {e}", path.display(), number + 1);
                return ExitCode::from(2);
            }
        }
    }
    let is_counter = |key: &str| args.counters.iter().any(|c| c == key);
    let mut findings = raftchaos::check::counters(&history, is_counter);
    if let Err(finding) = raftchaos::check::registers(&history, is_counter) {
        findings.push(finding);
    }
    println!("{} operations checked", history.len());
    for finding in &findings {
        println!("VIOLATION: {finding}");
    }
    if findings.is_empty() {
        println!("linearizable");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn proxy_cli(args: ProxyArgs) -> ExitCode {
    let mut routes = Vec::new();
    for text in &args.routes {
        let parsed = text
            .split_once('=')
            .and_then(|(l, u)| Some((l.parse().ok()?, u.parse().ok()?)));
        let Some((listen, upstream)) = parsed else {
            eprintln!("raftchaos proxy: '{text}': expected LISTEN=UPSTREAM, e.g. 127.0.0.11:7100=127.0.0.11:7000");
            return ExitCode::from(2);
        };
        routes.push(Route { listen, upstream });
    }
    let toxics = Toxics {
        latency: Duration::from_millis(args.latency_ms),
        jitter: Duration::from_millis(args.jitter_ms),
        bandwidth: args.bandwidth,
        stalled: false,
    };
    // Every address that can be at either end of a link: the routes' and 127.0.0.1, where
    // programs that do not pick a source address dial from.
    let mut ips: Vec<IpAddr> = routes
        .iter()
        .flat_map(|r| [r.listen.ip(), r.upstream.ip()])
        .chain([IpAddr::from([127, 0, 0, 1])])
        .collect();
    ips.sort();
    ips.dedup();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("raftchaos proxy: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let proxy = match Proxy::start(routes).await {
            Ok(proxy) => proxy,
            Err(e) => {
                eprintln!("raftchaos proxy: {e}");
                return ExitCode::from(2);
            }
        };
        for &from in &ips {
            for &to in &ips {
                proxy.set(from, to, toxics.clone());
            }
        }
        println!(
            "raftchaos proxy ready: {:?} with {toxics:?}",
            proxy.listen_addrs()
        );
        preflight::interrupted().await;
        proxy.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn run_cli(args: RunArgs) -> ExitCode {
    let kinds = if args.faults.is_empty() {
        ALL_KINDS.to_vec()
    } else {
        args.faults.clone()
    };
    if args.clock_rates.is_empty() || args.clock_rates.iter().any(|r| !(0.1..=10.0).contains(r)) {
        eprintln!("raftchaos: --clock-rates takes rates from 0.1 to 10");
        return ExitCode::from(2);
    }
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_default();
    let setup = Setup {
        raftkv: args.raftkv.clone().unwrap_or_else(|| here.join("raftkv")),
        faultio: args
            .faultio
            .clone()
            .unwrap_or_else(|| here.join("libfaultio.so")),
        faketime: args.faketime.clone(),
        lease_reads: args.lease_reads,
        server_args: args.server_args.clone(),
    };
    if let Err(problems) = preflight::check(&setup, kinds.contains(&Kind::Clock)) {
        eprintln!("raftchaos cannot run here:");
        for problem in problems {
            eprintln!("  - {problem}");
        }
        return ExitCode::from(2);
    }
    let config = RunConfig {
        nodes: args.nodes as usize,
        seed: args.seed,
        duration: Duration::from_secs(args.duration),
        kinds,
        report_dir: args
            .report
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("raftchaos-report/seed-{}", args.seed))),
        setup,
        clients_per_node: args.clients_per_node,
        rate: args.rate,
        registers: args.registers.max(1),
        counters: args.counters,
        fault_secs: (args.fault_secs.0, args.fault_secs.1),
        quiet_secs: (args.quiet_secs.0, args.quiet_secs.1),
        recovery_bound: Duration::from_secs(args.recovery_bound),
        verbose: !args.quiet,
        clock_rates: args.clock_rates.clone(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("raftchaos: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = run(config) => Some(result),
            () = preflight::interrupted() => None,
        }
    });
    // Dropping the run (on an interrupt) killed the nodes and removed the chain; make sure.
    drop(runtime);
    match outcome {
        None => {
            let report = preflight::cleanup();
            eprintln!("raftchaos: interrupted; cleaned up: {report}");
            ExitCode::from(130)
        }
        Some(Err(e)) => {
            preflight::cleanup();
            eprintln!("raftchaos: {e}");
            ExitCode::from(2)
        }
        Some(Ok(summary)) => {
            print!("{}", summary_text(&summary));
            if summary.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
