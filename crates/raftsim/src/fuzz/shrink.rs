//! Shrinking a failing run: delta debugging over its commands (remove chunks, halving the chunk
//! size, keep a removal when the same property still fails).

use super::{replay, Violation};
use crate::cluster::ClusterSettings;
use crate::scenario::Command;

/// The smallest command list found that still breaks `violation.property`, with the violation
/// it gives. Bounded by `max_replays` replays.
pub fn shrink(
    settings: &ClusterSettings,
    commands: &[Command],
    violation: &Violation,
    max_replays: usize,
) -> (Vec<Command>, Violation) {
    let mut best = commands.to_vec();
    let mut best_violation = violation.clone();
    let mut replays = 0;
    let mut chunk = best.len().div_ceil(2).max(1);
    while chunk >= 1 && replays < max_replays {
        let mut start = 0;
        let mut removed_any = false;
        while start < best.len() && replays < max_replays {
            let end = (start + chunk).min(best.len());
            let candidate: Vec<Command> =
                best[..start].iter().chain(&best[end..]).cloned().collect();
            replays += 1;
            match replay(settings, &candidate) {
                Some(v) if v.property == violation.property => {
                    best = candidate;
                    best_violation = v;
                    removed_any = true;
                }
                _ => start = end,
            }
        }
        if !removed_any {
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
    }
    (best, best_violation)
}
