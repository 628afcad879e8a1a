//! Warp-wide instructions and divergence on the simulator: every shfl.sync mode (with
//! segments and in-range predicates), vote.sync, and divergent loops and branches that
//! must reconverge before a full-mask vote.

mod sim_support;

use calib_runtime::sim::GlobalMemory;
use sim_support::{module, ptr, Launch};

#[test]
fn shuffle_modes_segments_and_predicates() {
    let m = module("warp.ptx");
    let mut mem = GlobalMemory::new();
    let out = mem.alloc(64 * 32).unwrap();
    Launch::new("shuffles", 1, 64, vec![ptr(out)]).run(&m, &mut mem);
    let got: Vec<u32> = mem.read(out, 64 * 8).unwrap();
    let v = |lane: usize| 3 * lane as u32 + 1;
    for t in 0..64 {
        let l = t % 32;
        let expected = [
            if l >= 1 { v(l - 1) } else { v(l) },
            if l + 3 <= 31 { v(l + 3) } else { v(l) },
            v(l ^ 5),
            v(7),
            v((l & 24) | 2),
            if l & 7 < 7 { v(l + 1) } else { v(l) },
            (l + 3 <= 31) as u32,
            (l >= 1) as u32,
        ];
        assert_eq!(got[8 * t..8 * t + 8], expected, "thread {t}");
    }
}

#[test]
fn votes_over_uniform_and_mixed_warps() {
    let m = module("warp.ptx");
    // Warp 0: all set; warp 1: none; warp 2: every third lane.
    let values: Vec<u32> = (0..96)
        .map(|t| (t < 32 || (t >= 64 && t % 3 == 0)) as u32)
        .collect();
    let mut mem = GlobalMemory::new();
    let dv = mem.upload(&values).unwrap();
    let out = mem.alloc(96 * 20).unwrap();
    Launch::new("votes", 1, 96, vec![ptr(dv), ptr(out)]).run(&m, &mut mem);
    let got: Vec<u32> = mem.read(out, 96 * 5).unwrap();
    for w in 0..3 {
        let ballot = (0..32)
            .filter(|l| values[32 * w + l] != 0)
            .fold(0u32, |b, l| b | 1 << l);
        let expected = [
            ballot,
            (ballot != 0) as u32,
            (ballot == u32::MAX) as u32,
            (ballot == 0 || ballot == u32::MAX) as u32,
            !ballot,
        ];
        for l in 0..32 {
            let t = 32 * w + l;
            assert_eq!(got[5 * t..5 * t + 5], expected, "lane {l} of warp {w}");
        }
    }
}

#[test]
fn divergent_loops_and_branches_reconverge() {
    let m = module("warp.ptx");
    let mut mem = GlobalMemory::new();
    let out = mem.alloc(64 * 8).unwrap();
    let stats = Launch::new("diverge", 1, 64, vec![ptr(out)]).run(&m, &mut mem);
    let got: Vec<u32> = mem.read(out, 128).unwrap();
    let acc: Vec<u32> = (0..64u32)
        .map(|t| {
            (0..t % 7)
                .map(|j| match (t % 2 == 1, t % 3 == 0) {
                    (false, _) => 2 * j,
                    (true, false) => 3 * j,
                    (true, true) => 3 * j + 100,
                })
                .sum()
        })
        .collect();
    for t in 0..64 {
        let warp = t / 32 * 32;
        let ballot = (0..32)
            .filter(|l| acc[warp + l] > 4)
            .fold(0u32, |b, l| b | 1 << l);
        assert_eq!([got[2 * t], got[2 * t + 1]], [acc[t], ballot], "thread {t}");
    }
    // Divergence costs issue slots: fewer lanes are active per warp instruction on average.
    assert!(stats.thread_instructions < 32 * stats.warp_instructions);
}
