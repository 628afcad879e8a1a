//! The tensor-core instructions one at a time against the PTX ISA's definitions, written
//! here independently of the simulator: the fragment layouts of `mma` and `ldmatrix`,
//! `cp.async`'s zero fill and late landing, the TF32 and bf16 conversions, and the errors
//! for tensor-core PTX the simulator does not execute.

mod sim_support;

use calib_runtime::sim::{
    self, Access, FaultKind, GlobalMemory, KernelArg, ParseError, SimOptions,
};
use half::{bf16, f16};
use sim_support::{module, move_tagged, parse_text, ptr, ptx, tf32_rna, Launch, Rng};

/// `(row, col)` of element `i` of the A fragment (`a0, a1, ...`; two per register for
/// 16-bit types, the even one in the low half), as the PTX ISA tabulates it for
/// m16n8k8 .tf32 and m16n8k16 .bf16/.f16. `g = lane >> 2`, `t = lane % 4`.
fn a_element(k: usize, lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    if k == 8 {
        let row = if i == 0 || i == 2 { g } else { g + 8 };
        let col = if i < 2 { t } else { t + 4 };
        return (row, col);
    }
    let row = if matches!(i, 0 | 1 | 4 | 5) { g } else { g + 8 };
    let col = t * 2 + (i & 1) + if i >= 4 { 8 } else { 0 };
    (row, col)
}

/// `(row, col)` of element `i` of the B fragment.
fn b_element(k: usize, lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    if k == 8 {
        return (if i == 0 { t } else { t + 4 }, g);
    }
    (t * 2 + (i & 1) + if i >= 2 { 8 } else { 0 }, g)
}

/// `(row, col)` of element `i` of the C and D fragments (f32, one per register).
fn cd_element(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    (if i < 2 { g } else { g + 8 }, t * 2 + (i & 1))
}

/// How an input type puts values into 32-bit registers.
#[derive(Clone, Copy)]
enum Input {
    Tf32,
    Bf16,
    F16,
}

impl Input {
    fn k(self) -> usize {
        match self {
            Input::Tf32 => 8,
            _ => 16,
        }
    }

    fn kernel(self) -> &'static str {
        match self {
            Input::Tf32 => "mma_tf32",
            Input::Bf16 => "mma_bf16",
            Input::F16 => "mma_f16",
        }
    }

    /// The bits of `x` in this type (`x` must be representable) and the value the
    /// tensor core reads from them.
    fn encode(self, x: f32) -> (u32, f32) {
        match self {
            // The ISA: an mma ignores the low 13 mantissa bits of a .tf32 operand.
            Input::Tf32 => (x.to_bits(), f32::from_bits(x.to_bits() & 0xffff_e000)),
            Input::Bf16 => {
                let h = bf16::from_f32(x);
                (h.to_bits() as u32, h.to_f32())
            }
            Input::F16 => {
                let h = f16::from_f32(x);
                (h.to_bits() as u32, h.to_f32())
            }
        }
    }
}

/// Runs one warp's mma on A (16 x k), B (k x 8) and C (16 x 8), distributing them into
/// registers by the ISA's tables; returns D gathered back by the same tables, and the
/// values the tensor core reads for A and B.
#[allow(clippy::type_complexity)]
fn run_mma(
    input: Input,
    a: &[Vec<f32>],
    b: &[Vec<f32>],
    c: &[Vec<f32>],
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let k = input.k();
    let per = if k == 8 { 1 } else { 2 };
    let mut words = vec![0u32; 320];
    let mut a_read = vec![vec![0f32; k]; 16];
    let mut b_read = vec![vec![0f32; 8]; k];
    for lane in 0..32 {
        for i in 0..4 * per {
            let (row, col) = a_element(k, lane, i);
            let (bits, value) = input.encode(a[row][col]);
            words[lane * 4 + i / per] |= bits << (16 * (i % per));
            a_read[row][col] = value;
        }
        for i in 0..2 * per {
            let (row, col) = b_element(k, lane, i);
            let (bits, value) = input.encode(b[row][col]);
            words[128 + lane * 2 + i / per] |= bits << (16 * (i % per));
            b_read[row][col] = value;
        }
        for i in 0..4 {
            let (row, col) = cd_element(lane, i);
            words[192 + lane * 4 + i] = c[row][col].to_bits();
        }
    }
    let m = module("tensor_ops.ptx");
    let mut mem = GlobalMemory::new();
    let inp = mem.upload(&words).unwrap();
    let out = mem.alloc(128 * 4).unwrap();
    Launch::new(input.kernel(), 1, 32, vec![ptr(inp), ptr(out)]).run(&m, &mut mem);
    let got: Vec<u32> = mem.read(out, 128).unwrap();
    let mut d = vec![vec![f32::NAN; 8]; 16];
    for lane in 0..32 {
        for i in 0..4 {
            let (row, col) = cd_element(lane, i);
            d[row][col] = f32::from_bits(got[lane * 4 + i]);
        }
    }
    (d, a_read, b_read)
}

