//! Each class of run-time bug, planted in a small kernel, must be caught and reported with
//! the kernel, block, thread, source line and instruction.

mod sim_support;

use calib_runtime::sim::{Access, FaultKind, GlobalMemory, KernelArg, SimOptions};
use sim_support::{module, parse_text, ptr, ptx, Launch};

/// The 1-based line of `file` that contains `needle` (exactly one must).
fn line_of(text: &str, needle: &str) -> usize {
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "`{needle}` should occur once");
    lines[0]
}

#[test]
fn out_of_bounds_global_store() {
    let m = module("bug_oob_store.ptx");
    let mut mem = GlobalMemory::new();
    let out = mem.alloc(1000 * 4).unwrap();
    let f = Launch::new(
        "fill_unguarded",
        4,
        256,
        vec![ptr(out), KernelArg::U32(1000)],
    )
    .fault(&m, &mut mem);
    assert_eq!(
        (f.block, f.thread),
        ([3, 0, 0], [232, 0, 0]),
        "thread 1000 is the first past the end"
    );
    assert_eq!(f.line, line_of(&ptx("bug_oob_store.ptx"), "st.global.u32"));
    assert_eq!(f.instruction, "st.global.u32 [%rd3], %r5;");
    let FaultKind::OutOfBounds {
        space,
        access,
        addr,
        bytes,
        detail,
    } = &f.kind
    else {
        panic!("wrong fault: {f}");
    };
    assert_eq!(
        (*space, *access, *addr, *bytes),
        ("global", Access::Store, out + 4000, 4)
    );
    assert!(
        detail.contains("past the end of the 4000-byte allocation"),
        "{detail}"
    );
    let text = f.to_string();
    assert!(
        text.starts_with("kernel `fill_unguarded`, block (3,0,0), thread (232,0,0), line"),
        "{text}"
    );
    // The in-bounds threads of other blocks still wrote their values.
    assert_eq!(mem.read::<u32>(out + 4 * 999, 1).unwrap(), vec![1998]);
}

#[test]
fn misaligned_global_load() {
    let m = module("bug_misaligned.ptx");
    let mut mem = GlobalMemory::new();
    let (x, y) = (mem.upload(&[1.0f32; 64]).unwrap(), mem.alloc(128).unwrap());
    let f = Launch::new("scale_misaligned", 1, 32, vec![ptr(x), ptr(y)]).fault(&m, &mut mem);
    assert_eq!(f.thread, [1, 0, 0]);
    assert_eq!(f.line, line_of(&ptx("bug_misaligned.ptx"), "ld.global.f32"));
    assert_eq!(
        f.kind,
        FaultKind::Misaligned {
            space: "global",
            access: Access::Load,
            addr: x + 2,
            bytes: 4
        }
    );
}

#[test]
fn uninitialized_register_read() {
    let m = module("bug_uninit.ptx");
    let mut mem = GlobalMemory::new();
    let out = mem.alloc(128).unwrap();
    let f = Launch::new("uninit_on_one_path", 1, 32, vec![ptr(out)]).fault(&m, &mut mem);
    assert_eq!(f.thread, [1, 0, 0], "odd threads skip the initialization");
    assert_eq!(f.line, line_of(&ptx("bug_uninit.ptx"), "st.global.f32"));
    assert_eq!(
        f.kind,
        FaultKind::UninitializedRegister {
            register: "%f1".into()
        }
    );
}

#[test]
fn barrier_inside_a_divergent_branch() {
    let text = ptx("bug_barrier.ptx");
    let m = module("bug_barrier.ptx");
    let mut mem = GlobalMemory::new();
    let out = mem.alloc(64 * 4).unwrap();
    let f = Launch::new("barrier_in_branch", 1, 64, vec![ptr(out)]).fault(&m, &mut mem);
    let FaultKind::BarrierDivergence { other } = &f.kind else {
        panic!("wrong fault: {f}");
    };
    let bars: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("bar.sync"))
        .map(|(i, _)| i + 1)
        .collect();
    let mut lines = [f.line, other.line];
    lines.sort();
    assert_eq!(lines.to_vec(), bars, "the two barriers are named");
    let inside = if f.line == bars[0] {
        f.thread
    } else {
        other.thread
    };
    let outside = if f.line == bars[0] {
        other.thread
    } else {
        f.thread
    };
    assert!(inside[0] < 16 && outside[0] >= 16, "{f}");
}

#[test]
fn shared_memory_race_without_a_barrier() {
    let text = ptx("bug_race.ptx");
    let m = module("bug_race.ptx");
    let mut mem = GlobalMemory::new();
    let out = mem.alloc(64 * 4).unwrap();
    let f = Launch::new("neighbour_without_barrier", 1, 64, vec![ptr(out)]).fault(&m, &mut mem);
    let FaultKind::SharedRace { addr, what, other } = &f.kind else {
        panic!("wrong fault: {f}");
    };
    assert_eq!((f.thread, *what, *addr), ([0, 0, 0], "read after write", 4));
    assert_eq!(f.line, line_of(&text, "ld.shared.u32"));
    assert_eq!(
        (other.thread, other.line),
        ([1, 0, 0], line_of(&text, "st.shared.u32"))
    );
    // The same kernel passes with race checking off (and reads stale neighbours).
    let options = SimOptions {
        race_check: false,
        ..SimOptions::default()
    };
    Launch::new("neighbour_without_barrier", 1, 64, vec![ptr(out)])
        .try_run(&m, &mut mem, &options)
        .unwrap();
}

