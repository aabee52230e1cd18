//! The cluster record: what a data directory remembers of how its node first started, so that a
//! restart cannot silently start another cluster.
//!
//! A new cluster's voters are not in its log (the core starts from `Config::voters` until a
//! configuration entry is appended), so without a record a node restarted without its peer list
//! would believe it is the only voter, elect itself and commit alone: split brain from an
//! operator's slip. As etcd tells `initial-cluster-state=new` from an existing member's data,
//! the first start writes `cluster.json` in the data directory, atomically (temporary file,
//! fsync, rename, directory fsync), before the node takes part in anything:
//!
//! - a node starting a new cluster saves the cluster id and the initial voters with their
//!   addresses;
//! - a node started with `join` saves that it joined (and the members it was told to reach).
//!
//! Later starts take the membership from the record (and from the log and snapshots, which the
//! core reads once they hold a configuration). A missing peer list is fine: the saved one is
//! used. A peer list naming the voters of the configuration in the log (the cluster as it is
//! after membership changes) is fine too. Flags that contradict both (another cluster id,
//! another voter set, `join` for a node that started the cluster or the reverse, another node
//! id) are refused with a [`BootstrapError`]. A directory that holds Raft state but no record
//! is refused too.

use super::NodeConfig;
use raftengine::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The record's file name in the data directory.
pub const RECORD_FILE: &str = "cluster.json";
const RECORD_VERSION: u32 = 1;

/// How a data directory's node first started (the content of `cluster.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The record's format version (1); another version is refused as corrupt.
    pub version: u32,
    /// The cluster id the node first started with ([`NodeConfig::cluster_id`]).
    pub cluster_id: u64,
    /// The id of the node this directory belongs to.
    pub node_id: u64,
    /// How the node first started: a new cluster or a join.
    pub start: RecordedStart,
}

/// Whether the node started a new cluster or joined a running one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordedStart {
    /// Started a new cluster of `voters` (this node included); `peers` are the other voters'
    /// Raft addresses.
    NewCluster {
        /// The initial voters' ids.
        voters: BTreeSet<u64>,
        /// The other initial voters and their addresses.
        peers: Vec<RecordedPeer>,
    },
    /// Joined a running cluster through `contacts` (members it could reach).
    Joined {
        /// The members the node was given to reach.
        contacts: Vec<RecordedPeer>,
    },
}

/// Another node and its Raft address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPeer {
    /// The peer's node id.
    pub id: u64,
    /// The peer's Raft (node-to-node) address, `host:port`.
    pub raft: String,
}