fn matrix(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f32) -> Vec<Vec<f32>> {
    (0..rows)
        .map(|i| (0..cols).map(|j| f(i, j)).collect())
        .collect()
}

#[test]
fn mma_fragments_follow_the_isa_layouts_for_every_input_type() {
    // Small integers: every product and sum is exact, so any misplaced element shows.
    for input in [Input::Tf32, Input::Bf16, Input::F16] {
        let k = input.k();
        let a = matrix(16, k, |i, kk| (i * k + kk) as f32);
        let b = matrix(k, 8, |kk, j| (kk * 8 + j) as f32 - 20.0);
        let c = matrix(16, 8, |i, j| (i * 8 + j) as f32 * 2.0);
        let (d, _, _) = run_mma(input, &a, &b, &c);
        for (i, row) in d.iter().enumerate() {
            for (j, &got) in row.iter().enumerate() {
                let exact: i64 = (0..k)
                    .map(|kk| (i * k + kk) as i64 * ((kk * 8 + j) as i64 - 20))
                    .sum::<i64>()
                    + (i * 8 + j) as i64 * 2;
                assert_eq!(got, exact as f32, "{}: D[{i}][{j}]", input.kernel());
            }
        }
    }
}

#[test]
fn mma_accumulates_over_k_in_order_with_one_rounding_per_step() {
    // The documented reference: products exact, D = fma(A[i][k], B[k][j], D) for
    // k = 0, 1, ... rounded to nearest even in f32; .tf32 operands lose 13 low bits.
    let mut rng = Rng::new(11);
    for input in [Input::Tf32, Input::Bf16, Input::F16] {
        let k = input.k();
        let a = matrix(16, k, |_, _| 0.0);
        let (a, b, c) = (
            a.iter()
                .map(|r| rng.f32s(r.len(), -4.0, 4.0))
                .collect::<Vec<_>>(),
            (0..k).map(|_| rng.f32s(8, -4.0, 4.0)).collect::<Vec<_>>(),
            (0..16)
                .map(|_| rng.f32s(8, -100.0, 100.0))
                .collect::<Vec<_>>(),
        );
        let (d, a_read, b_read) = run_mma(input, &a, &b, &c);
        let mut differs_from_f64 = 0;
        for i in 0..16 {
            for j in 0..8 {
                let mut acc = c[i][j];
                let mut wide = c[i][j] as f64;
                for kk in 0..k {
                    acc = a_read[i][kk].mul_add(b_read[kk][j], acc);
                    wide += a_read[i][kk] as f64 * b_read[kk][j] as f64;
                }
                assert_eq!(
                    d[i][j].to_bits(),
                    acc.to_bits(),
                    "{}: D[{i}][{j}]",
                    input.kernel()
                );
                differs_from_f64 += (wide as f32 != acc) as usize;
            }
        }
        // The rounding points matter: a single final rounding would differ somewhere.
        assert!(differs_from_f64 > 0, "{}", input.kernel());
    }
}

#[test]
fn mma_reads_tf32_operands_without_their_low_13_bits() {
    let k = 8;
    let one_and_a_bit = f32::from_bits(1.0f32.to_bits() | 0x1000);
    let a = matrix(16, k, |i, kk| if kk == i % 8 { one_and_a_bit } else { 0.0 });
    let b = matrix(k, 8, |kk, j| if kk == j { 3.0 } else { 0.0 });
    let c = matrix(16, 8, |_, _| 0.0);
    let (d, _, _) = run_mma(Input::Tf32, &a, &b, &c);
    assert_eq!(d[0][0], 3.0);
    assert_eq!(d[9][1], 3.0);
}

