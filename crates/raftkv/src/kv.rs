//! The replicated state machine: an ordered byte-string map.
//!
//! Writes are [`KvCommand`]s, postcard-encoded into Raft log entries and applied by every replica
//! through [`raftengine::StateMachine::apply`], which answers with an encoded [`KvOutput`]. Reads
//! do not go through the log: after a read barrier confirms this replica has applied everything
//! committed, the server reads [`KvStore`] directly ([`KvStore::get`], [`KvStore::mget`], ...).
//!
//! The encodings are part of the replicated log and of snapshots, so they must stay stable:
//! postcard encodes enum variants by position, hence new variants go at the end.
//!
//! # State digest
//!
//! Every store keeps a [`StateDigest`] of its whole map, so that replicas can be compared
//! (`raftkv cluster check`): two replicas that applied the same log prefix must hold equal
//! digests. The digest is the sum, modulo 2^128, of a 128-bit hash (XXH3, fixed seed) of each
//! (key, value) pair: a sum does not depend on the map's order, and a write updates it in
//! O(size of the keys and values it changes) by subtracting the old pair's hash and adding the
//! new one. It is not a cryptographic commitment: it finds replicas that diverged by accident
//! or by one forged write, not a peer that crafts collisions. The digest after each recent
//! applied index is remembered ([`KvStore::digest_at`]), so replicas that are at different
//! indexes are compared at one both can answer. Nothing of it is stored: a snapshot's restore
//! recomputes it from the map, and a restart replays the log after that.

use crate::parse_integer;
use crate::session::{Sessions, Verdict};
use bytes::Bytes;
use raftengine::{ApplyError, LogIndex, StateMachine};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use thiserror::Error;
use xxhash_rust::xxh3::Xxh3;

/// The error Redis gives when `INCR` meets a value that is not a 64-bit integer.
pub const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
/// The error Redis gives when `INCRBY` would leave the 64-bit range.
pub const INCR_OVERFLOW: &str = "ERR increment or decrement would overflow";

/// A write, as stored in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value`. Output: [`KvOutput::Ok`].
    Set { key: Vec<u8>, value: Vec<u8> },
    /// Removes `keys`. Output: [`KvOutput::Integer`], how many existed (a key named twice counts
    /// once, as in Redis).
    Del { keys: Vec<Vec<u8>> },
    /// Adds `by` to the integer stored at `key` (a missing key counts as 0). Output:
    /// [`KvOutput::Integer`], the new value. Rejected if the value is not a canonical decimal
    /// `i64` or the sum overflows.
    Incr { key: Vec<u8>, by: i64 },
    /// Compare-and-set: sets `key` to `new` if its current value is `expected`, where `None`
    /// means the key must be absent. Output: [`KvOutput::Bool`], whether it was set.
    Cas {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
    /// Changes nothing. Output: [`KvOutput::Ok`].
    Noop,
    /// `command` as write `seq` of client `client`'s session: applied at most once, however
    /// often it is sent (see [`crate::session`]). Output: `command`'s, the first time's.
    Session {
        client: u64,
        seq: u64,
        command: Box<KvCommand>,
    },
}

