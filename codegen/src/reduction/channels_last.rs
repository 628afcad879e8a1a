//! Reductions over channels-last images: each thread keeps [`CHANNELS`] channels.
//!
//! BatchNorm's statistics reduce an image over its pixels, one result a channel. The
//! row-major layout ([`super::emit_lanes`]) gives a channel to a team, whose lanes read
//! runs along a row; stored channels-last, those runs lie a channel count apart, and
//! each lane would read a 16-bit element from a sector of its own. Here a thread takes
//! [`CHANNELS`] adjacent channels and reads them at a pixel as one vector, and the
//! threads of a warp read [`GROUPS`] such groups side by side: whole sectors.
//!
//! The sums come out bit for bit as the row-major layout's, because each thread plays
//! lanes of that layout's teams. Lane `l` folds the same runs, into the same four
//! accumulators, in the same order. The teams' trees are then replayed exactly:
//! - A thread plays lanes `q, q + 8, q + 16, q + 24` of a row-major warp, one after the
//!   other, and combines their totals as that warp's first two shuffles would (offsets
//!   16, then 8).
//! - Its eight threads `q` exchange the rest by shuffles (offsets 4, 2, 1).
//! - A block team's eight warps meet in shared memory. There one thread a channel
//!   replays the block's last tree, identities included.
//!
//! Floating-point addition is commutative, so every lane of a butterfly ends with the
//! same bits, and lane 0's tree is the one to replay.

use super::{
    accumulators, finish, fold_lane, lane_total, warp_combine, Reduce, Teams, THREADS, WARP,
};
use crate::error::Result;
use crate::eval::Emitter;
use crate::index::Index;
use crate::kernel::Geometry;
use crate::ptx::{ins, Operand, Reg, Ty, SHARED};
use crate::stationary::channel_terms;
use calib_ir::{Layout, Value, MAX_TEAMS, MIN_CHANNEL_BLOCKS, WARP_CHANNELS};

/// Channels a thread keeps: a 64-bit load of bf16, a 128-bit one of f32.
const CHANNELS: usize = 4;
/// Channel groups side by side in a warp: 32 bytes of bf16 at a pixel, a sector.
const GROUPS: usize = WARP_CHANNELS / CHANNELS;
/// The register cap of the launch. A thread keeps four channels' accumulators and
/// per-channel terms; left to itself, ptxas budgeted 64 registers for some of the
/// SCNet-50 step's reductions and spilled, and some need more than 128.
const REGISTER_CAP: u32 = 255;
/// Threads playing one row-major warp for a channel group, each playing four lanes.
const PLAYERS: usize = WARP / GROUPS;

/// Whether the group reduces images over their pixels (keeping the channel axis, a
/// multiple of [`WARP_CHANNELS`]) and reads an image stored channels-last (a kernel
/// input, or a GEMM's result that an earlier launch stored, as its statistics do), in
/// a launch of at least [`MIN_CHANNEL_BLOCKS`] blocks
/// ([`calib_ir::channel_team_blocks`]).
pub(super) fn applies(cx: &Emitter, group: &[Reduce], teams: &Teams) -> bool {
    let r = &group[0];
    let shape = &cx.ty(r.input).shape;
    let blocks = calib_ir::channel_team_blocks(shape, &r.axes, teams.split);
    if blocks.is_none_or(|b| b < MIN_CHANNEL_BLOCKS) {
        return false;
    }
    let inputs: Vec<Value> = group.iter().map(|r| r.input).collect();
    let read = cx.reads(&inputs);
    let image = |v: Value| read[v.0] && cx.ty(v).shape.len() == 4;
    let input = cx
        .kernel
        .body
        .inputs()
        .enumerate()
        .any(|(slot, (_, v))| image(v) && cx.input_layout(slot) == Layout::ChannelsLast);
    let stored = (0..read.len())
        .map(Value)
        .any(|v| image(v) && cx.stored_layout(v) == Some(Layout::ChannelsLast));
    input || stored
}

