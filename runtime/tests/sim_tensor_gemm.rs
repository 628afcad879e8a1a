//! The tensor-core GEMMs of `tests/ptx/tensor_gemm.ptx` (cp.async 3-stage pipeline,
//! ldmatrix, mma.sync) on the simulator, bit for bit against a Rust reference that rounds
//! where the kernel does: operands to TF32 by `cvt.rna` (or given in bf16), then for
//! k = 0, 1, ..., K-1 `c = fma(a, b, c)` in f32, the simulator's documented mma order.
//! The same PTX must assemble with ptxas for sm_80 and sm_90, and two planted pipeline
//! bugs must be reported: a `wait_group` after the first `ldmatrix`, and a stage refilled
//! without a `bar.sync` after its last reads.

mod sim_support;

use calib_runtime::sim::{self, ptxas, Access, FaultKind, GlobalMemory, SimError, SimOptions};
use half::bf16;
use sim_support::{move_tagged, parse_text, ptr, ptx, ptxas_or_skip, tf32_rna, Launch, Rng};

const M: usize = 64;
const N: usize = 64;

/// The operands of one GEMM: A (M x k) and B, with the values the tensor cores read.
struct Problem {
    kernel: &'static str,
    /// Six K tiles for both kernels, so every stage is refilled at least once.
    k: usize,
    a_bytes: Vec<u8>,
    b_bytes: Vec<u8>,
    /// A[i][k] and B[k][j] as the mma reads them.
    a: Vec<f32>,
    b: Vec<f32>,
}

fn tf32_problem(seed: u64) -> Problem {
    const K: usize = 96;
    let mut rng = Rng::new(seed);
    let a = rng.f32s(M * K, -1.0, 1.0);
    // The kernel reads B transposed: bt[j][k].
    let bt = rng.f32s(N * K, -1.0, 1.0);
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect();
    Problem {
        kernel: "gemm_tf32",
        k: K,
        a_bytes: bytes(&a),
        b_bytes: bytes(&bt),
        a: a.iter().map(|&x| tf32_rna(x)).collect(),
        b: (0..K * N)
            .map(|i| tf32_rna(bt[i % N * K + i / N]))
            .collect(),
    }
}

fn bf16_problem(seed: u64) -> Problem {
    const K: usize = 192;
    let mut rng = Rng::new(seed);
    let a: Vec<bf16> = rng
        .f32s(M * K, -1.0, 1.0)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    let b: Vec<bf16> = rng
        .f32s(K * N, -1.0, 1.0)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    let bytes = |v: &[bf16]| v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect();
    Problem {
        kernel: "gemm_bf16",
        k: K,
        a_bytes: bytes(&a),
        b_bytes: bytes(&b),
        a: a.iter().map(|x| x.to_f32()).collect(),
        b: b.iter().map(|x| x.to_f32()).collect(),
    }
}

/// C = A B with one f32 rounding per k, in increasing k.
fn reference(p: &Problem) -> Vec<f32> {
    let k_len = p.k;
    let mut c = vec![0f32; M * N];
    for i in 0..M {
        for j in 0..N {
            let mut acc = 0f32;
            for k in 0..k_len {
                acc = p.a[i * k_len + k].mul_add(p.b[k * N + j], acc);
            }
            c[i * N + j] = acc;
        }
    }
    c
}

fn run(text: &str, p: &Problem, options: &SimOptions) -> Result<Vec<f32>, SimError> {
    let m = parse_text(text);
    let mut mem = GlobalMemory::new();
    let a = mem.upload(&p.a_bytes).unwrap();
    let b = mem.upload(&p.b_bytes).unwrap();
    let c = mem.alloc(M * N * 4).unwrap();
    let launch = Launch {
        kernel: p.kernel,
        grid: [(N / 32) as u32, (M / 32) as u32, 1],
        block: [128, 1, 1],
        shared: 0,
        args: vec![
            ptr(a),
            ptr(b),
            ptr(c),
            (M as u32).into(),
            (N as u32).into(),
            (p.k as u32).into(),
        ],
    };
    launch.try_run(&m, &mut mem, options)?;
    Ok(mem.read(c, M * N).unwrap())
}

fn assert_bit_exact(got: &[f32], want: &[f32], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}: C[{}][{}] = {g:e}, want {w:e}",
            i / N,
            i % N
        );
    }
}

