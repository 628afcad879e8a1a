//! Whole kernels on the simulator, checked against plain Rust: a vector add, a block
//! reduction (shared memory, bar.sync, shfl.down), a tiled matmul and grid-wide atomics.

mod sim_support;

use calib_runtime::sim::{GlobalMemory, KernelArg};
use sim_support::{module, ptr, Launch, Rng};

#[test]
fn vector_add_matches_and_counts_every_issued_lane() {
    let m = module("vector_add.ptx");
    let mut rng = Rng::new(1);
    let n = 1000;
    let (a, b) = (rng.f32s(n, -10.0, 10.0), rng.f32s(n, -10.0, 10.0));
    let mut mem = GlobalMemory::new();
    let (da, db) = (mem.upload(&a).unwrap(), mem.upload(&b).unwrap());
    let dc = mem.alloc(n * 4).unwrap();
    let args = vec![ptr(da), ptr(db), ptr(dc), KernelArg::U32(n as u32)];
    let stats = Launch::new("vector_add", 4, 256, args).run(&m, &mut mem);
    let c: Vec<f32> = mem.read(dc, n).unwrap();
    for i in 0..n {
        assert_eq!(c[i], a[i] + b[i], "c[{i}]");
    }
    // Threads below n issue all 22 instructions; the 24 beyond it issue 10 and `ret`.
    assert_eq!(stats.thread_instructions, 1000 * 22 + 24 * 11);
    assert_eq!(stats.blocks, 4);
}

/// The reduction exactly as the kernel orders it: strided per-thread sums, a shared tree
/// down to 32 values, then five shuffle-down steps.
fn emulate_block_sum(x: &[f32], grid: usize, block: usize, b: usize) -> f32 {
    let stride = grid * block;
    let mut acc: Vec<f32> = (0..block)
        .map(|t| {
            x.iter()
                .skip(b * block + t)
                .step_by(stride)
                .fold(0.0f32, |s, v| s + v)
        })
        .collect();
    let mut s = block / 2;
    while s >= 32 {
        for t in 0..s {
            acc[t] += acc[t + s];
        }
        s /= 2;
    }
    let mut lanes = acc[..32].to_vec();
    for offset in [16, 8, 4, 2, 1] {
        lanes = (0..32)
            .map(|l| {
                lanes[l]
                    + if l + offset < 32 {
                        lanes[l + offset]
                    } else {
                        lanes[l]
                    }
            })
            .collect();
    }
    lanes[0]
}

#[test]
fn block_reduction_through_shared_memory_and_shuffles() {
    let m = module("block_sum.ptx");
    let mut rng = Rng::new(2);
    let n = 5000;
    let x = rng.f32s(n, -1.0, 1.0);
    for (grid, block) in [(6usize, 256usize), (3, 64), (2, 1024)] {
        let mut mem = GlobalMemory::new();
        let dx = mem.upload(&x).unwrap();
        let dpartial = mem.alloc(grid * 4).unwrap();
        let dtotal = mem.alloc(4).unwrap();
        let args = vec![
            ptr(dx),
            ptr(dpartial),
            ptr(dtotal),
            KernelArg::U32(n as u32),
        ];
        Launch::new("block_sum", grid as u32, block as u32, args).run(&m, &mut mem);
        let partial: Vec<f32> = mem.read(dpartial, grid).unwrap();
        for (b, &p) in partial.iter().enumerate() {
            assert_eq!(
                p,
                emulate_block_sum(&x, grid, block, b),
                "block {b} of {grid}x{block}"
            );
        }
        // Blocks add their partials in whatever order they finish.
        let total = mem.read::<f32>(dtotal, 1).unwrap()[0] as f64;
        let expected: f64 = partial.iter().map(|&p| p as f64).sum();
        assert!(
            (total - expected).abs() <= 1e-5 * expected.abs().max(1.0),
            "{total} vs {expected}"
        );
    }
}

#[test]
fn tiled_matmul_through_shared_tiles() {
    let m = module("matmul.ptx");
    let (rows, cols, inner) = (32usize, 48usize, 64usize);
    let mut rng = Rng::new(3);
    let a = rng.f32s(rows * inner, -1.0, 1.0);
    let b = rng.f32s(inner * cols, -1.0, 1.0);
    let mut mem = GlobalMemory::new();
    let (da, db) = (mem.upload(&a).unwrap(), mem.upload(&b).unwrap());
    let dc = mem.alloc(rows * cols * 4).unwrap();
    let launch = Launch {
        kernel: "matmul_tiled",
        grid: [(cols / 16) as u32, (rows / 16) as u32, 1],
        block: [16, 16, 1],
        shared: 0,
        args: vec![
            ptr(da),
            ptr(db),
            ptr(dc),
            KernelArg::U32(cols as u32),
            KernelArg::U32(inner as u32),
        ],
    };
    launch.run(&m, &mut mem);
    let c: Vec<f32> = mem.read(dc, rows * cols).unwrap();
    for i in 0..rows {
        for j in 0..cols {
            let expected = (0..inner).fold(0.0f32, |acc, k| {
                a[i * inner + k].mul_add(b[k * cols + j], acc)
            });
            assert_eq!(c[i * cols + j], expected, "C[{i}][{j}]");
        }
    }
}