/// The launch: a warp keeps [`WARP_CHANNELS`] channels of a slice (with a block team,
/// each of the block's eight warps plays one row-major warp of them).
pub(super) fn emit(
    cx: &mut Emitter,
    group: &[Reduce],
    aligned: &[usize],
    teams: &Teams,
) -> Result<Geometry> {
    let shape = cx.ty(group[0].input).shape.clone();
    let block_team = teams.block_team();
    let spans = teams.outputs / WARP_CHANNELS;
    let count = spans * teams.split;
    let per_block = if block_team { 1 } else { THREADS / WARP };
    let blocks = count.min(MAX_TEAMS).div_ceil(per_block);
    let (tid, ctaid) = (cx.tid(), cx.ctaid());
    let q = cx.b.rem_u32(tid, PLAYERS);
    let by_players = cx.b.div_u32(tid, PLAYERS);
    let channel_group = cx.b.rem_u32(by_players, GROUPS);
    let warp = cx.b.div_u32(tid, WARP);
    let unit = if block_team {
        ctaid
    } else {
        cx.b.mad_u32(ctaid, Operand::Int(per_block as i64), warp)
    };
    let played_warp = if block_team { warp } else { Operand::Int(0) };
    let first_lane = cx.b.mad_u32(played_warp, Operand::Int(WARP as i64), q);
    let first_player = cx.b.setp("eq", Ty::U32, q, Operand::Int(0));
    cx.for_strided(unit, count, blocks * per_block, |cx, t| {
        let (span, slice) = (cx.b.rem_u32(t, spans), cx.b.div_u32(t, spans));
        let span_start = cx.b.mul_u32(span, Operand::Int(WARP_CHANNELS as i64));
        let first =
            cx.b.mad_u32(channel_group, Operand::Int(CHANNELS as i64), span_start);
        // The channel axis is the last kept one, and a group never crosses its end.
        let kept_first = cx.coords(&Index::flat(first), &teams.kept_dims);
        let channel = *kept_first.last().expect("the channel axis is kept");
        let channels: Vec<Operand> = (0..CHANNELS)
            .map(|c| cx.b.add_u32(channel, Operand::Int(c as i64)))
            .collect();
        let kept: Vec<Vec<Operand>> = channels
            .iter()
            .map(|&c| {
                let mut at = kept_first.clone();
                *at.last_mut().expect("the channel axis is kept") = c;
                at
            })
            .collect();
        let inputs: Vec<Value> = group.iter().map(|r| r.input).collect();
        channel_terms(cx, &inputs, &shape, &channels)?;
        let totals = play_lanes(cx, group, teams, (&kept, &channels), [first_lane, slice])?;
        for t in &totals {
            warp_combine(cx, group, t, &[4, 2, 1]);
        }
        if !block_team {
            return cx.if_then(first_player, true, |cx| {
                for (c, t) in totals.iter().enumerate() {
                    let j = cx.b.add_u32(first, Operand::Int(c as i64));
                    finish(cx, group, aligned, teams, t, [j, slice])?;
                }
                Ok(())
            });
        }
        let warp_totals = WarpTotals {
            warp,
            channel_group,
            first_player,
        };
        warp_totals.store(cx, &totals)?;
        let finisher =
            cx.b.setp("lt", Ty::U32, tid, Operand::Int(WARP_CHANNELS as i64));
        cx.if_then(finisher, true, |cx| {
            let accs = warp_totals.block_tree(cx, group, tid);
            let j = cx.b.add_u32(span_start, tid);
            finish(cx, group, aligned, teams, &accs, [j, slice])
        })?;
        // The next span's totals reuse the shared slots.
        ins!(cx.b, "bar.sync 0");
        Ok(())
    })?;
    let shared_bytes = if block_team {
        THREADS / WARP * WARP_CHANNELS * group.len() * 4
    } else {
        0
    };
    Ok(Geometry {
        blocks,
        threads: THREADS,
        shared_bytes,
        max_registers: Some(REGISTER_CAP),
    })
}

