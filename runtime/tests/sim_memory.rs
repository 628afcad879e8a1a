//! Memory instructions on the simulator: every load/store width with zero and sign
//! extension, vector forms, parameters of every type, generic addressing of shared and
//! global memory, dynamic shared memory, and the special registers.

mod sim_support;

use calib_runtime::sim::{GlobalMemory, KernelArg};
use sim_support::{module, ptr, Launch};

#[test]
fn sub_word_loads_extend_and_stores_truncate() {
    let m = module("memory.ptx");
    let src: Vec<u8> = (0..64u32).map(|j| (j * 37 + 200) as u8).collect();
    let mut mem = GlobalMemory::new();
    let dsrc = mem.upload(&src).unwrap();
    let (out32, out64, bytes) = (
        mem.alloc(16 * 16).unwrap(),
        mem.alloc(16 * 16).unwrap(),
        mem.alloc(64).unwrap(),
    );
    Launch::new(
        "widths",
        1,
        16,
        vec![ptr(dsrc), ptr(out32), ptr(out64), ptr(bytes)],
    )
    .run(&m, &mut mem);
    let w32: Vec<u32> = mem.read(out32, 64).unwrap();
    let w64: Vec<u64> = mem.read(out64, 32).unwrap();
    let b: Vec<u8> = mem.read(bytes, 64).unwrap();
    for i in 0..16 {
        let half = u16::from_le_bytes([src[2 * i], src[2 * i + 1]]);
        let word = u32::from_le_bytes(src[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!(
            w32[4 * i..4 * i + 4],
            [
                src[i] as u32,
                src[i] as i8 as u32,
                half as u32,
                half as i16 as u32
            ],
            "thread {i}"
        );
        assert_eq!(
            w64[2 * i..2 * i + 2],
            [word as i32 as u64, word as u64],
            "thread {i}"
        );
        assert_eq!(b[i], src[i].wrapping_add(1), "st.u8 of thread {i}");
        assert_eq!(
            u16::from_le_bytes([b[32 + 2 * i], b[33 + 2 * i]]),
            half,
            "st.b16 of thread {i}"
        );
    }
}

#[test]
fn vector_loads_and_stores() {
    let m = module("memory.ptx");
    let src: Vec<f32> = (0..32).map(|j| j as f32 * 0.25 - 3.0).collect();
    let mut mem = GlobalMemory::new();
    let dsrc = mem.upload(&src).unwrap();
    let (dst, dst2) = (mem.alloc(128).unwrap(), mem.alloc(128).unwrap());
    Launch::new("vectors", 1, 8, vec![ptr(dsrc), ptr(dst), ptr(dst2)]).run(&m, &mut mem);
    let reversed: Vec<f32> = mem.read(dst, 32).unwrap();
    let swapped: Vec<f32> = mem.read(dst2, 32).unwrap();
    for i in 0..8 {
        let s = &src[4 * i..4 * i + 4];
        assert_eq!(reversed[4 * i..4 * i + 4], [s[3], s[2], s[1], s[0]]);
        assert_eq!(swapped[4 * i..4 * i + 4], [s[2], s[3], s[0], s[1]]);
    }
}

#[test]
fn parameters_of_every_type_reach_the_kernel() {
    let m = module("memory.ptx");
    let mut mem = GlobalMemory::new();
    let out = mem.alloc(52).unwrap();
    let blob: Vec<u8> = [7u32, 0xdead_beef, 42]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    let args = vec![
        KernelArg::U32(0xfeed_f00d),
        KernelArg::S32(-5),
        KernelArg::U64(0x1234_5678_9abc_def0),
        KernelArg::S64(-1 << 40),
        KernelArg::F32(2.5),
        KernelArg::F64(-0.125),
        KernelArg::Bytes(blob),
        ptr(out),
    ];
    Launch::new("params", 1, 1, args).run(&m, &mut mem);
    assert_eq!(
        mem.read::<u32>(out, 2).unwrap(),
        vec![0xfeed_f00d, -5i32 as u32]
    );
    assert_eq!(
        mem.read::<u64>(out + 8, 1).unwrap(),
        vec![0x1234_5678_9abc_def0]
    );
    assert_eq!(mem.read::<i64>(out + 16, 1).unwrap(), vec![-1 << 40]);
    assert_eq!(mem.read::<f32>(out + 24, 1).unwrap(), vec![2.5]);
    assert_eq!(mem.read::<f64>(out + 32, 1).unwrap(), vec![-0.125]);
    assert_eq!(
        mem.read::<u32>(out + 40, 3).unwrap(),
        vec![7, 0xdead_beef, 42]
    );
}

#[test]
fn generic_addresses_reach_shared_and_global_memory() {
    let m = module("memory.ptx");
    let mut mem = GlobalMemory::new();
    let out = mem.alloc(2 * 128 * 4).unwrap();
    Launch::new("generic", 1, 128, vec![ptr(out)]).run(&m, &mut mem);
    let got: Vec<f32> = mem.read(out, 256).unwrap();
    for t in 0..128 {
        let expected = 1.5 * (127 - t) as f32;
        assert_eq!((got[t], got[128 + t]), (expected, expected), "thread {t}");
    }
}

#[test]
fn dynamic_shared_memory_follows_the_static_variables() {
    let m = module("memory.ptx");
    let mut mem = GlobalMemory::new();
    let out = mem.alloc(97 * 4).unwrap();
    let mut launch = Launch::new("dynamic", 1, 96, vec![ptr(out)]);
    launch.shared = 96 * 4;
    launch.run(&m, &mut mem);
    let got: Vec<u32> = mem.read(out, 97).unwrap();
    assert!((0..96).all(|t| got[t] == 95 - t as u32), "{got:?}");
    assert_eq!(
        got[96], 16,
        "dyn[] starts after the 12-byte static array, 16-aligned"
    );
}

#[test]
fn special_registers_in_a_three_dimensional_launch() {
    let m = module("memory.ptx");
    let (grid, block) = ([2u32, 3, 2], [4u32, 3, 5]);
    let (blocks, threads) = (12usize, 60usize);
    let mut mem = GlobalMemory::new();
    let out = mem.alloc(blocks * threads * 56).unwrap();
    let launch = Launch {
        kernel: "specials",
        grid,
        block,
        shared: 0,
        args: vec![ptr(out)],
    };
    let stats = launch.run(&m, &mut mem);
    assert_eq!(stats.blocks, 12);
    let got: Vec<u32> = mem.read(out, blocks * threads * 14).unwrap();
    let mut g = 0;
    for (bz, by, bx) in
        (0..2).flat_map(|z| (0..3).flat_map(move |y| (0..2).map(move |x| (z, y, x))))
    {
        for (tz, ty, tx) in
            (0..5).flat_map(|z| (0..3).flat_map(move |y| (0..4).map(move |x| (z, y, x))))
        {
            let t = (tz * 3 + ty) * 4 + tx;
            let expected = [tx, ty, tz, 4, 3, 5, bx, by, bz, 2, 3, 2, t % 32, t / 32];
            assert_eq!(
                got[14 * g..14 * g + 14],
                expected,
                "thread ({tx},{ty},{tz}) of block ({bx},{by},{bz})"
            );
            g += 1;
        }
    }
}