#[test]
fn ldmatrix_gives_each_lane_its_rows_elements_plain_and_transposed() {
    let elements: Vec<u16> = (0..256u16).map(|e| e.wrapping_mul(97) ^ 0x5a00).collect();
    // Lane l names row perm(l) of the 32 rows of 16 bytes.
    let rows: Vec<u32> = (0..32u32).map(|l| (l * 13 + 5) % 32 * 16).collect();
    let m = module("tensor_ops.ptx");
    let mut mem = GlobalMemory::new();
    let src = mem.upload(&elements).unwrap();
    let rows_ptr = mem.upload(&rows).unwrap();
    let out = mem.alloc(32 * 12 * 4).unwrap();
    Launch::new(
        "ldmatrix_all",
        1,
        32,
        vec![ptr(src), ptr(rows_ptr), ptr(out)],
    )
    .run(&m, &mut mem);
    let got: Vec<u32> = mem.read(out, 32 * 12).unwrap();
    // Matrix `mat`, row `r` is the row whose address lane 8 mat + r gave.
    let at =
        |mat: usize, r: usize, col: usize| elements[rows[8 * mat + r] as usize / 2 + col] as u32;
    for lane in 0..32 {
        let (r, c) = (lane / 4, 2 * (lane % 4));
        let plain = |mat: usize| at(mat, r, c) | at(mat, r, c + 1) << 16;
        let trans = |mat: usize| at(mat, c, r) | at(mat, c + 1, r) << 16;
        let want: Vec<u32> = (0..4)
            .map(plain)
            .chain((0..4).map(trans))
            .chain((0..2).map(plain))
            .chain([plain(0)])
            .collect();
        assert_eq!(&got[lane * 12..lane * 12 + 11], &want[..], "lane {lane}");
    }
}

fn cp_async_inputs(mem: &mut GlobalMemory) -> (Vec<u8>, Vec<u32>, u64, u64, u64) {
    let mut rng = Rng::new(5);
    let src: Vec<u8> = (0..896).map(|_| rng.next_u32() as u8).collect();
    let sizes: Vec<u32> = (0..32).map(|l| l % 17).collect();
    let src_ptr = mem.upload(&src).unwrap();
    let sizes_ptr = mem.upload(&sizes).unwrap();
    let out = mem.alloc(896).unwrap();
    (src, sizes, src_ptr, sizes_ptr, out)
}

#[test]
fn cp_async_copies_src_size_bytes_and_zero_fills_the_rest() {
    let m = module("tensor_ops.ptx");
    let mut mem = GlobalMemory::new();
    let (src, sizes, s, z, out) = cp_async_inputs(&mut mem);
    Launch::new("cp_async_fill", 1, 32, vec![ptr(s), ptr(z), ptr(out)]).run(&m, &mut mem);
    let got: Vec<u8> = mem.read(out, 896).unwrap();
    for lane in 0..32 {
        let n = sizes[lane] as usize;
        let chunk = &got[16 * lane..16 * lane + 16];
        assert_eq!(&chunk[..n], &src[16 * lane..16 * lane + n], "lane {lane}");
        assert!(chunk[n..].iter().all(|&b| b == 0), "lane {lane}: {chunk:?}");
    }
    assert_eq!(&got[512..], &src[512..]);
}

#[test]
fn reading_a_cp_async_destination_before_the_wait_reads_stale_data_and_is_reported() {
    let early = move_tagged(&ptx("tensor_ops.ptx"), "// @WAIT", "// @READ", false);
    let m = parse_text(&early);
    let mut mem = GlobalMemory::new();
    let (src, _, s, z, out) = cp_async_inputs(&mut mem);
    let launch = Launch::new("cp_async_fill", 1, 32, vec![ptr(s), ptr(z), ptr(out)]);
    let f = launch.fault(&m, &mut mem);
    let FaultKind::AsyncCopyPending { addr, access, copy } = &f.kind else {
        panic!("expected a cp.async hazard, got {f}");
    };
    assert_eq!((*addr, *access), (0, Access::Load), "{f}");
    assert!(f.instruction.starts_with("ld.shared.v4.b32"), "{f}");
    assert!(
        copy.instruction
            .starts_with("cp.async.ca.shared.global [%r3]"),
        "{f}"
    );
    let text = f.to_string();
    assert!(
        text.contains("cp_async_fill") && text.contains("0x0"),
        "{text}"
    );
    // Without the sanitizer the kernel runs and reads what was there before the copy.
    let unchecked = SimOptions {
        race_check: false,
        ..SimOptions::default()
    };
    launch.try_run(&m, &mut mem, &unchecked).unwrap();
    let got: Vec<u8> = mem.read(out, 896).unwrap();
    assert!(got[..512].iter().all(|&b| b == 0xff));
    assert_eq!(
        &got[512..],
        &src[512..],
        "the 8- and 4-byte copies were waited for"
    );
}

