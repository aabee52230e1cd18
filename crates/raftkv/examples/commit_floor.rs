//! The floor under a durable, replicated put on this machine: the least a 1-client put can cost
//! when nothing but the unavoidable work is done. No Raft, no runtime, no state machine: blocking
//! sockets and files, one thread per process. Each process does what a node must at least do:
//!
//! ```text
//! client ──SET──> leader ──the command──> follower ×2: pwrite + fdatasync, then an 8-byte ack
//!                   └─ pwrite + fdatasync of its own copy, right after sending (the cheapest
//!                      order); answers +OK once it and one follower hold the command durably
//! ```
//!
//! Two more setups for comparison:
//! - the leader keeps no copy and answers once both followers hold the command durably (still a
//!   majority: thesis §10.2.1 lets a leader commit before its own write is durable). On a disk
//!   the three nodes share, one sync fewer then contends on every put;
//! - one node: client ──> node: pwrite + fdatasync, +OK (a durable single server, to set beside
//!   Redis with `appendfsync always`).
//!
//! The client ports speak just enough RESP for `SET` (any command is answered `+OK`), so the
//! benchmark's own client drives them as it drives raftkv and etcd. One client at a time; a
//! malformed or oversized command stops the server with the reason (this is a yardstick, not a
//! service):
//!
//! ```text
//! cargo run --release -p raftkv --example commit_floor -- serve DIR
//! kvload --target resp --addr 127.0.0.1:7391 --op put --clients 1 --duration 10
//! ```
//!
//! Ports: 7391 the leader with its own copy, 7395 the leader without, 7394 the single node.
//! `commit_floor run DIR SECONDS` starts the setups and drives each with a built-in blocking
//! client instead, printing ops/s and latency percentiles as JSON lines.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const LOG_BYTES: u64 = 64 << 20;
const LEADER_PORT: u16 = 7391;
const SINGLE_PORT: u16 = 7394;
const NO_COPY_LEADER_PORT: u16 = 7395;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let outcome = match args.as_slice() {
        ["follower", port, file] => parse_port(port).and_then(|p| follower(p, Path::new(file))),
        ["leader", port, file, f1, f2] => {
            parse_port(port).and_then(|p| leader(p, Some(Path::new(file)), [f1, f2]))
        }
        ["leader-without-copy", port, f1, f2] => {
            parse_port(port).and_then(|p| leader(p, None, [f1, f2]))
        }
        ["single", port, file] => parse_port(port).and_then(|p| single(p, Path::new(file))),
        ["serve", dir] => serve(Path::new(dir)),
        ["run", dir, seconds] => seconds
            .parse()
            .map_err(Into::into)
            .and_then(|s| run(Path::new(dir), Duration::from_secs(s))),
        _ => Err("usage: commit_floor serve DIR | commit_floor run DIR SECONDS".into()),
    };
    if let Err(e) = outcome {
        // A server whose peer went away (the setup was stopped) ends quietly.
        if !is_disconnect(&*e) {
            eprintln!("commit_floor: {e}");
            std::process::exit(1);
        }
    }
}

fn parse_port(port: &str) -> Result<u16> {
    Ok(port.parse()?)
}

fn is_disconnect(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::*;
    let kind = e.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
    matches!(kind, Some(UnexpectedEof | ConnectionReset | BrokenPipe))
}

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Starts the setups and keeps them up until killed.
fn serve(dir: &Path) -> Result<()> {
    let _servers = start(dir)?;
    println!(
        "3 nodes: {}, 3 nodes (leader without a copy): {}, 1 node: {}",
        addr(LEADER_PORT),
        addr(NO_COPY_LEADER_PORT),
        addr(SINGLE_PORT)
    );
    loop {
        std::thread::park();
    }
}

/// Starts the setups and drives each with one blocking client: 1 s of warm-up, then `duration`.
fn run(dir: &Path, duration: Duration) -> Result<()> {
    let _servers = start(dir)?;
    report(
        "3 nodes, leader + 1 follower durable",
        LEADER_PORT,
        duration,
    )?;
    report(
        "3 nodes, 2 followers durable",
        NO_COPY_LEADER_PORT,
        duration,
    )?;
    report("1 node, durable", SINGLE_PORT, duration)?;
    Ok(())
}

