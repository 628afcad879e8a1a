//! The elementwise instruction groups on the simulator, each result checked against plain
//! Rust: integer arithmetic and bit operations, f32/f64 arithmetic (the `.approx` forms
//! against the error bounds PTX documents), conversions, and setp/selp.

mod sim_support;

use calib_runtime::sim::{DeviceValue, GlobalMemory, KernelArg};
use half::{bf16, f16};
use sim_support::{module, ptr, Launch, Rng};

/// Runs `kernel` over `n` threads with the given input buffers and two output buffers of
/// `words32` 32-bit and `words64` 64-bit values per thread; returns the outputs.
fn run_elementwise<T: DeviceValue>(
    file: &str,
    kernel: &str,
    inputs: &[&[T]],
    words32: usize,
    words64: usize,
) -> (Vec<u32>, Vec<u64>) {
    let m = module(file);
    let n = inputs[0].len();
    let mut mem = GlobalMemory::new();
    let mut args: Vec<KernelArg> = inputs.iter().map(|x| ptr(mem.upload(x).unwrap())).collect();
    let out32 = mem.alloc(n * words32 * 4).unwrap();
    args.push(ptr(out32));
    let out64 = mem.alloc(n * words64 * 8).unwrap();
    if words64 > 0 {
        args.push(ptr(out64));
    }
    args.push(KernelArg::U32(n as u32));
    Launch::new(kernel, n.div_ceil(64) as u32, 64, args).run(&m, &mut mem);
    (
        mem.read(out32, n * words32).unwrap(),
        mem.read(out64, n * words64).unwrap(),
    )
}

fn int_expected(a: i32, b: i32) -> Vec<u32> {
    let (ua, ub) = (a as u32, b as u32);
    let sh = (b & 63) as u32;
    let mulhi_u = ((ua as u64 * ub as u64) >> 32) as u32;
    vec![
        a.wrapping_add(b) as u32,
        a.wrapping_sub(b) as u32,
        a.wrapping_mul(b) as u32,
        ((a as i64 * b as i64) >> 32) as u32,
        mulhi_u,
        a.wrapping_mul(b).wrapping_add(a) as u32,
        a.wrapping_div(b) as u32,
        a.wrapping_rem(b) as u32,
        ua / ub,
        ua % ub,
        a.min(b) as u32,
        a.max(b) as u32,
        ua.min(ub),
        ua.max(ub),
        a.wrapping_neg() as u32,
        a.wrapping_abs() as u32,
        ua & ub,
        ua | ub,
        ua ^ ub,
        !ua,
        if sh >= 32 { 0 } else { ua << sh },
        (a >> sh.min(31)) as u32,
        if sh >= 32 { 0 } else { ua >> sh },
        ua.count_ones(),
        ua.leading_zeros(),
        ua.reverse_bits(),
        a.saturating_add(b) as u32,
        mulhi_u.wrapping_add(ua),
        a.wrapping_add(-7) as u32,
        ua & 0xFF00FF,
    ]
}

#[test]
fn integer_arithmetic_and_bit_operations() {
    let mut rng = Rng::new(11);
    let mut pairs: Vec<(i32, i32)> = vec![
        (0, 1),
        (-1, 1),
        (i32::MAX, 2),
        (i32::MIN, 2),
        (i32::MAX, i32::MAX),
        (7, -3),
        (-7, 3),
        (123456, 32),
        (1, 63),
        (-1000, 40),
    ];
    while pairs.len() < 150 {
        let (a, b) = (
            rng.next_u32() as i32,
            rng.next_u32() as i32 >> (rng.next_u32() % 31),
        );
        if b != 0 {
            pairs.push((a, b));
        }
    }
    let a: Vec<i32> = pairs.iter().map(|p| p.0).collect();
    let b: Vec<i32> = pairs.iter().map(|p| p.1).collect();
    let (out, wide) = run_elementwise("int_ops.ptx", "int_ops", &[&a, &b], 30, 4);
    for (i, &(a, b)) in pairs.iter().enumerate() {
        let expected = int_expected(a, b);
        for (op, e) in expected.iter().enumerate() {
            assert_eq!(out[30 * i + op], *e, "op {op} of a={a} b={b}");
        }
        let w0 = (a as i64 * b as i64) as u64;
        let w1 = (a as u32 as u64 * b as u32 as u64).wrapping_add(w0);
        let w = [w0, w1, w1.wrapping_mul(3), a as i64 as u64];
        assert_eq!(&wide[4 * i..4 * i + 4], &w, "64-bit ops of a={a} b={b}");
    }
}