#[test]
fn overwriting_a_cp_async_destination_in_flight_is_reported() {
    let late_fill = move_tagged(&ptx("tensor_ops.ptx"), "// @FILL", "// @COPY16", false);
    let m = parse_text(&late_fill);
    let mut mem = GlobalMemory::new();
    let (_, _, s, z, out) = cp_async_inputs(&mut mem);
    let f = Launch::new("cp_async_fill", 1, 32, vec![ptr(s), ptr(z), ptr(out)]).fault(&m, &mut mem);
    let FaultKind::AsyncCopyPending { addr, access, copy } = &f.kind else {
        panic!("expected a cp.async hazard, got {f}");
    };
    assert_eq!((*addr, *access), (0, Access::Store), "{f}");
    assert!(f.instruction.starts_with("st.shared.v4.b32"), "{f}");
    assert_eq!(copy.thread, [0, 0, 0], "{f}");
}

#[test]
fn a_src_size_beyond_the_copy_size_is_a_fault_not_a_panic() {
    let m = module("tensor_ops.ptx");
    let mut mem = GlobalMemory::new();
    let (_, _, s, _, out) = cp_async_inputs(&mut mem);
    let sizes = mem.upload(&[17u32; 32]).unwrap();
    let f =
        Launch::new("cp_async_fill", 1, 32, vec![ptr(s), ptr(sizes), ptr(out)]).fault(&m, &mut mem);
    let FaultKind::BadOperand { detail } = &f.kind else {
        panic!("expected a bad operand, got {f}");
    };
    assert!(
        detail.contains("src-size 17 exceeds the copy size 16"),
        "{f}"
    );
    assert!(f.instruction.starts_with("cp.async.ca"), "{f}");
}

#[test]
fn conversions_to_tf32_and_bf16_round_as_the_isa_says() {
    let tie_tf32 = f32::from_bits(0x3f80_1000); // 1 + 2^-11: halfway, goes away from zero
    let tie_bf16 = f32::from_bits(0x3f80_8000); // 1 + 2^-8: halfway, goes to even
    let mut x = vec![
        tie_tf32,
        -tie_tf32,
        f32::from_bits(0x3f80_0fff),
        tie_bf16,
        f32::from_bits(0x3f81_8000),
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1.5e-40,
        -0.0,
        65504.0,
    ];
    let mut rng = Rng::new(3);
    while x.len() < 64 {
        x.push(rng.f32_in(-1e3, 1e3));
    }
    let m = module("tensor_ops.ptx");
    let mut mem = GlobalMemory::new();
    let xp = mem.upload(&x).unwrap();
    let out = mem.alloc(32 * 20).unwrap();
    Launch::new("conversions", 1, 32, vec![ptr(xp), ptr(out)]).run(&m, &mut mem);
    let got: Vec<u32> = mem.read(out, 32 * 5).unwrap();
    for lane in 0..32 {
        let (f, g) = (x[2 * lane], x[2 * lane + 1]);
        let row = &got[lane * 5..lane * 5 + 5];
        let tf32 = tf32_rna(f);
        if f.is_nan() {
            assert!(f32::from_bits(row[0]).is_nan());
        } else {
            assert_eq!(row[0], tf32.to_bits(), "tf32 of {f:e}");
        }
        let (bf, bg) = (bf16::from_f32(f), bf16::from_f32(g));
        let packed = (bf.to_bits() as u32) << 16 | bg.to_bits() as u32;
        assert_eq!(row[1], packed, "bf16x2 of {f:e}, {g:e}");
        assert_eq!(row[2], packed, "mov.b32 {{bf16(g), bf16(f)}}");
        assert_eq!(row[3], bg.to_f32().to_bits(), "low half of bf16x2 is g");
        assert_eq!(row[4], bf.to_f32().to_bits(), "high half of bf16x2 is f");
    }
    assert_eq!(got[0], 0x3f80_2000, "the tf32 tie goes away from zero");
    assert_eq!(
        got[1], 0x3f80_bf80,
        "1 + 2^-11 is below bf16's halfway point"
    );
}