#[test]
fn tf32_and_bf16_gemms_match_the_reference_bit_for_bit() {
    let text = ptx("tensor_gemm.ptx");
    for p in [tf32_problem(1), bf16_problem(2)] {
        let want = reference(&p);
        let got = run(&text, &p, &SimOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_bit_exact(&got, &want, p.kernel);
        // The rounding points are the reference's: one f64 sum rounded once differs.
        let wide_differs = (0..M * N).any(|idx| {
            let (i, j) = (idx / N, idx % N);
            let s: f64 = (0..p.k)
                .map(|k| p.a[i * p.k + k] as f64 * p.b[k * N + j] as f64)
                .sum();
            s as f32 != want[idx]
        });
        assert!(
            wide_differs,
            "{}: the test cannot tell rounding orders apart",
            p.kernel
        );
    }
}

#[test]
fn the_gemm_ptx_and_its_planted_variants_assemble_for_sm_80_and_sm_90() {
    let Some(bin) = ptxas_or_skip() else { return };
    let text = ptx("tensor_gemm.ptx");
    let early_wait = move_tagged(&text, "// @WAIT", "// @FIRST_LDMATRIX", false);
    let early_refill = move_tagged(&text, "// @REFILL", "// @BAR", true);
    for (what, ptx) in [
        ("kernel", &text),
        ("early wait", &early_wait),
        ("early refill", &early_refill),
    ] {
        sim::parse(ptx).unwrap_or_else(|e| panic!("{what}: {e}"));
        for arch in ["sm_80", "sm_90"] {
            let report =
                ptxas::assemble_with(&bin, ptx, arch).unwrap_or_else(|e| panic!("{what}: {e}"));
            let mut names: Vec<&str> = report.kernels.iter().map(|k| k.name.as_str()).collect();
            names.sort();
            assert_eq!(names, ["gemm_bf16", "gemm_tf32"], "{what} for {arch}");
            for k in &report.kernels {
                assert_eq!(k.shared_bytes, 3 * 4096, "{what}: {k:?}");
                assert_eq!(k.spill_store_bytes, 0, "{what}: {k:?}");
            }
        }
    }
}

#[test]
fn a_wait_group_after_the_first_ldmatrix_is_reported_and_reads_stale_tiles() {
    let text = move_tagged(
        &ptx("tensor_gemm.ptx"),
        "// @WAIT",
        "// @FIRST_LDMATRIX",
        false,
    );
    for p in [tf32_problem(3), bf16_problem(4)] {
        let f = match run(&text, &p, &SimOptions::default()) {
            Err(SimError::Fault(f)) => f,
            Err(e) => panic!("{}: expected a fault, got {e}", p.kernel),
            Ok(_) => panic!("{}: expected a fault, the kernel completed", p.kernel),
        };
        let FaultKind::AsyncCopyPending { addr, access, copy } = &f.kind else {
            panic!("expected a cp.async hazard, got {f}");
        };
        assert_eq!((f.kernel.as_str(), f.block), (p.kernel, [0, 0, 0]), "{f}");
        assert!(
            f.instruction
                .starts_with("ldmatrix.sync.aligned.m8n8.x4.shared"),
            "{f}"
        );
        assert_eq!(*access, Access::Load, "{f}");
        // Stage 0's A tile: the first tile's copies were never waited for.
        assert!(*addr < 2048, "{f}");
        assert!(
            copy.instruction.starts_with("cp.async.cg.shared.global"),
            "{f}"
        );
        let message = f.to_string();
        assert!(
            message.contains(p.kernel)
                && message.contains("ldmatrix")
                && message.contains(&format!("{addr:#x}")),
            "{message}"
        );
        // Unchecked, the kernel computes with tiles that had not landed.
        let unchecked = SimOptions {
            race_check: false,
            ..SimOptions::default()
        };
        let got = run(&text, &p, &unchecked).unwrap();
        assert_ne!(got, reference(&p), "{}", p.kernel);
    }
}

#[test]
fn refilling_a_stage_before_the_barrier_is_a_shared_memory_race() {
    let text = move_tagged(&ptx("tensor_gemm.ptx"), "// @REFILL", "// @BAR", true);
    for p in [tf32_problem(5), bf16_problem(6)] {
        let f = match run(&text, &p, &SimOptions::default()) {
            Err(SimError::Fault(f)) => f,
            Err(e) => panic!("{}: expected a fault, got {e}", p.kernel),
            Ok(_) => panic!("{}: expected a fault, the kernel completed", p.kernel),
        };
        let FaultKind::SharedRace { what, other, .. } = &f.kind else {
            panic!("expected a race, got {f}");
        };
        assert_eq!(f.kernel, p.kernel);
        assert_eq!(*what, "write after read", "{f}");
        assert!(f.instruction.contains("cp.async.cg.shared.global"), "{f}");
        assert!(other.instruction.starts_with("ldmatrix"), "{f}");
    }
}

#[test]
fn reading_landed_tiles_without_the_barrier_is_a_shared_memory_race() {
    // Without the bar.sync a thread's copies have landed (its own wait_group) but the
    // other threads of the block may not see them yet.
    let text: String = ptx("tensor_gemm.ptx")
        .split_inclusive('\n')
        .filter(|l| !l.contains("// @BAR"))
        .collect();
    let p = tf32_problem(7);
    let f = match run(&text, &p, &SimOptions::default()) {
        Err(SimError::Fault(f)) => f,
        Err(e) => panic!("expected a fault, got {e}"),
        Ok(_) => panic!("expected a fault, the kernel completed"),
    };
    let FaultKind::SharedRace { what, other, .. } = &f.kind else {
        panic!("expected a race, got {f}");
    };
    assert_eq!(*what, "read after write", "{f}");
    assert!(f.instruction.starts_with("ldmatrix"), "{f}");
    assert!(other.instruction.starts_with("cp.async.cg"), "{f}");
    assert_ne!(other.thread, f.thread, "{f}");
}