/// The servers of the setups; they are killed when this is dropped.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start(dir: &Path) -> Result<Servers> {
    std::fs::create_dir_all(dir)?;
    let file = |name: &str| dir.join(name).display().to_string();
    let port = |p: u16| p.to_string();
    let mut servers = Servers(Vec::new());
    let followers = [1, 2, 5, 6].map(|k| LEADER_PORT + k);
    for (k, p) in followers.iter().enumerate() {
        let log = file(&format!("follower-{k}"));
        servers.0.push(spawn(&["follower", &port(*p), &log])?);
    }
    for p in followers {
        wait_listening(p)?;
    }
    let [f1, f2, f3, f4] = followers.map(addr);
    let leader = ["leader", &port(LEADER_PORT), &file("leader"), &f1, &f2];
    servers.0.push(spawn(&leader)?);
    let no_copy = ["leader-without-copy", &port(NO_COPY_LEADER_PORT), &f3, &f4];
    servers.0.push(spawn(&no_copy)?);
    servers
        .0
        .push(spawn(&["single", &port(SINGLE_PORT), &file("single")])?);
    for p in [LEADER_PORT, NO_COPY_LEADER_PORT, SINGLE_PORT] {
        wait_listening(p)?;
    }
    Ok(servers)
}

fn spawn(args: &[&str]) -> Result<Child> {
    Ok(Command::new(std::env::current_exe()?).args(args).spawn()?)
}

