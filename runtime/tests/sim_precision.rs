//! The precision policy's conversions on the simulator against the reference
//! interpreter, bit for bit: `cast` to tf32 (`cvt.rna.tf32.f32`) and to bf16
//! (`cvt.rn.bf16x2.f32`), and a bf16 buffer's 16-bit store and widening load, exactly as
//! code generation emits them (`tests/ptx/precision.ptx`), over ties, NaN, infinities,
//! overflow, subnormals and random bit patterns.

mod common;
mod sim_support;

use calib_ir::{DType, Op};
use calib_runtime::sim::GlobalMemory;
use calib_runtime::Storage;
use common::{op, t};
use sim_support::{module, ptr, Launch, Rng};

/// Values at every edge of the two formats, then random bit patterns.
fn cases() -> Vec<f32> {
    let b = f32::from_bits;
    let mut x = vec![
        b(0x3f80_1000), // 1 + 2^-11: a TF32 tie, away from zero
        b(0xbf80_1000), // its negative
        b(0x3f80_0fff), // just below the tie
        b(0x3f80_3000), // an odd TF32 mantissa's tie: away, not to even
        b(0x3f80_8000), // 1 + 2^-8: a bf16 tie, to even (down)
        b(0x3f81_8000), // an odd bf16 mantissa's tie: to even (up)
        b(0x3f80_8001), // just above a bf16 tie
        f32::MAX,       // rounds up past the largest finite: infinity in both
        -f32::MAX,
        b(0x7f7f_efff), // the largest value TF32 keeps finite... below its tie
        b(0x7f7f_7fff), // ... and bf16's
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        b(0x7f80_0001), // a signalling NaN whose payload TF32 drops
        b(0xffc0_0001), // a negative quiet NaN
        f32::MIN_POSITIVE,
        b(0x0000_1000), // a subnormal TF32 tie
        b(0x0000_8000), // a subnormal bf16 tie
        b(0x007f_ffff), // the largest subnormal: rounds to the smallest normal
        b(0x0000_0001),
        0.0,
        -0.0,
        65504.0,
        1.0 / 3.0,
    ];
    let mut rng = Rng::new(11);
    while x.len() < 4096 {
        x.push(b(rng.next_u32()));
    }
    x
}

/// What the reference interpreter's `cast(x, to)` holds, as f32 bits.
fn reference_cast(x: &[f32], to: DType) -> Vec<u32> {
    let y = op(Op::Cast { to }, &[&t(&[x.len()], x)]);
    assert_eq!(y.dtype(), to);
    match y.storage() {
        Storage::F32(v) => v.iter().map(|v| v.to_bits()).collect(),
        other => panic!("a {to} tensor in {} storage", other.kind()),
    }
}

/// NaN is NaN whatever its payload (PTX leaves the payload of a converted NaN open;
/// the policy never stores one that matters); every other value is compared by bits.
fn same(a: u32, b: u32) -> bool {
    let nan = |x: u32| f32::from_bits(x).is_nan();
    a == b || nan(a) && nan(b)
}

#[test]
fn casts_and_bf16_buffers_on_the_simulator_equal_the_reference_bit_for_bit() {
    let x = cases();
    let n = x.len();
    let m = module("precision.ptx");
    let mut mem = GlobalMemory::new();
    let xp = mem.upload(&x).unwrap();
    let [tf, bf, half, wide] = [4, 4, 2, 4].map(|bytes| mem.alloc(n * bytes).unwrap());
    let args = vec![ptr(xp), ptr(tf), ptr(bf), ptr(half), ptr(wide)];
    Launch::new("precision", (n / 128) as u32, 128, args).run(&m, &mut mem);
    let read = |p| mem.read::<u32>(p, n).unwrap();
    let (tf, bf, wide) = (read(tf), read(bf), read(wide));
    let halves: Vec<u16> = mem.read(half, n).unwrap();
    let want_tf = reference_cast(&x, DType::TF32);
    let want_bf = reference_cast(&x, DType::BF16);
    for i in 0..n {
        let bits = x[i].to_bits();
        assert!(
            same(tf[i], want_tf[i]),
            "tf32 of {bits:#010x}: {:#010x} vs {:#010x}",
            tf[i],
            want_tf[i]
        );
        assert!(
            same(bf[i], want_bf[i]),
            "bf16 of {bits:#010x}: {:#010x} vs {:#010x}",
            bf[i],
            want_bf[i]
        );
        assert!(
            same(u32::from(halves[i]) << 16, want_bf[i]),
            "stored bf16 of {bits:#010x}"
        );
        assert!(
            same(wide[i], want_bf[i]),
            "bf16 of {bits:#010x} loaded back"
        );
    }
    // The edges by name, so that a wrong rounding rule cannot hide behind a matching
    // wrong reference.
    assert_eq!(tf[0], 0x3f80_2000, "a TF32 tie goes away from zero");
    assert_eq!(tf[1], 0xbf80_2000, "... for negative values too");
    assert_eq!(tf[2], 0x3f80_0000);
    assert_eq!(tf[3], 0x3f80_4000, "ties away, not to even");
    assert_eq!(bf[4], 0x3f80_0000, "a bf16 tie goes to even");
    assert_eq!(bf[5], 0x3f82_0000, "a bf16 tie goes to even");
    assert_eq!(bf[6], 0x3f81_0000);
    for i in [7, 8] {
        assert!(f32::from_bits(tf[i]).is_infinite() && f32::from_bits(bf[i]).is_infinite());
    }
    assert_eq!(tf[9], 0x7f7f_e000, "below the tie stays finite");
    assert_eq!(bf[10], 0x7f7f_0000, "below the tie stays finite");
    for i in [11, 12] {
        assert_eq!(
            (tf[i], bf[i]),
            (x[i].to_bits(), x[i].to_bits()),
            "infinity stays"
        );
    }
    for i in [13, 14, 15] {
        assert!(f32::from_bits(tf[i]).is_nan() && f32::from_bits(bf[i]).is_nan());
    }
    assert_eq!(
        tf[17], 0x0000_2000,
        "a subnormal TF32 tie goes away from zero"
    );
    assert_eq!(bf[18], 0x0000_0000, "a subnormal bf16 tie goes to even");
    assert_eq!(
        tf[19],
        f32::MIN_POSITIVE.to_bits(),
        "a carry makes the smallest normal"
    );
    assert_eq!(bf[19], f32::MIN_POSITIVE.to_bits());
    assert_eq!(
        (tf[22], bf[22]),
        (0x8000_0000, 0x8000_0000),
        "-0 keeps its sign"
    );
}