impl KvCommand {
    /// The keys the command writes (a session's: its command's).
    pub fn keys(&self) -> Vec<&[u8]> {
        match self {
            KvCommand::Set { key, .. }
            | KvCommand::Incr { key, .. }
            | KvCommand::Cas { key, .. } => {
                vec![key.as_slice()]
            }
            KvCommand::Del { keys } => keys.iter().map(Vec::as_slice).collect(),
            KvCommand::Noop => Vec::new(),
            KvCommand::Session { command, .. } => command.keys(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing owned byte vectors into a growable buffer cannot fail: postcard only fails
        // on full fixed buffers, sequences of unknown length and custom serializer errors.
        postcard::to_allocvec(self).expect("a KvCommand always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<KvCommand, KvError> {
        decode_exact(bytes)
    }
}

/// What applying a [`KvCommand`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOutput {
    Ok,
    Integer(i64),
    Bool(bool),
}

impl KvOutput {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a KvOutput always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<KvOutput, KvError> {
        decode_exact(bytes)
    }
}

/// Decodes a whole buffer: trailing bytes mean the buffer is not what we think it is.
fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, KvError> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(KvError::TrailingBytes(rest.len()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KvError {
    #[error("malformed encoding: {0}")]
    Decode(#[from] postcard::Error),
    #[error("{0} unexpected bytes after the encoded value")]
    TrailingBytes(usize),
    #[error("unsupported snapshot format version {0}")]
    UnsupportedSnapshotVersion(u8),
}

/// The snapshot format this build writes (version 2 adds the client sessions; version 1, without
/// them, is still read).
const SNAPSHOT_VERSION: u8 = 2;

/// The seed of every (key, value) hash of the digest. Replicas compare digests, possibly across
/// builds during an upgrade, so this and [`entry_digest`]'s input layout never change.
const DIGEST_SEED: u64 = 0x7261_6674_6b76_0001;

/// Applied indexes whose digest is kept, the latest ones (32 bytes each).
const RECENT_DIGESTS: usize = 4096;
/// Every this many indexes the digest is also kept as a checkpoint, further back than the
/// recent ones: a replica lagging by more than [`RECENT_DIGESTS`] entries can still be compared
/// with the others at a checkpoint they all hold.
pub const DIGEST_CHECKPOINT_INTERVAL: u64 = 1024;
/// Checkpoints kept (so the last 256 × 1024 indexes).
const DIGEST_CHECKPOINTS: usize = 256;

/// A digest of a store's whole map (see the module docs). Shown as 32 hex digits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StateDigest(pub u128);

impl StateDigest {
    fn add(&mut self, entry: u128) {
        self.0 = self.0.wrapping_add(entry);
    }

    fn subtract(&mut self, entry: u128) {
        self.0 = self.0.wrapping_sub(entry);
    }

    /// Reads [`StateDigest`]'s display form back.
    pub fn parse_hex(text: &str) -> Option<StateDigest> {
        if text.len() != 32 {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(StateDigest)
    }
}

impl fmt::Display for StateDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The hash of one (key, value) pair. The key's length goes first, so that ("ab", "c") and
/// ("a", "bc") differ.
fn entry_digest(key: &[u8], value: &[u8]) -> u128 {
    let mut hasher = Xxh3::with_seed(DIGEST_SEED);
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(value);
    hasher.digest128()
}

/// Why [`KvStore::digest_at`] has no digest for an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DigestUnavailable {
    /// The replica has not applied that far yet.
    #[error("index {index} is not applied yet (applied: {applied})")]
    NotApplied { index: LogIndex, applied: LogIndex },
    /// The index is older than the digests kept (and is no checkpoint kept).
    #[error(
        "the digest at index {index} is no longer kept (kept from {oldest:?}, and every \
         {DIGEST_CHECKPOINT_INTERVAL}th index back to {oldest_checkpoint:?})"
    )]
    Forgotten {
        index: LogIndex,
        oldest: Option<LogIndex>,
        oldest_checkpoint: Option<LogIndex>,
    },
}

/// The digests a store remembers: after every recent change of its applied index, and at
/// checkpoints further back.
#[derive(Clone, Default)]
struct DigestHistory {
    /// (applied index, digest after it), oldest first. Every change of the state is recorded
    /// here, so the state at an index between two records is the earlier record's.
    recent: VecDeque<(LogIndex, StateDigest)>,
    /// (multiple of [`DIGEST_CHECKPOINT_INTERVAL`], digest at it), oldest first.
    checkpoints: VecDeque<(LogIndex, StateDigest)>,
}

impl fmt::Debug for DigestHistory {
    /// Thousands of digests say nothing in a debug print; their extent does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestHistory")
            .field("recent", &(self.recent.front(), self.recent.back()))
            .field("checkpoints", &self.checkpoints.len())
            .finish()
    }
}

impl DigestHistory {
    /// The history of a state that starts at `index` (a restored snapshot).
    fn starting_at(index: LogIndex, digest: StateDigest) -> DigestHistory {
        let mut history = DigestHistory::default();
        history.record(index, digest);
        history
    }

    /// The state is about to change for `next`, and has not changed since `applied`: a
    /// checkpoint index jumped over in between (by entries that carry no command) has the
    /// current `digest`.
    fn passing(&mut self, applied: LogIndex, next: LogIndex, digest: StateDigest) {
        let below =
            next.0.saturating_sub(1) / DIGEST_CHECKPOINT_INTERVAL * DIGEST_CHECKPOINT_INTERVAL;
        if below > applied.0 {
            self.checkpoint(LogIndex(below), digest);
        }
    }

    /// `digest` is the state's once `index` is applied.
    fn record(&mut self, index: LogIndex, digest: StateDigest) {
        if self.recent.len() == RECENT_DIGESTS {
            self.recent.pop_front();
        }
        self.recent.push_back((index, digest));
        if index.0 > 0 && index.0.is_multiple_of(DIGEST_CHECKPOINT_INTERVAL) {
            self.checkpoint(index, digest);
        }
    }

    fn checkpoint(&mut self, index: LogIndex, digest: StateDigest) {
        if self.checkpoints.len() == DIGEST_CHECKPOINTS {
            self.checkpoints.pop_front();
        }
        self.checkpoints.push_back((index, digest));
    }

    /// The digest at `index`, which the caller knows is applied.
    fn at(&self, index: LogIndex) -> Option<StateDigest> {
        if self
            .recent
            .front()
            .is_some_and(|(oldest, _)| *oldest <= index)
        {
            let after = self.recent.partition_point(|(i, _)| *i <= index);
            return self.recent.get(after - 1).map(|(_, digest)| *digest);
        }
        self.checkpoints
            .binary_search_by_key(&index, |(i, _)| *i)
            .ok()
            .map(|found| self.checkpoints[found].1)
    }
}

/// What a store can compare: see [`KvStore::digest_window`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestWindow {
    /// Every index from this one on (up to the applied index) has a digest.
    pub oldest: Option<LogIndex>,
    /// The oldest checkpoint kept (further checkpoints every [`DIGEST_CHECKPOINT_INTERVAL`]).
    pub oldest_checkpoint: Option<LogIndex>,
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    version: u8,
    applied_index: LogIndex,
    map: &'a BTreeMap<Bytes, Bytes>,
    sessions: &'a Sessions,
}

#[derive(Deserialize)]
struct SnapshotOwned {
    /// Checked before decoding (the first byte).
    _version: u8,
    applied_index: LogIndex,
    map: BTreeMap<Bytes, Bytes>,
    sessions: Sessions,
}

/// Version 1: before client sessions.
#[derive(Deserialize)]
struct SnapshotV1 {
    _version: u8,
    applied_index: LogIndex,
    map: BTreeMap<Bytes, Bytes>,
}

/// The key-value map every replica holds, and the index of the last command applied to it.
/// Keys and values are reference-counted, so a copy for a snapshot copies the map's nodes but
/// not the bytes (their encoding is the same as `Vec<u8>`'s).
#[derive(Debug, Clone, Default)]
pub struct KvStore {
    map: BTreeMap<Bytes, Bytes>,
    applied_index: LogIndex,
    /// The digest of `map`, kept in step by every change ([`KvStore::put`], [`KvStore::remove`]).
    digest: StateDigest,
    history: DigestHistory,
    /// Client sessions: the last numbered write of each client and its answer.
    sessions: Sessions,
}

/// Stores are equal when their maps, sessions and applied indexes are: the digest follows from
/// the map, and how much history each remembers is bookkeeping.
impl PartialEq for KvStore {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
            && self.applied_index == other.applied_index
            && self.sessions == other.sessions
    }
}

