//! Simulator throughput in thread-instructions per second (criterion's "elements"), on
//! the tiled matmul and the block reduction of the PTX test suite, with and without
//! shared-memory race checking.
//!
//! `cargo bench -p calib-runtime --bench sim_throughput`

use calib_runtime::sim::{self, GlobalMemory, KernelArg, Module, SimOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

/// A prepared launch: the module, its geometry and arguments, and its device memory.
struct Workload {
    module: Module,
    kernel: &'static str,
    grid: [u32; 3],
    block: [u32; 3],
    args: Vec<KernelArg>,
    memory: GlobalMemory,
}

impl Workload {
    fn run(&mut self, options: &SimOptions) -> u64 {
        let stats = sim::simulate_with(
            options,
            &self.module,
            self.kernel,
            self.grid,
            self.block,
            0,
            &self.args,
            &mut self.memory,
        )
        .expect("benchmark kernels run clean");
        stats.thread_instructions
    }
}

fn matmul(n: usize) -> Workload {
    let module = sim::parse(include_str!("../tests/ptx/matmul.ptx")).unwrap();
    let mut memory = GlobalMemory::new();
    let values: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 - 3.0).collect();
    let a = memory.upload(&values).unwrap();
    let b = memory.upload(&values).unwrap();
    let c = memory.alloc(n * n * 4).unwrap();
    let tiles = (n / 16) as u32;
    Workload {
        module,
        kernel: "matmul_tiled",
        grid: [tiles, tiles, 1],
        block: [16, 16, 1],
        args: vec![
            a.into(),
            b.into(),
            c.into(),
            KernelArg::U32(n as u32),
            KernelArg::U32(n as u32),
        ],
        memory,
    }
}

fn block_sum(n: usize) -> Workload {
    let module = sim::parse(include_str!("../tests/ptx/block_sum.ptx")).unwrap();
    let mut memory = GlobalMemory::new();
    let x = memory.upload(&vec![1.0f32; n]).unwrap();
    let partial = memory.alloc(16 * 4).unwrap();
    let total = memory.alloc(4).unwrap();
    Workload {
        module,
        kernel: "block_sum",
        grid: [16, 1, 1],
        block: [256, 1, 1],
        args: vec![
            x.into(),
            partial.into(),
            total.into(),
            KernelArg::U32(n as u32),
        ],
        memory,
    }
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("sim");
    group.sample_size(10);
    let cases = [
        ("matmul_128", matmul(128)),
        ("block_sum_1M", block_sum(1 << 20)),
    ];
    for (name, mut work) in cases {
        for (suffix, race_check) in [("", true), ("_norace", false)] {
            let options = SimOptions {
                race_check,
                ..SimOptions::default()
            };
            group.throughput(Throughput::Elements(work.run(&options)));
            group.bench_function(format!("{name}{suffix}"), |b| {
                b.iter(|| black_box(work.run(&options)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