fn parse_error(body: &str) -> ParseError {
    let text = format!(
        ".version 7.8\n.target sm_80\n.address_size 64\n.visible .entry k()\n{{\n\
         .reg .b32 %r<8>;\n.reg .f32 %f<8>;\n.reg .b16 %h<2>;\n.reg .b64 %rd<2>;\n{body}\nret;\n}}\n"
    );
    match sim::parse(&text) {
        Err(e) => e,
        Ok(_) => panic!("`{body}` parsed"),
    }
}

#[test]
fn tensor_core_ptx_outside_the_subset_is_a_parse_error_naming_the_line() {
    let cases = [
        (
            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%f0,%f1,%f2,%f3}, {%r0,%r1,%r2}, {%r4,%r5}, {%f4,%f5,%f6,%f7};",
            "A operand: operand 2 needs 4 registers, found 3",
        ),
        (
            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%f0,%f1,%f2,%f3}, {%r0,%r1,%r2,%r3}, {%r4,%r5}, {%h0,%f5,%f6,%f7};",
            "C operand: register %h0 is .b16",
        ),
        (
            "mma.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 {%f0,%f1,%f2,%f3}, {%r0,%r1,%r2,%r3}, {%r4,%r5}, {%f4,%f5,%f6,%f7};",
            "unsupported mma shape",
        ),
        (
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.f16.f32 {%f0,%f1,%f2,%f3}, {%r0,%r1,%r2,%r3}, {%r4,%r5}, {%f4,%f5,%f6,%f7};",
            "unsupported mma types `.f32.bf16.f16.f32`",
        ),
        (
            "mma.sync.aligned.m16n8k16.row.col.f32.tf32.tf32.f32 {%f0,%f1,%f2,%f3}, {%r0,%r1,%r2,%r3}, {%r4,%r5}, {%f4,%f5,%f6,%f7};",
            "executed for m16n8k8",
        ),
        (
            "mma.sync.aligned.m16n8k8.row.row.f32.tf32.tf32.f32 {%f0,%f1,%f2,%f3}, {%r0,%r1,%r2,%r3}, {%r4,%r5}, {%f4,%f5,%f6,%f7};",
            ".row.col",
        ),
        (
            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%f0,%f1,%f2,%f3}, {%r0,%r1,%r2,%r3}, {%r4,%r5};",
            "takes 4 operands, found 3",
        ),
        (
            "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r0,%r1}, [%r4];",
            "needs 4 registers, found 2",
        ),
        (
            "ldmatrix.sync.aligned.m8n8.x3.shared.b16 {%r0,%r1,%r2}, [%r4];",
            ".x1, .x2 or .x4",
        ),
        ("cp.async.ca.shared.global [%r0], [%rd1], 12;", "4, 8 or 16 bytes"),
        ("cp.async.cg.shared.global [%r0], [%rd1], 8;", "cp.async.cg copies 16 bytes"),
        ("cp.async.wait_group %r1;", "integer constant"),
        ("cvt.rn.tf32.f32 %r1, %f1;", "with .rna only"),
    ];
    for (body, message) in cases {
        let e = parse_error(body);
        assert_eq!(e.line, 10, "{body}: {e}");
        assert!(e.message.contains(message), "{body}: {e}");
        assert!(
            e.to_string().contains(body.split(' ').next().unwrap()),
            "{e}"
        );
    }
}

#[test]
fn an_mma_that_half_the_warp_skips_is_a_warp_sync_fault() {
    let text = ".version 7.8\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\n\
        .reg .pred %p1;\n.reg .b32 %r<8>;\n.reg .f32 %f<8>;\n\
        mov.u32 %r0, %laneid;\n\
        setp.lt.u32 %p1, %r0, 16;\n\
        @%p1 bra DONE;\n\
        mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%f0,%f1,%f2,%f3}, {%r0,%r1,%r2,%r3}, {%r4,%r5}, {%f4,%f5,%f6,%f7};\n\
        DONE:\nret;\n}\n";
    let m = parse_text(text);
    let mut mem = GlobalMemory::new();
    let f = Launch::new("k", 1, 32, Vec::<KernelArg>::new()).fault(&m, &mut mem);
    let FaultKind::WarpSync { detail } = &f.kind else {
        panic!("expected a warp-sync fault, got {f}");
    };
    assert_eq!((f.line, f.thread), (12, [16, 0, 0]), "{f}");
    assert!(f.instruction.starts_with("mma.sync"), "{f}");
    assert!(
        detail.contains("needs all 32 lanes") && detail.contains("lane 0"),
        "{detail}"
    );
}