#[test]
fn tiled_matmul_missing_its_second_barrier_races() {
    let text = ptx("matmul.ptx").replace("    bar.sync 0; // tile consumed\n", "");
    let m = parse_text(&text);
    let mut mem = GlobalMemory::new();
    let a = mem.upload(&[1.0f32; 16 * 32]).unwrap();
    let b = mem.upload(&[1.0f32; 32 * 16]).unwrap();
    let c = mem.alloc(16 * 16 * 4).unwrap();
    let launch = Launch {
        kernel: "matmul_tiled",
        grid: [1, 1, 1],
        block: [16, 16, 1],
        shared: 0,
        args: vec![
            ptr(a),
            ptr(b),
            ptr(c),
            KernelArg::U32(16),
            KernelArg::U32(32),
        ],
    };
    let f = launch.fault(&m, &mut mem);
    assert!(
        matches!(
            f.kind,
            FaultKind::SharedRace {
                what: "write after read",
                ..
            }
        ),
        "{f}"
    );
    assert!(f.instruction.starts_with("st.shared.f32"), "{f}");
    // With the barrier the same launch is clean.
    launch.run(&module("matmul.ptx"), &mut mem);
    assert_eq!(mem.read::<f32>(c, 1).unwrap(), vec![32.0]);
}

#[test]
fn out_of_bounds_dynamic_shared_store() {
    let m = module("memory.ptx");
    let mut mem = GlobalMemory::new();
    let out = mem.alloc(97 * 4).unwrap();
    let mut launch = Launch::new("dynamic", 1, 96, vec![ptr(out)]);
    launch.shared = 64; // room for 16 of the 96 threads
    let f = launch.fault(&m, &mut mem);
    assert_eq!(f.thread, [16, 0, 0]);
    let FaultKind::OutOfBounds {
        space,
        access,
        addr,
        ..
    } = f.kind
    else {
        panic!("wrong fault: {f}");
    };
    assert_eq!((space, access, addr), ("shared", Access::Store, 80));
}

const HEADER: &str = ".version 7.8\n.target sm_80\n.address_size 64\n";

#[test]
fn integer_division_by_zero() {
    let m = parse_text(&format!(
        "{HEADER}.visible .entry k(.param .u64 out)\n{{\n.reg .b32 %r<4>;\n.reg .b64 %rd<2>;\n\
         mov.u32 %r1, %tid.x;\nmov.u32 %r2, 100;\ndiv.u32 %r3, %r2, %r1;\nret;\n}}\n"
    ));
    let f = Launch::new("k", 1, 32, vec![ptr(0)]).fault(&m, &mut GlobalMemory::new());
    assert_eq!(
        (f.thread, f.line, f.kind.clone()),
        ([0, 0, 0], 10, FaultKind::DivideByZero)
    );
}

#[test]
fn endless_loops_hit_the_step_limit() {
    let m = parse_text(&format!(
        "{HEADER}.visible .entry spin()\n{{\nSPIN:\n    bra SPIN;\n}}\n"
    ));
    let options = SimOptions {
        max_warp_steps: 1000,
        ..SimOptions::default()
    };
    let f = Launch::new("spin", 2, 64, vec![]).fault_with(&m, &mut GlobalMemory::new(), &options);
    assert_eq!(f.kind, FaultKind::StepLimit { limit: 1000 });
    assert_eq!((f.block, f.line), ([0, 0, 0], 7));
}

#[test]
fn shuffle_in_a_divergent_branch_with_a_full_mask() {
    let m = parse_text(&format!(
        "{HEADER}.visible .entry k()\n{{\n.reg .pred %p1;\n.reg .b32 %r<3>;\n\
         mov.u32 %r1, %laneid;\nsetp.lt.u32 %p1, %r1, 8;\n@!%p1 bra END;\n\
         shfl.sync.down.b32 %r2, %r1, 1, 31, -1;\nEND:\nret;\n}}\n"
    ));
    let f = Launch::new("k", 1, 32, vec![]).fault(&m, &mut GlobalMemory::new());
    let FaultKind::WarpSync { detail } = &f.kind else {
        panic!("wrong fault: {f}");
    };
    assert!(detail.contains("lane 8 is in the member mask"), "{detail}");
    assert_eq!(f.line, 11);
}

#[test]
fn the_lowest_faulting_block_is_reported() {
    let m = module("bug_oob_store.ptx");
    let mut mem = GlobalMemory::new();
    let out = mem.alloc(4 * 1024 + 8).unwrap();
    // Blocks 4..64 all store out of bounds; block 4 must be the one reported, every time.
    for _ in 0..3 {
        let f = Launch::new("fill_unguarded", 64, 256, vec![ptr(out), KernelArg::U32(0)])
            .fault(&m, &mut mem);
        assert_eq!((f.block, f.thread), ([4, 0, 0], [2, 0, 0]));
    }
}
