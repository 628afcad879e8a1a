//! Reductions over the pixels of channels-last images keep a warp's channels (code
//! generation's `reduction/channels_last.rs`): a warp reads [`WARP_CHANNELS`] channels
//! at a pixel, whole sectors, where the row-major teams would each read one channel's
//! elements a channel count apart. Such a launch has sixteen times fewer threads than
//! the row-major one, so it needs a split that gives it enough blocks; the planner picks
//! one that both layouts run well, since the split fixes the order of the sums and a
//! step must give the same bits stored either way.

use crate::{numel, reduction_run};

/// Channels a warp keeps: four threads' four channels side by side.
pub const WARP_CHANNELS: usize = 16;

/// Blocks a channel-keeping launch needs at least. Its threads keep sixteen times the
/// elements the row-major lanes do, and with fewer blocks than about half an H100's or
/// H200's multiprocessors the latency the row-major launch's many threads hide costs
/// more than the whole sectors save (the cost model's predictions for the SCNet-50 and
/// ResNet-50 steps: even at 64 blocks, slower from 32 down).
pub const MIN_CHANNEL_BLOCKS: usize = 66;

/// A reduction team is a whole block (rather than a warp) from this many elements a
/// slice on.
pub const BLOCK_TEAM_FROM: usize = 1024;

/// Blocks of 256 threads a reduction launch has: a block team per block, eight warp
/// teams per block.
const WARPS_A_BLOCK: usize = 8;

/// Teams in flight; more are taken in turns.
pub const MAX_TEAMS: usize = 1 << 16;

/// Reduced elements a slice of a reduction of `shape` over `axes` holds when split into
/// `split` slices: whole runs of the reduction's lanes ([`reduction_run`]).
pub fn reduction_chunk(shape: &[usize], axes: &[usize], split: usize) -> usize {
    let reduced: Vec<usize> = (0..shape.len())
        .filter(|a| axes.contains(a))
        .map(|a| shape[a])
        .collect();
    let length = numel(&reduced);
    let split = split.clamp(1, length.max(1));
    match reduction_run(shape, axes) {
        Some(run) => length.div_ceil(split).next_multiple_of(run.len),
        None => length.div_ceil(split),
    }
}

/// The blocks of the channel-keeping launch reducing `shape` over `axes` in `split`
/// slices, where one applies: over the pixels of an image, keeping its channel axis, a
/// multiple of [`WARP_CHANNELS`].
pub fn channel_team_blocks(shape: &[usize], axes: &[usize], split: usize) -> Option<usize> {
    let &[_, channels, _, _] = shape else {
        return None;
    };
    let over_pixels = axes.contains(&2) && axes.contains(&3) && !axes.contains(&1);
    if !over_pixels || !channels.is_multiple_of(WARP_CHANNELS) {
        return None;
    }
    let kept: usize = (0..4)
        .filter(|a| !axes.contains(a))
        .map(|a| shape[a])
        .product();
    let count = kept / WARP_CHANNELS * split;
    let per_block = match reduction_chunk(shape, axes, split) >= BLOCK_TEAM_FROM {
        true => 1,
        false => WARPS_A_BLOCK,
    };
    Some(count.min(MAX_TEAMS).div_ceil(per_block))
}

/// The fewest slices (up to `most`) that give a channel-keeping launch of `shape` over
/// `axes` [`MIN_CHANNEL_BLOCKS`] blocks, where one applies and some split does.
pub fn channel_team_split(shape: &[usize], axes: &[usize], most: usize) -> Option<usize> {
    (1..=most).find(|&split| {
        channel_team_blocks(shape, axes, split).is_some_and(|b| b >= MIN_CHANNEL_BLOCKS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_teams_need_a_split_where_channels_are_few() {
        // 512 channels of 64x28x28: 32 warps' worth, one block each, unsplit.
        let shape = [64, 512, 28, 28];
        assert_eq!(channel_team_blocks(&shape, &[0, 2, 3], 1), Some(32));
        assert_eq!(channel_team_split(&shape, &[0, 2, 3], 256), Some(3));
        // Warp teams: eight to a block.
        assert_eq!(
            channel_team_blocks(&[64, 256, 7, 7], &[0, 2, 3], 5),
            Some(10)
        );
        // Not over pixels, or channels no warp span divides.
        assert_eq!(channel_team_blocks(&shape, &[1, 2, 3], 1), None);
        assert_eq!(channel_team_blocks(&[8, 24, 8, 8], &[0, 2, 3], 1), None);
        assert_eq!(channel_team_split(&[8, 24, 8, 8], &[0, 2, 3], 256), None);
    }
}