/// Plays row-major lanes `first + 8a + 16b` (`a`, `b` in 0..2) of `slice` for each of
/// the thread's channels, one lane after another, and returns per channel and
/// reduction `((l) + (l + 16)) + ((l + 8) + (l + 24))`: their warp's tree after its
/// shuffles at offsets 16 and 8, as lane `l = first` holds it.
fn play_lanes(
    cx: &mut Emitter,
    group: &[Reduce],
    teams: &Teams,
    (kept, channels): (&[Vec<Operand>], &[Operand]),
    [first, slice]: [Operand; 2],
) -> Result<Vec<Vec<Reg>>> {
    let accs: Vec<Vec<Vec<Reg>>> = kept.iter().map(|_| accumulators(cx, group)).collect();
    let totals = |cx: &mut Emitter| -> Vec<Vec<Reg>> {
        kept.iter()
            .map(|_| {
                let identities = group
                    .iter()
                    .map(|r| cx.b.materialize(r.identity(), Ty::F32));
                identities.collect()
            })
            .collect()
    };
    let (pair_sums, warp_sums) = (totals(cx), totals(cx));
    cx.for_range(2, |cx, a| {
        cx.for_range(2, |cx, b| {
            let lane = cx.b.mad_u32(a, Operand::Int(8), first);
            let lane = cx.b.mad_u32(b, Operand::Int(16), lane);
            for (r, accs) in group.iter().cycle().zip(accs.iter().flatten()) {
                for &acc in accs {
                    ins!(cx.b, "mov.f32 {acc}, {}", r.identity());
                }
            }
            cx.with_channel_run(channels.to_vec(), |cx| {
                fold_lane(cx, group, teams, &accs, kept, [lane, slice])
            })?;
            let first_of_pair = cx.b.setp("eq", Ty::U32, b, Operand::Int(0));
            for (accs, pair) in accs.iter().zip(&pair_sums) {
                let lane_totals = lane_total(cx, group, accs);
                for ((r, &sum), &total) in group.iter().zip(pair).zip(&lane_totals) {
                    fold_or_take(cx, r, sum, total, first_of_pair);
                }
            }
            Ok(())
        })?;
        let first_pair = cx.b.setp("eq", Ty::U32, a, Operand::Int(0));
        for (warp_sum, pair) in warp_sums.iter().zip(&pair_sums) {
            for ((r, &sum), &total) in group.iter().zip(warp_sum).zip(pair) {
                fold_or_take(cx, r, sum, total, first_pair);
            }
        }
        Ok(())
    })?;
    Ok(warp_sums)
}

/// `acc = take ? v : acc (+) v`, the fold of `r`.
fn fold_or_take(cx: &mut Emitter, r: &Reduce, acc: Reg, v: Reg, take: Reg) {
    let folded = cx.b.reg(Ty::F32);
    ins!(cx.b, "mov.f32 {folded}, {acc}");
    r.fold(cx, folded, v.into());
    ins!(cx.b, "selp.f32 {acc}, {v}, {folded}, {take}");
}

/// Where a block team's warps leave their totals: `shared[(warp * WARP_CHANNELS +
/// channel) * k + slot]` for the group's `k` reductions.
struct WarpTotals {
    warp: Operand,
    channel_group: Operand,
    first_player: Reg,
}

impl WarpTotals {
    fn address(
        cx: &mut Emitter,
        warp: Operand,
        channel: Operand,
        slot: usize,
        k: usize,
    ) -> Operand {
        let row =
            cx.b.mad_u32(warp, Operand::Int(WARP_CHANNELS as i64), channel);
        let at =
            cx.b.mad_u32(row, Operand::Int(k as i64), Operand::Int(slot as i64));
        let bytes = cx.b.mul_u32(at, Operand::Int(4));
        let base = cx.b.reg(Ty::U32);
        ins!(cx.b, "mov.u32 {base}, {SHARED}");
        cx.b.add_u32(base.into(), bytes)
    }

    /// Thread `q = 0` of each channel group stores its warp's totals; then the block
    /// waits for them all.
    fn store(&self, cx: &mut Emitter, totals: &[Vec<Reg>]) -> Result<()> {
        cx.if_then(self.first_player, true, |cx| {
            for (c, t) in totals.iter().enumerate() {
                let channel = cx.b.mad_u32(
                    self.channel_group,
                    Operand::Int(CHANNELS as i64),
                    Operand::Int(c as i64),
                );
                for (slot, &acc) in t.iter().enumerate() {
                    let addr = Self::address(cx, self.warp, channel, slot, t.len());
                    ins!(cx.b, "st.shared.f32 [{addr}], {acc}");
                }
            }
            Ok(())
        })?;
        ins!(cx.b, "bar.sync 0");
        Ok(())
    }

    /// The block's result at the span's channel `channel`, per reduction: the
    /// row-major block team's last tree (its warps' totals in lanes 0..8 of one warp,
    /// identities in the rest, then a butterfly), as lane 0 ends with it.
    fn block_tree(&self, cx: &mut Emitter, group: &[Reduce], channel: Operand) -> Vec<Reg> {
        let k = group.len();
        group
            .iter()
            .enumerate()
            .map(|(slot, r)| {
                let lanes: Vec<Reg> = (0..WARP)
                    .map(|_| cx.b.materialize(r.identity(), Ty::F32))
                    .collect();
                for (w, &lane) in lanes.iter().take(THREADS / WARP).enumerate() {
                    let addr = Self::address(cx, Operand::Int(w as i64), channel, slot, k);
                    ins!(cx.b, "ld.shared.f32 {lane}, [{addr}]");
                }
                for offset in [16, 8, 4, 2, 1] {
                    for i in 0..offset {
                        r.fold(cx, lanes[i], lanes[i + offset].into());
                    }
                }
                lanes[0]
            })
            .collect()
    }
}
