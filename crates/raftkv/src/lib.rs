//! raftkv: a replicated key-value service on [`raftengine`] whose client port speaks RESP2, so
//! `redis-cli` and `redis-benchmark` work against it unmodified.
//!
//! This crate holds the parts that do not depend on the Raft runtime:
//!
//! - [`resp`]: the wire protocol. [`resp::RespCodec`] is a `tokio_util` codec for the server side
//!   of a connection: it decodes requests (arrays of bulk strings, as clients send them, and
//!   inline commands, as telnet users type them) into command words and encodes [`resp::Reply`]s.
//!   Every length is bounded by [`resp::RespLimits`], so a hostile or broken client gets a
//!   [`resp::RespError`] instead of unbounded buffering. [`resp::RespClientCodec`] is the other
//!   side, for tests and tools.
//! - [`kv`]: the replicated state machine. [`kv::KvStore`] is an ordered map that implements
//!   [`raftengine::StateMachine`]; writes travel through the Raft log as postcard-encoded
//!   [`kv::KvCommand`]s and come back as [`kv::KvOutput`]s. Reads go straight to the store once a
//!   read barrier says it is up to date.
//! - [`command`]: the glue between the two. [`command::parse_request`] turns a request's words into
//!   an [`command::Action`]: a write to replicate, a read to serve after a barrier, `INFO`, or a
//!   reply the connection can send at once. Helpers turn the state machine's results back into
//!   replies with Redis's wording.
//!
//! - [`auth`]: users with roles and key patterns for the RESP port, and the admin port's token.
//!
//! A server loop therefore looks like: decode a request, `parse_request` it, and then either
//! propose `KvCommand::encode()` to Raft and answer with [`command::reply_for_apply`] when it
//! commits, or wait for a read barrier and answer with [`command::read_reply`].

pub mod admin_client;
pub mod auth;
pub mod bench;
pub mod certs;
pub mod cli_client;
pub mod client;
pub mod cluster_cli;
pub mod command;
pub mod config;
pub mod demo;
pub mod kv;
pub mod resp;
pub mod server;
pub mod session;

/// How many threads a subcommand's runtime gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeThreads {
    /// One per core.
    PerCore,
    /// Exactly this many; 1 runs every task on the calling thread.
    Exactly(usize),
}

/// Runs `future` to completion on a fresh tokio runtime, for the subcommands' `run_cli`. `None`
/// when the runtime cannot start; the reason is printed after `who` (e.g. `raftkv bench`).
pub fn block_on_fresh_runtime<F: std::future::Future>(
    who: &str,
    threads: RuntimeThreads,
    future: F,
) -> Option<F::Output> {
    let mut builder = match threads {
        RuntimeThreads::Exactly(1) => tokio::runtime::Builder::new_current_thread(),
        RuntimeThreads::Exactly(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n.max(1));
            builder
        }
        RuntimeThreads::PerCore => tokio::runtime::Builder::new_multi_thread(),
    };
    match builder.enable_all().build() {
        Ok(runtime) => Some(runtime.block_on(future)),
        Err(error) => {
            eprintln!("{who}: cannot start the async runtime: {error}");
            None
        }
    }
}

/// Parses a decimal `i64` the way Redis's `string2ll` does: an optional `-`, then digits with no
/// leading zeros, no `+`, no spaces and no `-0`. Being as strict as Redis keeps `INCR` results and
/// protocol lengths identical to what Redis clients expect, and makes every accepted value have
/// exactly one spelling.
pub(crate) fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, bytes),
    };
    match digits {
        [] => return None,
        [b'0'] => return (!negative).then_some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut value: i64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(byte - b'0');
        value = value.checked_mul(10)?;
        // Accumulating negatives separately reaches i64::MIN, whose magnitude has no i64.
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::parse_integer;

    #[test]
    fn parse_integer_accepts_canonical_spellings_only() {
        assert_eq!(parse_integer(b"0"), Some(0));
        assert_eq!(parse_integer(b"42"), Some(42));
        assert_eq!(parse_integer(b"-42"), Some(-42));
        assert_eq!(parse_integer(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_integer(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"007",
            b"+1",
            b" 1",
            b"1 ",
            b"1.0",
            b"abc",
            b"9223372036854775808",
            b"-9223372036854775809",
        ] {
            assert_eq!(
                parse_integer(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
