//! `raftkv certs init`: a development CA and certificates for every node and for clients, so
//! that a local cluster (the demo, the tests, a first try) runs with TLS on. A production
//! cluster's certificates come from the operator's own CA: any node certificate works that names
//! `raft-node-<id>` as a DNS name (see [`raftnet::tls`]) and the addresses clients use.
//!
//! Files written into DIR (keys readable by the owner only):
//!
//! | file                           | what                                                  |
//! |--------------------------------|-------------------------------------------------------|
//! | `ca.pem`, `ca-key.pem`         | the CA (keep the key away from the nodes)             |
//! | `node-<id>.pem`, `-key.pem`    | node `<id>`: peer, client and admin ports             |
//! | `client.pem`, `client-key.pem` | a client certificate (redis-cli `--cert`, admin calls) |

use raftengine::NodeId;
use raftnet::tls::dev::{Authority, Pem};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of `raftkv certs init`.
#[derive(Debug, clap::Args)]
pub struct CertsInitArgs {
    /// Directory to write into (created if missing). Existing files are kept unless --force.
    pub dir: PathBuf,
    /// Node ids to issue certificates for, e.g. 1,2,3.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<u64>,
    /// More DNS names or IP addresses clients reach the nodes by (localhost, 127.0.0.1 and ::1
    /// are always included).
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// `raftkv certs` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create a development CA and per-node and client certificates.
    Init(CertsInitArgs),
}

/// Why certificates could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{0} exists; pass --force to overwrite")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] raftnet::tls::dev::Error),
    #[error("node id 0 is not a valid node id")]
    ZeroId,
}

/// The names every node certificate carries besides its node name.
const LOCAL_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The file names of node `id`'s certificate and key in a `certs init` directory.
pub fn node_files(dir: &Path, id: u64) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("node-{id}.pem")),
        dir.join(format!("node-{id}-key.pem")),
    )
}

/// Writes the CA, node and client certificates into `args.dir`; returns the files written.
pub fn init(args: &CertsInitArgs) -> Result<Vec<PathBuf>, CertsError> {
    if args.nodes.contains(&0) {
        return Err(CertsError::ZeroId);
    }
    let ca = Authority::new("raftkv development CA")?;
    let mut hosts: Vec<String> = LOCAL_HOSTS.iter().map(|h| h.to_string()).collect();
    hosts.extend(args.hosts.iter().cloned());
    let mut files: Vec<(PathBuf, String, bool)> = Vec::new();
    let mut add = |cert: PathBuf, key: PathBuf, pem: Pem| {
        files.push((cert, pem.cert, false));
        files.push((key, pem.key, true));
    };
    add(
        args.dir.join("ca.pem"),
        args.dir.join("ca-key.pem"),
        ca.pem(),
    );
    for &id in &args.nodes {
        let (cert, key) = node_files(&args.dir, id);
        add(cert, key, ca.node(NodeId(id), &hosts)?);
    }
    let client = ca.client("raftkv-client")?;
    add(
        args.dir.join("client.pem"),
        args.dir.join("client-key.pem"),
        client,
    );

    if !args.force {
        if let Some((path, _, _)) = files.iter().find(|(path, _, _)| path.exists()) {
            return Err(CertsError::Exists(path.clone()));
        }
    }
    std::fs::create_dir_all(&args.dir).map_err(|source| CertsError::Write {
        path: args.dir.clone(),
        source,
    })?;
    for (path, text, secret) in &files {
        write_file(path, text, *secret).map_err(|source| CertsError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(files.into_iter().map(|(path, _, _)| path).collect())
}

/// Writes `text` to `path`; a secret (a key) is readable by its owner only.
fn write_file(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Runs a `raftkv certs` command.
pub fn run_cli(command: CertsCommand) -> std::process::ExitCode {
    match command {
        CertsCommand::Init(args) => match init(&args) {
            Ok(files) => {
                for file in files {
                    println!("wrote {}", file.display());
                }
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("raftkv certs init: {e}");
                std::process::ExitCode::from(1)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_ca_nodes_and_a_client_and_keeps_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let args = CertsInitArgs {
            dir: dir.path().join("certs"),
            nodes: vec![1, 2, 3],
            hosts: vec!["kv.example".into()],
            force: false,
        };
        let files = init(&args).unwrap();
        assert_eq!(files.len(), 2 + 3 * 2 + 2);
        let (cert, key) = node_files(&args.dir, 2);
        let files = raftnet::tls::TlsFiles {
            ca: args.dir.join("ca.pem"),
            cert,
            key: key.clone(),
        };
        raftnet::tls::PeerTls::load(files).expect("node files load");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "keys are private");
        }
        assert!(matches!(init(&args), Err(CertsError::Exists(_))));
        init(&CertsInitArgs {
            force: true,
            ..args
        })
        .unwrap();
    }
}