impl Eq for KvStore {}

impl KvStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Bytes::as_ref)
    }

    pub fn exists(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }

    /// The value of each key, in order; `None` where the key is absent.
    pub fn mget<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<Option<&[u8]>> {
        keys.iter().map(|key| self.get(key.as_ref())).collect()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The index of the last log entry passed to [`StateMachine::apply`] (or restored from a
    /// snapshot); a read barrier at index `i` may be served once this reaches `i`.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// The whole state, for a Raft snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        snapshot_bytes(self.applied_index, &self.map, &self.sessions)
    }

    /// The client sessions (see [`crate::session`]).
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The digest of the whole map now, kept up to date by every write.
    pub fn digest(&self) -> StateDigest {
        self.digest
    }

    /// The digest computed afresh from every (key, value) pair: what [`KvStore::digest`] must
    /// equal (for tests, and for checking a store at rest). O(size of the map).
    pub fn digest_recomputed(&self) -> StateDigest {
        let mut digest = StateDigest::default();
        for (key, value) in &self.map {
            digest.add(entry_digest(key, value));
        }
        digest
    }

    /// The digest of the state as it was once `index` was applied. `applied` is how far the
    /// driver has applied the log, entries that carry no command included (they leave the
    /// state as it is, so the store's own applied index may be lower).
    pub fn digest_at(
        &self,
        index: LogIndex,
        applied: LogIndex,
    ) -> Result<StateDigest, DigestUnavailable> {
        let applied = applied.max(self.applied_index);
        if index > applied {
            return Err(DigestUnavailable::NotApplied { index, applied });
        }
        self.history.at(index).ok_or(DigestUnavailable::Forgotten {
            index,
            oldest: self.history.recent.front().map(|(i, _)| *i),
            oldest_checkpoint: self.history.checkpoints.front().map(|(i, _)| *i),
        })
    }

    /// Which indexes [`KvStore::digest_at`] can answer (besides the applied one).
    pub fn digest_window(&self) -> DigestWindow {
        DigestWindow {
            oldest: self.history.recent.front().map(|(i, _)| *i),
            oldest_checkpoint: self.history.checkpoints.front().map(|(i, _)| *i),
        }
    }

    /// Sets `key` to `value`, keeping the digest in step.
    fn put(&mut self, key: Bytes, value: Bytes) {
        self.digest.add(entry_digest(&key, &value));
        if let Some(old) = self.map.insert(key.clone(), value) {
            self.digest.subtract(entry_digest(&key, &old));
        }
    }

    /// Removes `key`, keeping the digest in step; whether it existed.
    fn remove(&mut self, key: &[u8]) -> bool {
        match self.map.remove_entry(key) {
            Some((key, old)) => {
                self.digest.subtract(entry_digest(&key, &old));
                true
            }
            None => false,
        }
    }

    /// Rebuilds a store from [`KvStore::snapshot`]'s bytes.
    pub fn restore(bytes: &[u8]) -> Result<KvStore, KvError> {
        // The version is the first byte; checking it first gives a clear error for snapshots from
        // a newer build instead of a confusing decode failure further in.
        let (applied_index, map, sessions) = match bytes.first() {
            Some(1) => {
                let old: SnapshotV1 = decode_exact(bytes)?;
                (old.applied_index, old.map, Sessions::default())
            }
            Some(&version) if version != SNAPSHOT_VERSION => {
                return Err(KvError::UnsupportedSnapshotVersion(version))
            }
            _ => {
                let snapshot: SnapshotOwned = decode_exact(bytes)?;
                (snapshot.applied_index, snapshot.map, snapshot.sessions)
            }
        };
        let mut store = KvStore {
            map,
            applied_index,
            sessions: sessions.reindexed(),
            ..KvStore::default()
        };
        // The snapshot does not carry the digest (its format predates it): recomputing it is
        // O(size of the map), the same as decoding the map was.
        store.digest = store.digest_recomputed();
        store.history = DigestHistory::starting_at(store.applied_index, store.digest);
        Ok(store)
    }

    /// Applies one write. Refusals are deterministic, so every replica refuses alike.
    pub fn execute(&mut self, command: KvCommand) -> Result<KvOutput, ApplyError> {
        match command {
            KvCommand::Set { key, value } => {
                self.put(key.into(), value.into());
                Ok(KvOutput::Ok)
            }
            KvCommand::Del { keys } => {
                let removed = keys.iter().filter(|key| self.remove(key)).count();
                Ok(KvOutput::Integer(count_to_i64(removed)))
            }
            KvCommand::Incr { key, by } => {
                let current = match self.get(&key) {
                    None => 0,
                    Some(value) => parse_integer(value)
                        .ok_or_else(|| ApplyError::Rejected(NOT_AN_INTEGER.to_owned()))?,
                };
                let updated = current
                    .checked_add(by)
                    .ok_or_else(|| ApplyError::Rejected(INCR_OVERFLOW.to_owned()))?;
                self.put(key.into(), updated.to_string().into_bytes().into());
                Ok(KvOutput::Integer(updated))
            }
            KvCommand::Cas { key, expected, new } => {
                let matches = self.get(&key) == expected.as_deref();
                if matches {
                    self.put(key.into(), new.into());
                }
                Ok(KvOutput::Bool(matches))
            }
            KvCommand::Noop => Ok(KvOutput::Ok),
            // `apply` unwraps one session; only a nested one gets here.
            KvCommand::Session { .. } => Err(ApplyError::Rejected(
                "ERR SESSION cannot wrap another SESSION".to_owned(),
            )),
        }
    }

    /// Applies write `seq` of `client`'s session at `index`: once (see [`crate::session`]).
    fn execute_once(
        &mut self,
        index: LogIndex,
        client: u64,
        seq: u64,
        command: KvCommand,
    ) -> Result<Vec<u8>, ApplyError> {
        match self.sessions.verdict(client, seq) {
            Verdict::Duplicate(answer) => answer.map_err(ApplyError::Rejected),
            Verdict::Refuse(text) => Err(ApplyError::Rejected(text)),
            Verdict::Apply => {
                let answer = match self.execute(command) {
                    Ok(output) => Ok(output.encode()),
                    Err(ApplyError::Rejected(text)) => Err(text),
                    Err(fatal) => return Err(fatal),
                };
                self.sessions.record(client, seq, answer.clone(), index);
                answer.map_err(ApplyError::Rejected)
            }
        }
    }
}