#[test]
fn grid_wide_atomics_on_global_and_shared_memory() {
    let m = module("atomics.ptx");
    let (grid, block) = (40usize, 100usize);
    let n = 3900usize;
    let mut mem = GlobalMemory::new();
    let mut init = vec![0u32; 21];
    init[6] = i32::MIN as u32; // imax
    init[7] = u32::MAX; // umin
    let out = mem.upload(&init).unwrap();
    let tickets = mem.alloc(n * 4).unwrap();
    let casold = mem.alloc(n * 4).unwrap();
    let args = vec![
        ptr(out),
        ptr(tickets),
        ptr(casold),
        KernelArg::U32(n as u32),
    ];
    Launch::new("atomics", grid as u32, block as u32, args).run(&m, &mut mem);

    let words: Vec<u32> = mem.read(out, 21).unwrap();
    assert_eq!(words[0] as usize, n, "counter");
    let mut t: Vec<u32> = mem.read(tickets, n).unwrap();
    t.sort_unstable();
    assert!(
        t.iter().enumerate().all(|(i, &v)| v as usize == i),
        "tickets are a permutation"
    );
    assert_eq!(f32::from_bits(words[1]), n as f32);
    assert_eq!(mem.read::<f64>(out + 8, 1).unwrap()[0], n as f64 * 0.5);
    assert_eq!(mem.read::<u64>(out + 16, 1).unwrap()[0], n as u64);
    assert_eq!(words[6] as i32, n as i32 - 1 - 100);
    assert_eq!(words[7], 5);
    assert_eq!(words[8] as usize, n % 10, "inc wraps at 9");
    let old: Vec<u32> = mem.read(casold, n).unwrap();
    for slot in 0..4 {
        let value = words[9 + slot];
        let winners: Vec<usize> = (slot..n).step_by(4).filter(|&i| old[i] == 0).collect();
        assert_eq!(winners.len(), 1, "slot {slot} has one winner");
        assert_eq!(value as usize, winners[0] + 1);
        assert!((slot..n).step_by(4).all(|i| old[i] == 0 || old[i] == value));
    }
    for bin in 0..8 {
        assert_eq!(
            words[13 + bin] as usize,
            (0..n).filter(|i| i % 8 == bin).count(),
            "bin {bin}"
        );
    }
}

#[test]
fn remaining_atomics_predicate_logic_and_early_exit() {
    let m = module("misc.ptx");
    let mut mem = GlobalMemory::new();
    let mut init = vec![0u32; 8 + 64];
    init[1] = 50;
    init[2] = u32::MAX;
    let out = mem.upload(&init).unwrap();
    let olds = mem.alloc(64 * 4).unwrap();
    Launch::new("odds_and_ends", 1, 64, vec![ptr(out), ptr(olds)]).run(&m, &mut mem);
    let got: Vec<u32> = mem.read(out, 72).unwrap();
    let mut swapped: Vec<u32> = mem.read(olds, 64).unwrap();
    swapped.push(got[0]);
    swapped.sort_unstable();
    assert_eq!(
        swapped,
        (0..=64).collect::<Vec<u32>>(),
        "exch hands every value on once"
    );
    assert_eq!(
        got[1], 987,
        "dec reaches 0 after 50 steps, wraps to 1000, then 13 more"
    );
    assert_eq!((got[2], got[3]), (0, u32::MAX));
    assert_eq!(got[4], (0..64u32).fold(0, |x, t| x ^ (3 * t + 1)));
    assert_eq!(got[5], (0..48u32).map(|t| 7 * t % 64).max().unwrap());
    assert_eq!(f32::from_bits(got[6]), 24.0);
    for t in 0..64u32 {
        let (p, q) = (t % 2 == 1, t % 3 == 0);
        let bits = (p && q) as u32
            | ((p || q) as u32) << 1
            | ((p ^ q) as u32) << 2
            | (!p as u32) << 3
            | (p as u32) << 4;
        let product = ((t + 250) * 300) as u16 as u32;
        assert_eq!(got[8 + t as usize], bits | product << 8, "thread {t}");
    }
}
