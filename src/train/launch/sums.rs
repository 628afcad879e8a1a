//! What a group of processes adds up after each step, in one all-reduce over the host
//! group: the loss and the count of correct images (so rank 0 reports the whole global
//! batch's figures), the unreadable training images each rank's loader found, and each
//! rank's shard digest (so rank 0 reports the digest `--replicas N` threads report:
//! the shards' digests chained in rank order, `data::digest`).
//!
//! The all-reduce sums f64 in rank order. A digest is 64 bits, more than an f64 holds
//! exactly, so each rank writes its digest as four 16-bit pieces into its own slots and
//! zeros into everyone else's: every sum then has one nonzero term and is exact.

use crate::data::digest::chain;
use anyhow::{bail, Result};

/// One rank's figures for a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RankFigures {
    pub loss: f64,
    pub correct: usize,
    pub skipped: usize,
    pub digest: u64,
}

/// The group's figures for a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupFigures {
    /// The sum of the ranks' losses.
    pub loss_sum: f64,
    pub correct: usize,
    /// The sum of the ranks' counts (a file two ranks found unreadable counts twice).
    pub skipped: usize,
    /// The ranks' digests chained in rank order.
    pub digest: u64,
}

const PIECES: usize = 4;
const FIXED: usize = 3;

/// Rank `rank`'s contribution to the all-reduce of a group of `world`.
pub fn encode(mine: RankFigures, rank: usize, world: usize) -> Vec<f64> {
    let mut v = vec![0.0; FIXED + PIECES * world];
    v[0] = mine.loss;
    v[1] = mine.correct as f64;
    v[2] = mine.skipped as f64;
    for k in 0..PIECES {
        v[FIXED + PIECES * rank + k] = ((mine.digest >> (16 * k)) & 0xffff) as f64;
    }
    v
}

/// The group's figures from the summed contributions of `world` ranks.
pub fn decode(sums: &[f64], world: usize) -> Result<GroupFigures> {
    if sums.len() != FIXED + PIECES * world {
        bail!(
            "the group's step figures came back with {} values, not {}",
            sums.len(),
            FIXED + PIECES * world
        );
    }
    let mut digest = None;
    for r in 0..world {
        let mut d = 0u64;
        for k in 0..PIECES {
            let piece = sums[FIXED + PIECES * r + k];
            if !(0.0..=65535.0).contains(&piece) || piece.fract() != 0.0 {
                bail!("rank {r}'s batch digest came back garbled ({piece})");
            }
            d |= (piece as u64) << (16 * k);
        }
        digest = Some(chain(digest, d));
    }
    Ok(GroupFigures {
        loss_sum: sums[0],
        correct: sums[1] as usize,
        skipped: sums[2] as usize,
        digest: digest.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summed_contributions_give_the_chained_digests_exactly() {
        let ranks = [
            RankFigures {
                loss: 1.5,
                correct: 3,
                skipped: 1,
                digest: u64::MAX - 7,
            },
            RankFigures {
                loss: 0.25,
                correct: 2,
                skipped: 0,
                digest: 0x0123_4567_89ab_cdef,
            },
        ];
        let parts: Vec<Vec<f64>> = ranks
            .iter()
            .enumerate()
            .map(|(r, f)| encode(*f, r, 2))
            .collect();
        let sums: Vec<f64> = (0..parts[0].len())
            .map(|i| parts.iter().map(|p| p[i]).sum())
            .collect();
        let group = decode(&sums, 2).unwrap();
        assert_eq!(group.loss_sum, 1.75);
        assert_eq!((group.correct, group.skipped), (5, 1));
        assert_eq!(group.digest, chain(Some(ranks[0].digest), ranks[1].digest));
        // One rank: its own digest.
        assert_eq!(
            decode(&encode(ranks[1], 0, 1), 1).unwrap().digest,
            ranks[1].digest
        );
        assert!(decode(&sums[1..], 2).is_err());
        let mut garbled = sums.clone();
        garbled[FIXED] = 70000.0;
        assert!(decode(&garbled, 2).is_err());
    }
}
