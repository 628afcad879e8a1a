//! Runs: the adjacent elements (in memory) a pointwise thread takes at once. Code
//! generation emits them and the planner prices them, so both ask here which run a
//! group of outputs gets.

use crate::{numel, Graph, Layout, Op, Value};

/// Run lengths, longest first, where shapes allow: a run shares its outer coordinates
/// and everything computed from them (a channel's statistics and parameters), so longer
/// runs spread that work over more elements. Eight bf16 are one 128-bit access.
pub const RUN_LENGTHS: [usize; 2] = [8, 4];

/// Threads a pointwise launch should keep at least, before its runs grow longer.
pub const MIN_RUN_THREADS: usize = 1 << 14;

/// Threads a launch whose elements each gather a window keeps, before its runs grow
/// to eight: enough to fill a large GPU, each thread working twice as long.
pub const WINDOWED_RUN_THREADS: usize = 1 << 18;

/// A thread's run: `len` elements walking the `walked` innermost axes in memory order
/// ([`run_axes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadRun {
    pub len: usize,
    pub walked: usize,
}

/// How many innermost axes (at most `most`) a thread's run of `run` elements adjacent
/// in memory walks, for a tensor of memory-order extents `memory`: the fewest whose
/// product `run` divides, so that runs leave the outer axes' coordinates as rarely as
/// they can (a channel's 14x14 plane holds 49 runs of four, its rows do not; 7x7
/// planes take runs across channels, whose elements then differ in channel too).
/// `None` when none do.
pub fn run_axes(memory: &[usize], run: usize, most: usize) -> Option<usize> {
    let rank = memory.len();
    (1..=rank.min(most)).find(|&k| memory[rank - k..].iter().product::<usize>() % run == 0)
}

/// The run the threads computing `outputs` of `body` together take, when the outputs
/// share one shape, stored in `layout`; `None` (one element a thread) where no run
/// fits or runs would leave too few threads.
///
/// * Runs stay within a plane first (at most two axes): they share the channel's work.
///   Only where no plane holds whole runs (7x7, 3x3) do they cross channels.
/// * A concatenation's axis stays outside the walk (a run then takes one operand's
///   branch), unless it is the innermost in memory (a channels-last image's channels)
///   and the run holds whole runs of every operand: it then walks that axis alone,
///   within one operand.
/// * Bodies that read windows (pooling, a resize's adjoint; [`Op::reads_windows`]) keep
///   runs of four over at most two axes: their loads are strided, element by element,
///   and a warp whose lanes take eight each spreads every load over twice the sectors.
///   Along a channels-last image's channels they take eight 16-bit elements too where
///   that leaves [`WINDOWED_RUN_THREADS`]: a tap is then one 16-byte load of the run's
///   channels at one pixel.
/// * Runs of eight are refused where a division varies along them
///   ([`crate::divides_along`]): each such quotient is a call of ptxas's division slow
///   path, and at eight a thread the values live across the calls spill.
pub fn pointwise_run(body: &Graph, outputs: &[Value], layout: Layout) -> Option<ThreadRun> {
    let shape = &body.ty(*outputs.first()?).shape;
    if outputs.iter().any(|&v| &body.ty(v).shape != shape) {
        return None;
    }
    let rank = shape.len();
    let order = layout.order(rank);
    let memory: Vec<usize> = order.iter().map(|&a| shape[a]).collect();
    let n = numel(shape);
    let windowed = body.nodes.iter().any(|node| node.op.reads_windows());
    // Per concatenation: how many axes in memory lie inside its axis, and its
    // operands' extents along it.
    let concats: Vec<(usize, Vec<usize>)> = outputs
        .iter()
        .filter_map(|&v| match body.nodes[v.0].op {
            Op::Concat { axis } => {
                let position = order.iter().position(|&a| a == axis)?;
                let extents = body.nodes[v.0].inputs.iter();
                let extents = extents.map(|&x| body.ty(x).shape[axis]).collect();
                Some((rank - 1 - position, extents))
            }
            _ => None,
        })
        .collect();
    let inside = |&(depth, _): &(usize, Vec<usize>)| if depth == 0 { 1 } else { depth };
    let most = concats.iter().map(inside).min().unwrap_or(rank);
    let most = most.min(if windowed { 2 } else { rank });
    let within_operands = |len: usize| {
        (concats.iter())
            .filter(|(depth, _)| *depth == 0)
            .all(|(_, extents)| extents.iter().all(|e| e.is_multiple_of(len)))
    };
    let lengths =
        (RUN_LENGTHS.into_iter()).filter(|&len| n / len >= MIN_RUN_THREADS && within_operands(len));
    // A run along a channels-last image's channels loads every tap as one vector: of
    // 16 bytes at most, or the taps of eight f32 channels outgrow the registers.
    let vector = 16 / body.ty(outputs[0]).dtype.size_bytes();
    let along_channels =
        |run: &ThreadRun| layout == Layout::ChannelsLast && run.walked == 1 && run.len <= vector;
    [most.min(2), most]
        .into_iter()
        .flat_map(|cap| lengths.clone().map(move |len| (cap, len)))
        .filter_map(|(cap, len)| {
            let walked = run_axes(&memory, len, cap)?;
            Some(ThreadRun { len, walked })
        })
        .filter(|run| {
            let many = n / run.len >= WINDOWED_RUN_THREADS;
            !windowed || run.len <= 4 || (rank == 4 && along_channels(run) && many)
        })
        .find(|run| run.len <= 4 || !crate::divides_along(body, n, &order[rank - run.walked..]))
}

/// The run a reduction's lanes take over an input of `shape` reduced along `axes`, where
/// the reduced axes end the shape (so that in a row-major buffer a run is adjacent);
/// `walked` counts reduced axes. The choice looks at shapes only, never at storage: it
/// fixes the order of the sums, and a step stored channels-last must give the same bits.
pub fn reduction_run(shape: &[usize], axes: &[usize]) -> Option<ThreadRun> {
    let rank = shape.len();
    let reduced: Vec<usize> = (0..rank)
        .filter(|a| axes.contains(a))
        .map(|a| shape[a])
        .collect();
    RUN_LENGTHS.into_iter().find_map(|len| {
        let walked = run_axes(&reduced, len, reduced.len())?;
        let innermost = (rank - walked..rank).all(|a| axes.contains(&a));
        innermost.then_some(ThreadRun { len, walked })
    })
}
