//! Majority counting. Knows nothing about roles.

use crate::types::NodeId;
use std::collections::{BTreeMap, BTreeSet};

/// Votes needed for a majority of `voters`.
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// Whether the granted votes among `voters` form a majority.
pub fn has_majority(voters: &BTreeSet<NodeId>, granted: impl Fn(NodeId) -> bool) -> bool {
    voters.iter().filter(|v| granted(**v)).count() >= majority(voters.len())
}

/// Whether enough refusals arrived that a majority can no longer be reached.
pub fn majority_impossible(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> bool {
    let refused = voters
        .iter()
        .filter(|v| votes.get(v) == Some(&false))
        .count();
    voters.len() - refused < majority(voters.len())
}

/// The highest value a majority of voters has reached: the highest index stored on a majority
/// (given match indexes), or the highest read round a majority echoed.
pub fn majority_reached<T: Ord + Copy>(
    voters: &BTreeSet<NodeId>,
    reached: impl Fn(NodeId) -> T,
) -> T {
    let mut values: Vec<T> = voters.iter().map(|v| reached(*v)).collect();
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[majority(voters.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LogIndex;

    fn committed_index(voters: &BTreeSet<NodeId>, m: impl Fn(NodeId) -> LogIndex) -> LogIndex {
        majority_reached(voters, m)
    }

    #[test]
    fn committed_index_is_the_majority_median_for_odd_and_even_sizes() {
        let ids: BTreeSet<NodeId> = (1..=4).map(NodeId).collect();
        let m = [5, 3, 3, 1];
        assert_eq!(
            committed_index(&ids, |n| LogIndex(m[n.0 as usize - 1])),
            LogIndex(3)
        );
        let m = [5, 4, 1, 1];
        // 4 voters need 3 copies: only index 1 is on three of them.
        assert_eq!(
            committed_index(&ids, |n| LogIndex(m[n.0 as usize - 1])),
            LogIndex(1)
        );
        let ids: BTreeSet<NodeId> = (1..=3).map(NodeId).collect();
        assert_eq!(committed_index(&ids, |n| LogIndex(n.0)), LogIndex(2));
    }

    #[test]
    fn majority_sizes() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(2), 2);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }
}