/// Why a node refuses to start given its data directory's record.
#[derive(Debug, Error)]
pub enum BootstrapError {
    /// The directory belongs to another node id.
    #[error("the data directory belongs to node {saved}, not to node {given}")]
    NodeId {
        /// The id in the record.
        saved: u64,
        /// The id in the configuration.
        given: u64,
    },
    /// The directory belongs to another cluster id.
    #[error("the data directory belongs to cluster {saved}, not to cluster {given}")]
    ClusterId {
        /// The cluster id in the record.
        saved: u64,
        /// The cluster id in the configuration.
        given: u64,
    },
    /// The configured peers make a voter set that is neither the recorded initial one nor the
    /// one of the configuration in the log.
    #[error("this node started a cluster of voters {saved:?}; the peers given make {given:?} (leave the peers out to use the saved ones)")]
    Voters {
        /// The recorded initial voters.
        saved: Vec<u64>,
        /// The voters the configured peers and this node make.
        given: Vec<u64>,
    },
    /// The node started a new cluster but was now started with `join`.
    #[error("this node started a new cluster; it cannot be started with join")]
    JoinAfterNewCluster,
    /// The node joined a running cluster but was now started as a new cluster's voter.
    #[error("this node joined a running cluster; start it with join (its membership comes from the cluster)")]
    NewClusterAfterJoin,
    /// The directory (named) holds Raft state but no record.
    #[error("{} holds Raft state but no {RECORD_FILE}: it was not made by this version, or the record was lost; refusing to guess the cluster's voters", .0.display())]
    StateWithoutRecord(PathBuf),
    /// The record could not be parsed or has an unknown version.
    #[error("cluster record {}: {reason}", path.display())]
    Corrupt {
        /// The record's file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing the record failed.
    #[error("cluster record {}: {source}", path.display())]
    Io {
        /// The record's file (or its temporary file).
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What a node starts with, once the record and the configuration agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StartPlan {
    /// The initial voters (empty for a node that joined).
    pub voters: Vec<NodeId>,
    /// Where the other voters (or the contacts of a joining node) listen.
    pub peers: BTreeMap<NodeId, SocketAddr>,
}

impl StartPlan {
    /// The plan straight from the configuration (a node without a data directory record).
    pub fn from_config(config: &NodeConfig) -> StartPlan {
        StartPlan {
            voters: config.initial_voters(),
            peers: config.peers.clone(),
        }
    }
}

/// Reads the record of `dir`, checks `config` against it (or writes it on a first start) and
/// returns the plan to start with. `has_state`: the directory holds a log or a snapshot.
///
/// `current`: the voters of the configuration the stored log or snapshot holds, if any.
pub(crate) fn reconcile(
    config: &NodeConfig,
    dir: &Path,
    has_state: bool,
    current: Option<BTreeSet<u64>>,
) -> Result<StartPlan, BootstrapError> {
    #[cfg(feature = "mutations")]
    if config.mutation == Some(super::RuntimeMutation::BootstrapRecordNotSaved) {
        return Ok(StartPlan::from_config(config));
    }
    let path = dir.join(RECORD_FILE);
    let saved = read(&path)?;
    let (plan, record) = decide(config, saved.clone(), has_state, current, dir)?;
    if saved.as_ref() != Some(&record) {
        write_atomically(dir, &path, &record)?;
        tracing::info!(path = %path.display(), ?record, "cluster record saved");
    }
    Ok(plan)
}

/// The plan and the record to keep, given the saved record (pure: no I/O).
fn decide(
    config: &NodeConfig,
    saved: Option<ClusterRecord>,
    has_state: bool,
    current: Option<BTreeSet<u64>>,
    dir: &Path,
) -> Result<(StartPlan, ClusterRecord), BootstrapError> {
    let Some(saved) = saved else {
        if has_state {
            return Err(BootstrapError::StateWithoutRecord(dir.to_path_buf()));
        }
        return Ok((StartPlan::from_config(config), record_of(config)));
    };
    if saved.node_id != config.id.0 {
        return Err(BootstrapError::NodeId {
            saved: saved.node_id,
            given: config.id.0,
        });
    }
    if saved.cluster_id != config.cluster_id {
        return Err(BootstrapError::ClusterId {
            saved: saved.cluster_id,
            given: config.cluster_id,
        });
    }
    let path = dir.join(RECORD_FILE);
    match &saved.start {
        RecordedStart::NewCluster { voters, peers } => {
            if config.join {
                return Err(BootstrapError::JoinAfterNewCluster);
            }
            if config.peers.is_empty() {
                let plan = StartPlan {
                    voters: voters.iter().map(|&v| NodeId(v)).collect(),
                    peers: parse_addrs(peers, &path)?,
                };
                return Ok((plan, saved));
            }
            let given: Vec<u64> = config.initial_voters().iter().map(|v| v.0).collect();
            if current.is_some_and(|now| now.into_iter().collect::<Vec<_>>() == given) {
                // The cluster as it is now, after membership changes: the log's configuration
                // rules, the record stays as the first start made it.
                return Ok((StartPlan::from_config(config), saved));
            }
            if given != voters.iter().copied().collect::<Vec<_>>() {
                return Err(BootstrapError::Voters {
                    saved: voters.iter().copied().collect(),
                    given,
                });
            }
            // The same voters, perhaps at new addresses: the given ones win and are kept.
            Ok((StartPlan::from_config(config), record_of(config)))
        }
        RecordedStart::Joined { contacts } => {
            if !config.join && !config.peers.is_empty() {
                return Err(BootstrapError::NewClusterAfterJoin);
            }
            if config.peers.is_empty() {
                let plan = StartPlan {
                    voters: Vec::new(),
                    peers: parse_addrs(contacts, &path)?,
                };
                return Ok((plan, saved));
            }
            Ok((StartPlan::from_config(config), record_of(config)))
        }
    }
}

fn record_of(config: &NodeConfig) -> ClusterRecord {
    let peers = config
        .peers
        .iter()
        .map(|(id, addr)| RecordedPeer {
            id: id.0,
            raft: addr.to_string(),
        })
        .collect();
    let start = if config.join {
        RecordedStart::Joined { contacts: peers }
    } else {
        RecordedStart::NewCluster {
            voters: config.initial_voters().iter().map(|v| v.0).collect(),
            peers,
        }
    };
    ClusterRecord {
        version: RECORD_VERSION,
        cluster_id: config.cluster_id,
        node_id: config.id.0,
        start,
    }
}

fn parse_addrs(
    peers: &[RecordedPeer],
    path: &Path,
) -> Result<BTreeMap<NodeId, SocketAddr>, BootstrapError> {
    peers
        .iter()
        .map(|peer| {
            let parsed = peer.raft.parse().map_err(|_| BootstrapError::Corrupt {
                path: path.to_path_buf(),
                reason: format!(
                    "node {}'s address {:?} is not an IP address and port",
                    peer.id, peer.raft
                ),
            })?;
            Ok((NodeId(peer.id), parsed))
        })
        .collect()
}

fn read(path: &Path) -> Result<Option<ClusterRecord>, BootstrapError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BootstrapError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let corrupt = |reason: String| BootstrapError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let record: ClusterRecord = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if record.version != RECORD_VERSION {
        return Err(corrupt(format!(
            "version {} is not supported (this build reads {RECORD_VERSION})",
            record.version
        )));
    }
    Ok(Some(record))
}

/// Temporary file, fsync, rename over `path`, fsync of the directory: a crash leaves the old
/// record or the new one.
fn write_atomically(dir: &Path, path: &Path, record: &ClusterRecord) -> Result<(), BootstrapError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BootstrapError::Io { path, source }
    };
    let temp = dir.join(format!("{RECORD_FILE}.tmp"));
    let mut text = serde_json::to_string_pretty(record).map_err(|e| BootstrapError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    text.push('\n');
    let mut file = File::create(&temp).map_err(io(&temp))?;
    file.write_all(text.as_bytes()).map_err(io(&temp))?;
    file.sync_all().map_err(io(&temp))?;
    drop(file);
    fs::rename(&temp, path).map_err(io(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: u64, peers: &[u64], join: bool) -> NodeConfig {
        let peers = peers
            .iter()
            .map(|&p| {
                (
                    NodeId(p),
                    format!("127.0.0.1:{}", 7000 + p).parse().expect("addr"),
                )
            })
            .collect();
        let mut config = NodeConfig::new(NodeId(id), 7, peers, "unused");
        config.join = join;
        config
    }

    fn decide_on(
        config: &NodeConfig,
        saved: &ClusterRecord,
    ) -> Result<(StartPlan, ClusterRecord), BootstrapError> {
        decide(config, Some(saved.clone()), true, None, Path::new("dir"))
    }

    #[test]
    fn a_restart_without_peers_takes_the_saved_voters() {
        let first = config(1, &[2, 3], false);
        let (plan, record) = decide(&first, None, false, None, Path::new("dir")).expect("first");
        assert_eq!(plan.voters, vec![NodeId(1), NodeId(2), NodeId(3)]);
        let (plan, kept) = decide_on(&config(1, &[], false), &record).expect("restart");
        assert_eq!(plan.voters, vec![NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(plan.peers, first.peers);
        assert_eq!(kept, record);
        let (_, same) = decide_on(&first, &record).expect("same flags");
        assert_eq!(same, record);
    }

    #[test]
    fn a_restart_with_the_voters_of_the_logs_configuration_is_taken() {
        let (_, record) = decide(
            &config(1, &[2, 3], false),
            None,
            false,
            None,
            Path::new("dir"),
        )
        .expect("first");
        // Node 4 was added and node 3 removed since: the operator's list names 1, 2 and 4.
        let now = config(1, &[2, 4], false);
        let current = Some([1, 2, 4].into_iter().collect());
        let (plan, kept) =
            decide(&now, Some(record.clone()), true, current, Path::new("dir")).expect("taken");
        assert_eq!(plan.peers, now.peers);
        assert_eq!(kept, record, "the record keeps the first start");
        let stale = Some([1, 2, 3, 5].into_iter().collect());
        assert!(matches!(
            decide(&now, Some(record), true, stale, Path::new("dir")),
            Err(BootstrapError::Voters { .. })
        ));
    }

    #[test]
    fn contradicting_flags_are_refused() {
        let (_, record) = decide(
            &config(1, &[2, 3], false),
            None,
            false,
            None,
            Path::new("dir"),
        )
        .expect("first");
        let refused = |config: NodeConfig| decide_on(&config, &record).expect_err("refused");
        assert!(matches!(
            refused(config(1, &[2], false)),
            BootstrapError::Voters { .. }
        ));
        assert!(matches!(
            refused(config(1, &[2, 3], true)),
            BootstrapError::JoinAfterNewCluster
        ));
        let mut other_cluster = config(1, &[2, 3], false);
        other_cluster.cluster_id = 8;
        assert!(matches!(
            refused(other_cluster),
            BootstrapError::ClusterId { saved: 7, given: 8 }
        ));
        assert!(matches!(
            refused(config(2, &[1, 3], false)),
            BootstrapError::NodeId { saved: 1, given: 2 }
        ));
        let lost = decide(&config(1, &[], false), None, true, None, Path::new("dir"));
        assert!(matches!(lost, Err(BootstrapError::StateWithoutRecord(_))));
    }

    #[test]
    fn a_joined_node_stays_joined() {
        let (plan, record) =
            decide(&config(4, &[1], true), None, false, None, Path::new("dir")).expect("join");
        assert!(plan.voters.is_empty());
        let (plan, _) = decide_on(&config(4, &[], false), &record).expect("no flags");
        assert!(plan.voters.is_empty());
        assert_eq!(plan.peers.len(), 1);
        assert!(matches!(
            decide_on(&config(4, &[1, 2], false), &record),
            Err(BootstrapError::NewClusterAfterJoin)
        ));
    }

    #[test]
    fn the_record_round_trips_through_its_file() {
        let dir = tempfile::tempdir().expect("dir");
        let config = config(1, &[2], false);
        reconcile(&config, dir.path(), false, None).expect("first start");
        let saved = read(&dir.path().join(RECORD_FILE)).expect("read");
        assert_eq!(saved, Some(record_of(&config)));
        fs::write(dir.path().join(RECORD_FILE), "{ not json").expect("write");
        assert!(matches!(
            reconcile(&config, dir.path(), true, None),
            Err(BootstrapError::Corrupt { .. })
        ));
    }
}
