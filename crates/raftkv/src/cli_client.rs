//! `raftkv get`, `raftkv set` and `raftkv del`: one command against a cluster, printed the way
//! `redis-cli` prints it (`OK`, `"value"`, `(nil)`, `(integer) 1`).
//!
//! Any node's address will do: followers forward writes to the leader, `-MOVED` replies are
//! followed, and a node that is down is skipped (see [`crate::client`]). Failures print a message
//! on stderr and give a non-zero exit code; a write whose outcome is unknown says so.

use crate::client::{format_reply, resolve_nodes, Client, ClientConfig, ClientError, SecurityArgs};
use crate::resp::Reply;
use std::process::ExitCode;
use std::time::Duration;
use thiserror::Error;

/// Where the cluster is and how long one command may take.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct ClientArgs {
    /// Client (RESP) addresses of the cluster's nodes, host:port, comma separated; any one will
    /// do, the others are tried when it is down.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:6379")]
    pub nodes: Vec<String>,
    /// Seconds the command may take, retries and redirects included.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// `raftkv get KEY`
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct GetArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    pub key: String,
}

/// `raftkv set KEY VALUE`
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct SetArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    pub key: String,
    pub value: String,
}

/// `raftkv del KEY...`
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct DelArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(required = true)]
    pub keys: Vec<String>,
}

/// One of the client subcommands.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientCommand {
    Get(GetArgs),
    Set(SetArgs),
    Del(DelArgs),
}

#[derive(Debug, Error)]
pub enum CliError {
    #[error("--timeout must be a positive number of seconds, not {0}")]
    BadTimeout(f64),
    /// The server answered with an error reply; shown as `redis-cli` shows it.
    #[error("(error) {0}")]
    Server(String),
    #[error("{0}")]
    Client(ClientError),
    #[error("{0}")]
    Tls(#[from] raftnet::tls::TlsError),
    #[error("cannot draw a session id: {0}")]
    Session(String),
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> CliError {
        match error {
            ClientError::Server(text) => CliError::Server(text),
            other => CliError::Client(other),
        }
    }
}

impl ClientCommand {
    fn client_args(&self) -> &ClientArgs {
        match self {
            ClientCommand::Get(args) => &args.client,
            ClientCommand::Set(args) => &args.client,
            ClientCommand::Del(args) => &args.client,
        }
    }

    /// The command's words, as sent.
    pub fn words(&self) -> Vec<&[u8]> {
        match self {
            ClientCommand::Get(args) => vec![b"GET", args.key.as_bytes()],
            ClientCommand::Set(args) => vec![b"SET", args.key.as_bytes(), args.value.as_bytes()],
            ClientCommand::Del(args) => std::iter::once(b"DEL".as_slice())
                .chain(args.keys.iter().map(|key| key.as_bytes()))
                .collect(),
        }
    }
}

/// Runs `command` and returns what to print: the reply in `redis-cli`'s rendering.
pub async fn run(command: &ClientCommand) -> Result<String, CliError> {
    let args = command.client_args();
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(CliError::BadTimeout(args.timeout));
    }
    let deadline = Duration::from_secs_f64(args.timeout);
    let config = ClientConfig {
        deadline,
        request_timeout: deadline.min(ClientConfig::default().request_timeout),
        ..ClientConfig::default()
    };
    let nodes = resolve_nodes(&args.nodes).await?;
    // A session makes a write whose outcome is unknown safe to send again: it is retried until
    // answered within the timeout, and applied once.
    let session =
        crate::client::fresh_session_id().map_err(|e| CliError::Session(e.to_string()))?;
    let mut client = Client::new(nodes, config)?
        .with_security(args.security.security()?)
        .with_session(session);
    let reply: Reply = client.cmd(&command.words()).await?;
    Ok(format_reply(&reply))
}

/// Runs `command` on a fresh runtime, prints the reply (or the error, on stderr) and returns the
/// process exit code: for `main`.
pub fn run_cli(command: ClientCommand) -> ExitCode {
    match crate::block_on_fresh_runtime(
        "raftkv: error",
        crate::RuntimeThreads::Exactly(1),
        run(&command),
    ) {
        None => ExitCode::FAILURE,
        Some(Ok(output)) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Some(Err(error @ CliError::Server(_))) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
        Some(Err(error)) => {
            eprintln!("raftkv: error: {error}");
            ExitCode::FAILURE
        }
    }
}