fn count_to_i64(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl KvStore {
    /// Records that the committed entry at `index` carries no command (a new leader's
    /// `TermStart`), so read barriers at that index are not kept waiting.
    pub fn skip_entry(&mut self, index: LogIndex) -> Result<(), ApplyError> {
        self.advance_applied_index(index)?;
        self.history.record(index, self.digest);
        Ok(())
    }

    fn advance_applied_index(&mut self, index: LogIndex) -> Result<(), ApplyError> {
        if index <= self.applied_index {
            // Applying an entry twice would silently corrupt INCR/DEL results; only a driver bug
            // gets here, and this replica's state can no longer be trusted.
            return Err(ApplyError::Fatal(format!(
                "entry {index} applied after entry {}",
                self.applied_index
            )));
        }
        self.history.passing(self.applied_index, index, self.digest);
        self.applied_index = index;
        Ok(())
    }
}

fn snapshot_bytes(
    applied_index: LogIndex,
    map: &BTreeMap<Bytes, Bytes>,
    sessions: &Sessions,
) -> Vec<u8> {
    postcard::to_allocvec(&SnapshotRef {
        version: SNAPSHOT_VERSION,
        applied_index,
        map,
        sessions,
    })
    .expect("a snapshot always serializes")
}

impl StateMachine for KvStore {
    fn snapshot(&self) -> Vec<u8> {
        KvStore::snapshot(self)
    }

    /// Copying the map takes about half as long as serializing it (9–17 ms against 22–31 ms at
    /// 100,000 keys of 256 bytes), and the copy is serialized while entries go on being applied.
    fn snapshot_job(&self) -> Option<raftengine::SnapshotJob> {
        // The map, sessions and index only: the digest history is not part of a snapshot.
        let (map, sessions, applied_index) =
            (self.map.clone(), self.sessions.clone(), self.applied_index);
        Some(Box::new(move || {
            snapshot_bytes(applied_index, &map, &sessions)
        }))
    }

    fn restore_from(&mut self, snapshot: &[u8]) -> Result<(), ApplyError> {
        *self = KvStore::restore(snapshot)
            .map_err(|e| ApplyError::Fatal(format!("unreadable snapshot: {e}")))?;
        Ok(())
    }

    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Result<Vec<u8>, ApplyError> {
        // The index advances even when the command is refused: the entry has been consumed, and a
        // read barrier at this index must not wait for it forever.
        self.advance_applied_index(index)?;
        let result = KvCommand::decode(command)
            .map_err(|err| ApplyError::Rejected(format!("ERR malformed command: {err}")))
            .and_then(|command| match command {
                KvCommand::Session {
                    client,
                    seq,
                    command,
                } => self.execute_once(index, client, seq, *command),
                command => self.execute(command).map(|output| output.encode()),
            });
        // Refused commands are recorded too: the state at this index is the one before.
        self.history.record(index, self.digest);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str) -> KvCommand {
        KvCommand::Set {
            key: key.into(),
            value: value.into(),
        }
    }

    /// Applies `commands` at indexes 1, 2, ... and returns each decoded result.
    fn apply_all(store: &mut KvStore, commands: &[KvCommand]) -> Vec<Result<KvOutput, ApplyError>> {
        let start = store.applied_index().0;
        commands
            .iter()
            .zip(start + 1..)
            .map(|(command, index)| {
                store
                    .apply(LogIndex(index), &command.encode())
                    .map(|bytes| KvOutput::decode(&bytes).unwrap())
            })
            .collect()
    }

    #[test]
    fn commands_and_outputs_round_trip() {
        let commands = [
            set("k", "v"),
            KvCommand::Del {
                keys: vec![b"a".to_vec(), vec![]],
            },
            KvCommand::Incr {
                key: b"n".to_vec(),
                by: i64::MIN,
            },
            KvCommand::Cas {
                key: b"k".to_vec(),
                expected: None,
                new: b"\0\xff".to_vec(),
            },
            KvCommand::Cas {
                key: b"k".to_vec(),
                expected: Some(vec![]),
                new: vec![],
            },
            KvCommand::Noop,
        ];
        for command in commands {
            assert_eq!(KvCommand::decode(&command.encode()).unwrap(), command);
        }
        for output in [
            KvOutput::Ok,
            KvOutput::Integer(-5),
            KvOutput::Bool(true),
            KvOutput::Bool(false),
        ] {
            assert_eq!(KvOutput::decode(&output.encode()).unwrap(), output);
        }
    }

    #[test]
    fn the_encoding_is_stable() {
        // Log entries outlive builds: these bytes must not change.
        assert_eq!(set("k", "v").encode(), [0, 1, b'k', 1, b'v']);
        assert_eq!(KvCommand::Noop.encode(), [4]);
        assert_eq!(KvOutput::Bool(true).encode(), [2, 1]);
    }

    #[test]
    fn set_get_exists_mget() {
        let mut store = KvStore::new();
        let results = apply_all(&mut store, &[set("a", "1"), set("b", ""), set("a", "2")]);
        assert!(results.iter().all(|result| *result == Ok(KvOutput::Ok)));
        assert_eq!(store.get(b"a"), Some(&b"2"[..]));
        assert_eq!(store.get(b"b"), Some(&b""[..]));
        assert_eq!(store.get(b"c"), None);
        assert!(store.exists(b"b"));
        assert!(!store.exists(b"c"));
        assert_eq!(
            store.mget(&[&b"a"[..], b"c", b"b"]),
            vec![Some(&b"2"[..]), None, Some(&b""[..])]
        );
        assert_eq!(store.len(), 2);
        assert_eq!(store.applied_index(), LogIndex(3));
    }

    #[test]
    fn del_counts_keys_that_existed_once_each() {
        let mut store = KvStore::new();
        let results = apply_all(
            &mut store,
            &[
                set("a", "1"),
                set("b", "2"),
                KvCommand::Del {
                    keys: vec![b"a".to_vec(), b"a".to_vec(), b"b".to_vec(), b"x".to_vec()],
                },
            ],
        );
        assert_eq!(results[2], Ok(KvOutput::Integer(2)));
        assert!(store.is_empty());
    }

    #[test]
    fn incr_follows_redis() {
        let incr = |key: &str, by| KvCommand::Incr {
            key: key.into(),
            by,
        };
        let mut store = KvStore::new();
        let results = apply_all(
            &mut store,
            &[
                incr("n", 1),
                incr("n", -11),
                set("s", "abc"),
                incr("s", 1),
                set("z", "007"),
                incr("z", 1),
                set("max", &i64::MAX.to_string()),
                incr("max", 1),
                set("min", &i64::MIN.to_string()),
                incr("min", -1),
                incr("min", i64::MAX),
            ],
        );
        let rejected = |text: &str| Err(ApplyError::Rejected(text.to_owned()));
        assert_eq!(results[0], Ok(KvOutput::Integer(1)));
        assert_eq!(results[1], Ok(KvOutput::Integer(-10)));
        assert_eq!(results[3], rejected(NOT_AN_INTEGER));
        assert_eq!(results[5], rejected(NOT_AN_INTEGER));
        assert_eq!(results[7], rejected(INCR_OVERFLOW));
        assert_eq!(results[9], rejected(INCR_OVERFLOW));
        assert_eq!(results[10], Ok(KvOutput::Integer(-1)));
        // Refusals leave the value alone; results are stored as canonical decimals.
        assert_eq!(store.get(b"s"), Some(&b"abc"[..]));
        assert_eq!(store.get(b"n"), Some(&b"-10"[..]));
        assert_eq!(store.applied_index(), LogIndex(11));
    }

    #[test]
    fn cas_compares_with_the_current_value_or_absence() {
        let cas = |expected: Option<&str>, new: &str| KvCommand::Cas {
            key: b"k".to_vec(),
            expected: expected.map(Into::into),
            new: new.into(),
        };
        let mut store = KvStore::new();
        let results = apply_all(
            &mut store,
            &[
                cas(Some(""), "x"), // absent is not the empty value
                cas(None, "1"),
                cas(None, "2"),
                cas(Some("2"), "3"),
                cas(Some("1"), ""),
                cas(Some(""), "4"),
            ],
        );
        let swapped: Vec<bool> = results
            .into_iter()
            .map(|result| match result {
                Ok(KvOutput::Bool(swapped)) => swapped,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(swapped, [false, true, false, false, true, true]);
        assert_eq!(store.get(b"k"), Some(&b"4"[..]));
    }

    #[test]
    fn undecodable_commands_are_rejected_deterministically() {
        let mut store = KvStore::new();
        for (index, garbage) in [&[][..], &[200], &[0, 5, b'a'], &[4, 4]].iter().enumerate() {
            let result = store.apply(LogIndex(index as u64 + 1), garbage);
            assert!(
                matches!(&result, Err(ApplyError::Rejected(text)) if text.starts_with("ERR malformed command")),
                "{garbage:?} gave {result:?}"
            );
        }
        assert_eq!(store.applied_index(), LogIndex(4));
        assert!(store.is_empty());
    }

    #[test]
    fn applying_an_old_index_again_is_fatal() {
        let mut store = KvStore::new();
        apply_all(&mut store, &[KvCommand::Noop, KvCommand::Noop]);
        let noop = KvCommand::Noop.encode();
        assert!(matches!(
            store.apply(LogIndex(2), &noop),
            Err(ApplyError::Fatal(_))
        ));
        assert!(matches!(
            store.apply(LogIndex(0), &noop),
            Err(ApplyError::Fatal(_))
        ));
        // Gaps are allowed: entries without a command (a new leader's TermStart) are not applied.
        assert!(store.apply(LogIndex(5), &noop).is_ok());
        assert!(store.skip_entry(LogIndex(6)).is_ok());
        assert_eq!(store.applied_index(), LogIndex(6));
        assert!(matches!(
            store.skip_entry(LogIndex(6)),
            Err(ApplyError::Fatal(_))
        ));
    }

    #[test]
    fn the_snapshot_encoding_is_stable() {
        // version 1, applied index 3, 2 keys, then each key and value as length + bytes. Stores
        // snapshotted by earlier builds (which held `Vec<u8>`s) restore byte for byte.
        let mut store = KvStore::new();
        apply_all(&mut store, &[set("b", "2"), set("a", "1"), KvCommand::Noop]);
        let version_1 = [1, 3, 2, 1, b'a', 1, b'1', 1, b'b', 1, b'2'];
        assert_eq!(KvStore::restore(&version_1).unwrap(), store);
        // Version 2 adds the sessions after the map (none here: a count of 0).
        let bytes = store.snapshot();
        assert_eq!(bytes, [2, 3, 2, 1, b'a', 1, b'1', 1, b'b', 1, b'2', 0]);
        assert_eq!(KvStore::restore(&bytes).unwrap(), store);
    }

    fn numbered(client: u64, seq: u64, command: KvCommand) -> KvCommand {
        KvCommand::Session {
            client,
            seq,
            command: Box::new(command),
        }
    }

    fn incr(key: &str) -> KvCommand {
        KvCommand::Incr {
            key: key.into(),
            by: 1,
        }
    }

    /// A numbered write sent again (after an unknown outcome) is answered as the first time and
    /// applied once; snapshots carry the sessions, so a replica restored from one does the same.
    #[test]
    fn a_numbered_write_takes_effect_once_however_often_it_is_sent() {
        let mut store = KvStore::new();
        let results = apply_all(
            &mut store,
            &[
                numbered(9, 1, incr("n")),
                numbered(9, 1, incr("n")),
                numbered(9, 2, incr("n")),
                numbered(9, 2, incr("n")),
                incr("n"),
                numbered(9, 1, incr("n")),
                numbered(4, 3, incr("n")),
                numbered(9, 3, numbered(9, 4, incr("n"))),
            ],
        );
        assert_eq!(results[0], Ok(KvOutput::Integer(1)));
        assert_eq!(
            results[1],
            Ok(KvOutput::Integer(1)),
            "the first answer again"
        );
        assert_eq!(results[2], Ok(KvOutput::Integer(2)));
        assert_eq!(results[3], Ok(KvOutput::Integer(2)));
        assert_eq!(
            results[4],
            Ok(KvOutput::Integer(3)),
            "writes without a session as before"
        );
        assert!(matches!(&results[5], Err(ApplyError::Rejected(t)) if t.contains("older")));
        assert!(matches!(&results[6], Err(ApplyError::Rejected(t)) if t.contains("expired")));
        assert!(
            matches!(&results[7], Err(ApplyError::Rejected(t)) if t.contains("another SESSION"))
        );
        assert_eq!(store.get(b"n"), Some(&b"3"[..]));

        let mut restored = KvStore::restore(&store.snapshot()).unwrap();
        assert_eq!(restored, store);
        let again = apply_all(&mut restored, &[numbered(9, 3, incr("n"))]);
        assert!(
            matches!(&again[0], Err(ApplyError::Rejected(t)) if t.contains("another SESSION")),
            "the refusal is remembered as the answer"
        );
        assert_eq!(restored.get(b"n"), Some(&b"3"[..]));
    }

    #[test]
    fn a_snapshot_job_serializes_the_state_of_the_moment_it_was_made() {
        let mut store = KvStore::new();
        apply_all(&mut store, &[set("a", "1"), set("b", "2")]);
        let now = store.snapshot();
        let job = StateMachine::snapshot_job(&store).expect("the store copies itself");
        // Applying goes on before the job runs.
        store
            .apply(LogIndex(3), &set("a", "changed").encode())
            .unwrap();
        assert_eq!(job(), now);
        assert_ne!(store.snapshot(), now);
    }

    #[test]
    fn snapshot_restores_map_and_index() {
        let mut store = KvStore::new();
        apply_all(
            &mut store,
            &[set("a", "1"), set("\0", "\u{ff}"), KvCommand::Noop],
        );
        let restored = KvStore::restore(&store.snapshot()).unwrap();
        assert_eq!(restored, store);
        assert_eq!(restored.applied_index(), LogIndex(3));
        let empty = KvStore::restore(&KvStore::new().snapshot()).unwrap();
        assert_eq!(empty, KvStore::new());
    }

    /// A random write over a few keys and values, so that keys are overwritten, deleted and
    /// incremented again and again.
    fn random_command(rng: &mut fastrand::Rng) -> KvCommand {
        let key = |rng: &mut fastrand::Rng| format!("k{}", rng.u8(..8)).into_bytes();
        let value = |rng: &mut fastrand::Rng| match rng.u8(..4) {
            0 => Vec::new(),
            1 => rng.i64(-5..5).to_string().into_bytes(),
            _ => format!("v{}", rng.u8(..6)).into_bytes(),
        };
        match rng.u8(..6) {
            0 | 1 => KvCommand::Set {
                key: key(rng),
                value: value(rng),
            },
            2 => KvCommand::Del {
                keys: (0..rng.usize(1..4)).map(|_| key(rng)).collect(),
            },
            3 => KvCommand::Incr {
                key: key(rng),
                by: rng.i64(-3..3),
            },
            4 => KvCommand::Cas {
                key: key(rng),
                expected: rng.bool().then(|| value(rng)),
                new: value(rng),
            },
            _ => KvCommand::Noop,
        }
    }

    #[test]
    fn the_incremental_digest_equals_the_recomputed_one() {
        for seed in 0..20 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut store = KvStore::new();
            for step in 1..=400u64 {
                let index = LogIndex(step);
                match rng.u8(..20) {
                    // Entries without a command, a snapshot and its restore, now and then.
                    0 => store.skip_entry(index).unwrap(),
                    1 => {
                        let restored = KvStore::restore(&store.snapshot()).unwrap();
                        assert_eq!(restored.digest(), store.digest(), "seed {seed}");
                        store = restored;
                        store.skip_entry(index).unwrap();
                    }
                    _ => {
                        let _ = store.apply(index, &random_command(&mut rng).encode());
                    }
                }
                assert_eq!(
                    store.digest(),
                    store.digest_recomputed(),
                    "seed {seed} step {step}"
                );
            }
            assert!(!store.is_empty(), "the run wrote something");
        }
    }

    #[test]
    fn the_same_writes_give_the_same_digest_and_one_different_write_another() {
        let commands: Vec<KvCommand> = {
            let mut rng = fastrand::Rng::with_seed(7);
            (0..300).map(|_| random_command(&mut rng)).collect()
        };
        let (mut a, mut b) = (KvStore::new(), KvStore::new());
        apply_all(&mut a, &commands);
        apply_all(&mut b, &commands);
        assert_eq!(a.digest(), b.digest());
        // One store gets one write the other never saw (a forged entry), then both go on alike.
        let mut c = KvStore::new();
        apply_all(&mut c, &commands[..150]);
        c.apply(LogIndex(151), &set("k1", "forged").encode())
            .unwrap();
        apply_all(&mut c, &commands[151..]);
        assert_eq!(c.applied_index(), a.applied_index());
        let at = |store: &KvStore, index| store.digest_at(LogIndex(index), LogIndex(300)).unwrap();
        assert_eq!(at(&c, 150), at(&a, 150));
        assert_ne!(at(&c, 151), at(&a, 151));
        // Later writes may or may not overwrite the forged value; the digests tell which.
        assert_eq!(c == a, c.digest() == a.digest());
        // The digest does not depend on the order keys were written in, only on the map.
        let mut forward = KvStore::new();
        apply_all(&mut forward, &[set("a", "1"), set("b", "2")]);
        let mut backward = KvStore::new();
        apply_all(&mut backward, &[set("b", "2"), set("a", "1")]);
        assert_eq!(forward.digest(), backward.digest());
        // Moving bytes between key and value changes it.
        let mut split = KvStore::new();
        apply_all(&mut split, &[set("ab", "c")]);
        let mut other = KvStore::new();
        apply_all(&mut other, &[set("a", "bc")]);
        assert_ne!(split.digest(), other.digest());
        assert_ne!(KvStore::new().digest(), split.digest());
    }

    #[test]
    fn a_digest_is_pinned_across_builds() {
        // Replicas of different builds compare digests during an upgrade: the hash, its seed
        // and the layout of its input must not change.
        let mut store = KvStore::new();
        apply_all(&mut store, &[set("k", "v")]);
        assert_eq!(
            store.digest().to_string(),
            "ed7833b77cad305b3db664ba5be2fe80"
        );
        assert_eq!(
            StateDigest::parse_hex(&store.digest().to_string()),
            Some(store.digest())
        );
        assert_eq!(StateDigest::parse_hex("xyz"), None);
    }

    #[test]
    fn digests_are_remembered_per_applied_index() {
        let mut store = KvStore::new();
        apply_all(&mut store, &[set("a", "1"), set("b", "2")]);
        let at_two = store.digest();
        // Index 3 carries no command; 4 changes the state.
        store.skip_entry(LogIndex(3)).unwrap();
        store.apply(LogIndex(4), &set("a", "3").encode()).unwrap();
        assert_eq!(store.digest_at(LogIndex(2), LogIndex(4)), Ok(at_two));
        assert_eq!(store.digest_at(LogIndex(3), LogIndex(4)), Ok(at_two));
        assert_eq!(
            store.digest_at(LogIndex(4), LogIndex(4)),
            Ok(store.digest())
        );
        // The driver applied a further entry without a command: same state.
        assert_eq!(
            store.digest_at(LogIndex(5), LogIndex(5)),
            Ok(store.digest())
        );
        assert_eq!(
            store.digest_at(LogIndex(6), LogIndex(5)),
            Err(DigestUnavailable::NotApplied {
                index: LogIndex(6),
                applied: LogIndex(5)
            })
        );
        // A restored store knows its snapshot's index on.
        let restored = KvStore::restore(&store.snapshot()).unwrap();
        assert_eq!(
            restored.digest_at(LogIndex(4), LogIndex(4)),
            Ok(store.digest())
        );
        assert!(matches!(
            restored.digest_at(LogIndex(2), LogIndex(4)),
            Err(DigestUnavailable::Forgotten { .. })
        ));
    }

    #[test]
    fn old_digests_are_kept_at_checkpoints_only() {
        let mut store = KvStore::new();
        let total = RECENT_DIGESTS as u64 + 3 * DIGEST_CHECKPOINT_INTERVAL;
        let mut at_checkpoint = BTreeMap::new();
        for index in 1..=total {
            let index = LogIndex(index);
            // A gap over the first checkpoint: entries without a command are not applied.
            if index.0 == DIGEST_CHECKPOINT_INTERVAL || index.0 == DIGEST_CHECKPOINT_INTERVAL - 1 {
                continue;
            }
            if index.0 == DIGEST_CHECKPOINT_INTERVAL + 1 {
                at_checkpoint.insert(DIGEST_CHECKPOINT_INTERVAL, store.digest());
            }
            let command = set(&format!("k{}", index.0 % 7), &index.0.to_string());
            store.apply(index, &command.encode()).unwrap();
            if index.0.is_multiple_of(DIGEST_CHECKPOINT_INTERVAL) {
                at_checkpoint.insert(index.0, store.digest());
            }
        }
        let window = store.digest_window();
        assert_eq!(
            window.oldest,
            Some(LogIndex(total - RECENT_DIGESTS as u64 + 1))
        );
        assert_eq!(
            window.oldest_checkpoint,
            Some(LogIndex(DIGEST_CHECKPOINT_INTERVAL))
        );
        for (index, digest) in at_checkpoint {
            assert_eq!(
                store.digest_at(LogIndex(index), LogIndex(total)),
                Ok(digest),
                "checkpoint {index}"
            );
        }
        assert!(matches!(
            store.digest_at(LogIndex(DIGEST_CHECKPOINT_INTERVAL + 1), LogIndex(total)),
            Err(DigestUnavailable::Forgotten { .. })
        ));
    }

    #[test]
    fn restore_rejects_bad_snapshots() {
        let snapshot = KvStore::new().snapshot();
        let mut future = snapshot.clone();
        future[0] = 9;
        assert_eq!(
            KvStore::restore(&future),
            Err(KvError::UnsupportedSnapshotVersion(9))
        );
        assert!(KvStore::restore(&[]).is_err());
        assert!(KvStore::restore(&snapshot[..snapshot.len() - 1]).is_err());
        let mut trailing = snapshot;
        trailing.push(0);
        assert_eq!(KvStore::restore(&trailing), Err(KvError::TrailingBytes(1)));
    }
}