fn wait_listening(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr(port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("nothing listens on {}", addr(port)).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn report(setup: &str, port: u16, duration: Duration) -> Result<()> {
    let mut server = BufReader::new(connect(&addr(port))?);
    let value = [b'v'; 256];
    let mut latencies_us = Vec::new();
    let warm_up_end = Instant::now() + Duration::from_secs(1);
    let end = warm_up_end + duration;
    let mut reply = String::new();
    for k in 0u64.. {
        let start = Instant::now();
        if start >= end {
            break;
        }
        let key = format!("{:08}", k % 100_000);
        let mut set = format!("*3\r\n$3\r\nSET\r\n$8\r\n{key}\r\n$256\r\n").into_bytes();
        set.extend_from_slice(&value);
        set.extend_from_slice(b"\r\n");
        server.get_mut().write_all(&set)?;
        reply.clear();
        server.read_line(&mut reply)?;
        if reply != "+OK\r\n" {
            return Err(format!("unexpected reply {reply:?}").into());
        }
        if start >= warm_up_end {
            latencies_us.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    if latencies_us.is_empty() {
        return Err("no put finished in the measured window".into());
    }
    latencies_us.sort_by(f64::total_cmp);
    let at = |q: f64| latencies_us[((latencies_us.len() - 1) as f64 * q) as usize];
    writeln!(
        std::io::stdout(),
        "{{\"setup\":\"{setup}\",\"ops_per_s\":{:.0},\"p50_us\":{:.0},\"p99_us\":{:.0},\"p999_us\":{:.0}}}",
        latencies_us.len() as f64 / duration.as_secs_f64(),
        at(0.5),
        at(0.99),
        at(0.999)
    )?;
    Ok(())
}

fn connect(addr: &str) -> Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Listens on `port`; each connection that sends something is served by `serve` until it closes
/// (`wait_listening`'s probes send nothing).
fn accept_each(port: u16, mut serve: impl FnMut(TcpStream) -> Result<()>) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    loop {
        let (stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut probe = [0u8; 1];
        if stream.peek(&mut probe)? == 0 {
            continue;
        }
        match serve(stream) {
            Err(e) if is_disconnect(&*e) => {}
            other => other?,
        }
    }
}

/// Bounds on a command, so a stray client cannot make a server allocate without limit.
const MAX_PARTS: usize = 64;
const MAX_PART_BYTES: usize = 1 << 20;

/// Reads one RESP command (an array of bulk strings) and returns its bytes as received.
fn read_command(client: &mut BufReader<TcpStream>) -> Result<Vec<u8>> {
    let mut command = Vec::new();
    let header = |client: &mut BufReader<TcpStream>, command: &mut Vec<u8>, kind: u8| {
        let start = command.len();
        if client.read_until(b'\n', command)? == 0 {
            return Err::<usize, Box<dyn std::error::Error>>(
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into(),
            );
        }
        let line = &command[start..];
        if line.first() != Some(&kind) || !line.ends_with(b"\r\n") {
            return Err("not a RESP command".into());
        }
        Ok(std::str::from_utf8(&line[1..line.len() - 2])?.parse()?)
    };
    let parts = header(client, &mut command, b'*')?;
    if parts > MAX_PARTS {
        return Err(format!("a command of {parts} parts").into());
    }
    for _ in 0..parts {
        let len = header(client, &mut command, b'$')?;
        if len > MAX_PART_BYTES {
            return Err(format!("a part of {len} bytes").into());
        }
        let start = command.len();
        command.resize(start + len + 2, 0);
        client.read_exact(&mut command[start..])?;
    }
    Ok(command)
}

/// A log file filled with zeros and synced, so that appends overwrite allocated blocks (as
/// raftwal's segments are made); it wraps around at its end.
struct Log {
    file: File,
    offset: u64,
}

impl Log {
    fn create(path: &Path) -> Result<Log> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)?;
        let zeros = vec![0u8; 1 << 20];
        for k in 0..LOG_BYTES / zeros.len() as u64 {
            file.write_all_at(&zeros, k * zeros.len() as u64)?;
        }
        file.sync_all()?;
        Ok(Log { file, offset: 0 })
    }

    fn append_durably(&mut self, bytes: &[u8]) -> Result<()> {
        if self.offset + bytes.len() as u64 > LOG_BYTES {
            self.offset = 0;
        }
        self.file.write_all_at(bytes, self.offset)?;
        self.file.sync_data()?;
        self.offset += bytes.len() as u64;
        Ok(())
    }
}

fn follower(port: u16, path: &Path) -> Result<()> {
    let mut log = Log::create(path)?;
    accept_each(port, |leader| {
        let mut leader = BufReader::new(leader);
        let mut seq = 0u64;
        let mut len = [0u8; 4];
        let mut entry = Vec::new();
        loop {
            leader.read_exact(&mut len)?;
            let len = u32::from_le_bytes(len) as usize;
            if len > MAX_PARTS * MAX_PART_BYTES {
                return Err(format!("an entry of {len} bytes").into());
            }
            entry.resize(len, 0);
            leader.read_exact(&mut entry)?;
            log.append_durably(&entry)?;
            seq += 1;
            leader.get_mut().write_all(&seq.to_le_bytes())?;
        }
    })
}

fn single(port: u16, path: &Path) -> Result<()> {
    let mut log = Log::create(path)?;
    accept_each(port, |client| {
        let mut client = BufReader::new(client);
        loop {
            let command = read_command(&mut client)?;
            log.append_durably(&command)?;
            client.get_mut().write_all(b"+OK\r\n")?;
        }
    })
}

/// Serves one client at a time; its followers keep their connections (and ack counts) throughout.
/// With a log of its own it answers once it and one follower hold a command durably; without,
/// once both followers do.
fn leader(port: u16, own_copy: Option<&Path>, followers: [&&str; 2]) -> Result<()> {
    let mut log = own_copy.map(Log::create).transpose()?;
    let mut followers = [connect(followers[0])?, connect(followers[1])?];
    let mut acked = [0u64; 2];
    let mut seq = 0u64;
    accept_each(port, |client| {
        let mut client = BufReader::new(client);
        loop {
            let command = read_command(&mut client)?;
            seq += 1;
            let mut frame = (command.len() as u32).to_le_bytes().to_vec();
            frame.extend_from_slice(&command);
            for follower in &mut followers {
                follower.write_all(&frame)?;
            }
            let followers_needed = match &mut log {
                Some(log) => {
                    log.append_durably(&command)?;
                    1
                }
                None => 2,
            };
            while acked.iter().filter(|&&a| a >= seq).count() < followers_needed {
                read_acks(&mut followers, &mut acked)?;
            }
            client.get_mut().write_all(b"+OK\r\n")?;
        }
    })
}

/// Blocks until a follower's ack can be read, then reads one ack from each follower that has one.
fn read_acks(followers: &mut [TcpStream; 2], acked: &mut [u64; 2]) -> Result<()> {
    let mut fds = followers.each_ref().map(|f| libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: `fds` is an array of two initialized pollfd that outlives the call.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
    if ready < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    for (k, fd) in fds.iter().enumerate() {
        if fd.revents != 0 {
            let mut ack = [0u8; 8];
            followers[k].read_exact(&mut ack)?;
            acked[k] = u64::from_le_bytes(ack);
        }
    }
    Ok(())
}