/// Distance in units in the last place between two finite f32 values.
fn ulps(x: f32, y: f32) -> u32 {
    let ordered = |v: f32| {
        let b = v.to_bits() as i32;
        if b < 0 {
            i32::MIN - b
        } else {
            b
        }
    };
    ordered(x).abs_diff(ordered(y))
}

fn same_f32(x: f32, y: f32) -> bool {
    x.to_bits() == y.to_bits() || x.is_nan() && y.is_nan()
}

/// PTX min/max: a NaN yields the other operand and -0 orders below +0.
fn ptx_min_max(a: f32, b: f32, min: bool) -> f32 {
    if a.is_nan() {
        return b;
    }
    if b.is_nan() {
        return a;
    }
    let a_first = a < b || a == b && a.is_sign_negative();
    if a_first == min {
        a
    } else {
        b
    }
}

fn sat(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

#[test]
fn float_arithmetic_exact_and_within_approx_bounds() {
    let mut rng = Rng::new(12);
    let mut rows: Vec<(f32, f32, f32)> = vec![
        (-0.0, 0.0, 1.0),
        (0.0, -0.0, 1.0),
        (f32::NAN, 1.0, 2.0),
        (1.0, f32::NAN, 2.0),
        (f32::INFINITY, 2.0, -1.0),
        (1e-40, 3.0, 0.0),
        (0.75, 0.5, 0.25),
    ];
    while rows.len() < 130 {
        let sign = if rng.next_u32() & 1 == 0 { 1.0 } else { -1.0 };
        rows.push((
            rng.f32_in(-3.0, 3.0),
            sign * rng.f32_in(0.5, 4.0),
            rng.f32_in(-2.0, 2.0),
        ));
    }
    let a: Vec<f32> = rows.iter().map(|r| r.0).collect();
    let b: Vec<f32> = rows.iter().map(|r| r.1).collect();
    let c: Vec<f32> = rows.iter().map(|r| r.2).collect();
    let (out, out64) = run_elementwise("float_ops.ptx", "float_ops", &[&a, &b, &c], 30, 10);
    let tiny = f32::from_bits(0x0040_0000);
    for (i, &(a, b, c)) in rows.iter().enumerate() {
        let got = |op: usize| f32::from_bits(out[30 * i + op]);
        let exact: [(usize, f32); 21] = [
            (0, a + b),
            (1, a - b),
            (2, a * b),
            (3, a.mul_add(b, c)),
            (4, a.mul_add(b, c)),
            (5, a / b),
            (8, ptx_min_max(a, b, true)),
            (9, ptx_min_max(a, b, false)),
            (10, -a),
            (11, a.abs()),
            (12, 1.0 / b),
            (14, a.abs().sqrt()),
            (22, sat(a + b)),
            // `.ftz` flushes the subnormal operand: a * 0.
            (
                23,
                if a.is_finite() {
                    0.0f32.copysign(a)
                } else {
                    f32::NAN
                },
            ),
            (24, a * tiny),
            (25, a + 1.0),
            (26, a),
            (27, a * 0.5),
            (
                28,
                ptx_min_max(if a.is_subnormal() { 0.0 } else { a }, b, false),
            ),
            (29, sat(b - if a.is_subnormal() { 0.0 } else { a })),
            (13, 1.0 / b),
        ];
        for (op, e) in exact {
            let tolerance = if op == 13 { 1 } else { 0 };
            let g = got(op);
            let ok = same_f32(g, e) || g.is_finite() && e.is_finite() && ulps(g, e) <= tolerance;
            assert!(ok, "op {op} of ({a}, {b}, {c}): got {g}, expected {e}");
        }
        if !(a.is_finite() && b.is_finite()) || a.is_subnormal() {
            continue;
        }
        // The approximate forms, against the error bounds the PTX ISA documents.
        for op in [6, 7] {
            assert!(
                ulps(got(op), a / b) <= 2,
                "div op {op} of {a}/{b}: {}",
                got(op)
            );
        }
        let x = a.abs() as f64;
        let rel = |op: usize, e: f64, bound: f64| {
            let g = got(op) as f64;
            assert!(
                (g - e).abs() <= bound * e.abs(),
                "op {op} of {a}: got {g}, expected {e}"
            );
        };
        let abs = |op: usize, e: f64, bound: f64| {
            let g = got(op) as f64;
            assert!(
                (g - e).abs() <= bound,
                "op {op} of {a}: got {g}, expected {e}"
            );
        };
        if x > 0.0 {
            rel(15, x.sqrt(), 2f64.powi(-22));
            rel(16, 1.0 / x.sqrt(), 2f64.powi(-22));
            abs(18, x.log2(), 2f64.powf(-22.0) * x.log2().abs().max(1.0));
        }
        rel(17, (a as f64).exp2(), 2f64.powf(-22.0));
        abs(19, (a as f64).sin(), 2f64.powf(-20.9));
        abs(20, (a as f64).cos(), 2f64.powf(-20.9));
        rel(21, (a as f64).tanh(), 2f64.powi(-10));
        // f64 results of the widened inputs are all correctly rounded.
        let (x, y, z) = (a as f64, b as f64, c as f64);
        let (min, max) = (
            ptx_min_max(a, b, true) as f64,
            ptx_min_max(a, b, false) as f64,
        );
        let expected64 = [
            x + y,
            x * y,
            x.mul_add(y, z),
            x / y,
            x.abs().sqrt(),
            1.0 / y,
            min,
            -x,
            x - y,
            max,
        ];
        for (op, e) in expected64.iter().enumerate() {
            assert_eq!(
                out64[10 * i + op],
                e.to_bits(),
                "f64 op {op} of ({x}, {y}, {z})"
            );
        }
    }
}

/// Rounds a value in f32's normal range to f32 toward zero ('z'), -inf ('m'), +inf ('p')
/// or to nearest ('n'), by truncating the f64 significand to f32's 24 bits.
fn to_f32(v: f64, mode: char) -> f32 {
    let rz = f64::from_bits(v.to_bits() & !((1u64 << 29) - 1)) as f32;
    let inexact = rz as f64 != v;
    let away = f32::from_bits(rz.to_bits() + 1);
    match mode {
        'n' => v as f32,
        'm' if inexact && v < 0.0 => away,
        'p' if inexact && v > 0.0 => away,
        _ => rz,
    }
}

#[test]
fn conversions_round_saturate_and_extend() {
    let mut rng = Rng::new(13);
    let mut x: Vec<f32> = vec![
        2.5,
        -2.5,
        0.5,
        1.5,
        -0.0,
        300.7,
        -129.3,
        1e10,
        -1e10,
        f32::NAN,
        0.999,
        65519.0,
        1.0 / 3.0,
    ];
    let mut k: Vec<i32> = vec![
        0,
        -1,
        127,
        128,
        -129,
        16_777_217,
        i32::MIN,
        i32::MAX,
        70000,
        -70000,
        3,
        5,
        -16_777_219,
    ];
    while x.len() < 120 {
        x.push(rng.f32_in(-1000.0, 1000.0));
        k.push(rng.next_u32() as i32);
    }
    let (out, out64) = run_elementwise(
        "conversions.ptx",
        "conversions",
        &[&x[..], &bits(&k)],
        22,
        6,
    );
    for i in 0..x.len() {
        let (x, k) = (x[i], k[i]);
        let y = x as f64 * (1.0 + 2f64.powi(-30));
        let f = |v: f32| v.to_bits();
        let expected: [u32; 22] = [
            x.round_ties_even() as i32 as u32,
            x.trunc() as i32 as u32,
            x.floor() as i32 as u32,
            x.ceil() as i32 as u32,
            x.trunc() as u32,
            f(to_f32(k as f64, 'n')),
            f(to_f32(k as f64, 'z')),
            f(to_f32(k as f64, 'm')),
            f(to_f32(k as f64, 'p')),
            f(k as u32 as f32),
            k as i8 as i32 as u32,
            k as u16 as u32,
            k.clamp(-128, 127) as u32,
            f(x.trunc()),
            f(x.round_ties_even()),
            f(sat(x)),
            f(to_f32(y, 'n')),
            f(to_f32(y, 'z')),
            f(to_f32(y, 'm')),
            f(to_f32(y, 'p')),
            f(f16::from_f32(x).to_f32()),
            f(bf16::from_f32(x).to_f32()),
        ];
        for (op, e) in expected.iter().enumerate() {
            let g = out[22 * i + op];
            let both_nan = f32::from_bits(g).is_nan() && f32::from_bits(*e).is_nan() && op >= 13;
            assert!(
                g == *e || both_nan,
                "cvt {op} of x={x} k={k}: got {g:#x}, expected {e:#x}"
            );
        }
        let expected64 = [
            (x as f64).to_bits(),
            k as i64 as u64,
            k as u32 as u64,
            x.round_ties_even() as i64 as u64,
            (k as f64).to_bits(),
            y.trunc() as i64 as u64,
        ];
        for (op, e) in expected64.iter().enumerate() {
            let g = out64[6 * i + op];
            let both_nan = op == 0 && f64::from_bits(g).is_nan() && f64::from_bits(*e).is_nan();
            assert!(
                g == *e || both_nan,
                "64-bit cvt {op} of x={x} k={k}: got {g:#x}, expected {e:#x}"
            );
        }
    }
}

fn bits(v: &[i32]) -> Vec<f32> {
    v.iter().map(|&k| f32::from_bits(k as u32)).collect()
}

#[test]
fn setp_comparisons_combinations_and_selp() {
    let mut rng = Rng::new(14);
    let mut fa = vec![1.0, f32::NAN, 2.0, -0.0, f32::INFINITY, f32::NAN, 3.0];
    let mut fb = vec![1.0, 1.0, f32::NAN, 0.0, f32::INFINITY, f32::NAN, -3.0];
    let mut ia: Vec<i32> = vec![5, -1, 0, i32::MIN, 7, 8, -8];
    let mut ib: Vec<i32> = vec![5, 1, 0, i32::MAX, -7, 9, -8];
    while fa.len() < 100 {
        fa.push(rng.f32_in(-2.0, 2.0).round());
        fb.push(rng.f32_in(-2.0, 2.0).round());
        ia.push((rng.next_u32() % 7) as i32 - 3);
        ib.push((rng.next_u32() % 7) as i32 - 3);
    }
    let m = module("compare.ptx");
    let n = fa.len();
    let mut mem = GlobalMemory::new();
    let mut args: Vec<KernelArg> = [&fa, &fb]
        .iter()
        .map(|v| ptr(mem.upload(v).unwrap()))
        .collect();
    args.extend([&ia, &ib].iter().map(|v| ptr(mem.upload(v).unwrap())));
    let out = mem.alloc(n * 12).unwrap();
    args.extend([ptr(out), KernelArg::U32(n as u32)]);
    Launch::new("compare", 2, 64, args).run(&m, &mut mem);
    let got: Vec<u32> = mem.read(out, 3 * n).unwrap();
    for i in 0..n {
        let (a, b, x, y) = (fa[i], fb[i], ia[i], ib[i]);
        let nan = a.is_nan() || b.is_nan();
        let float = [a == b, a != b && !nan, a < b, a <= b, a > b, a >= b];
        let mut word = 0u32;
        for (j, r) in float.iter().enumerate() {
            word |= (*r as u32) << j;
            word |= ((*r || nan) as u32) << (j + 6);
        }
        word |= ((!nan) as u32) << 12 | (nan as u32) << 13;
        let (ux, uy) = (x as u32, y as u32);
        let int = [
            x == y,
            x != y,
            x < y,
            x <= y,
            x > y,
            x >= y,
            ux < uy,
            ux <= uy,
            ux > uy,
            ux >= uy,
        ];
        for (j, r) in int.iter().enumerate() {
            word |= (*r as u32) << (16 + j);
        }
        assert_eq!(got[3 * i], word, "comparisons of ({a}, {b}) and ({x}, {y})");
        let q = x & 1 == 1;
        // setp's second destination is the negated comparison: true for NaN operands.
        let lt = a < b;
        let combos = (lt && q) as u32
            | ((!lt && q) as u32) << 1
            | ((x >= y || !q) as u32) << 2
            | (((x < y) ^ q) as u32) << 3;
        assert_eq!(
            got[3 * i + 1],
            combos,
            "combined predicates of ({a}, {b}), ({x}, {y})"
        );
        assert!(same_f32(
            f32::from_bits(got[3 * i + 2]),
            if q { a } else { b }
        ));
    }
}
