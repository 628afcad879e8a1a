//! Helpers shared by the code generation tests: plans made from graphs, deterministic
//! inputs, and a check of simulated PTX against the reference interpreter.
#![allow(dead_code)]

use calib_codegen::{compile, CompiledProgram};
use calib_ir::{
    text, Anchor, Buffer, BufferId, DType, Graph, Kernel, KernelOutput, Op, Program, ProgramOutput,
    Role,
};
use calib_runtime::sim::ptxas::{self, KernelResources};
use calib_runtime::{
    Backend, Bindings, DeviceKernel, DeviceProgram, HostTensor, Outputs, Reference, SimProgram,
};
use std::collections::BTreeMap;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

pub mod schedules;

/// `graph` as a plan of one kernel with the given anchor: every input and parameter is
/// a kernel input, every output a kernel output.
pub fn single_kernel(graph: &Graph, anchor: Anchor) -> Program {
    let mut buffers = vec![];
    let mut body = graph.clone();
    let mut inputs = vec![];
    for node in body.nodes.iter_mut() {
        let (name, role) = match &node.op {
            Op::Input { name } => (name.clone(), Role::Input),
            Op::Param { name } => (name.clone(), Role::Param),
            _ => continue,
        };
        buffers.push(Buffer::new(name, node.ty.clone(), role));
        inputs.push(BufferId(buffers.len() - 1));
        node.op = Op::Input {
            name: Kernel::input_name(inputs.len() - 1),
        };
    }
    let mut outputs = vec![];
    let mut program_outputs = vec![];
    for (i, o) in body.outputs.iter_mut().enumerate() {
        buffers.push(Buffer::new(
            o.name.clone(),
            graph.ty(o.value).clone(),
            Role::Output,
        ));
        let buffer = BufferId(buffers.len() - 1);
        outputs.push(KernelOutput {
            buffer,
            slice: None,
        });
        program_outputs.push(ProgramOutput {
            name: o.name.clone(),
            buffer,
        });
        o.name = Kernel::output_name(i);
    }
    let kernel = Kernel {
        name: "k0".into(),
        label: "test".into(),
        anchor,
        inputs,
        outputs,
        body,
        covers: vec![],
        schedule: None,
        workspace: None,
        semaphore: None,
    };
    let program = Program {
        buffers,
        kernels: vec![kernel],
        outputs: program_outputs,
    };
    program.validate().expect("a single-kernel plan is valid");
    program
}

/// Parses the text form of a graph.
pub fn graph(src: &str) -> Graph {
    text::parse(src).unwrap_or_else(|e| panic!("{e}\n{src}"))
}

/// A compiled plan as a device program for the simulator (which gives every buffer its
/// own allocation, so no arena is planned).
pub fn device_program(program: &Program, compiled: &CompiledProgram) -> DeviceProgram {
    let kernels = compiled
        .kernels
        .iter()
        .map(|k| DeviceKernel {
            name: k.name.clone(),
            kernel: k.kernel.clone(),
            ptx: k.ptx.clone(),
            grid: k.grid,
            block: k.block,
            shared_bytes: k.shared_bytes as u32,
            params: k.params.iter().map(|p| p.buffer).collect(),
            info: Default::default(),
        })
        .collect();
    DeviceProgram::new(program.clone(), kernels, vec![0; program.buffers.len()], 0)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Compiles `program`, assembles it with ptxas, and runs it on the simulator.
pub fn simulate(program: &Program, bindings: &Bindings) -> Outputs {
    let compiled = compile(program).unwrap_or_else(|e| panic!("codegen: {e}"));
    assemble("test plan", &compiled);
    let sim = SimProgram::new(device_program(program, &compiled)).unwrap_or_else(|e| panic!("{e}"));
    sim.run(bindings).unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            compiled
                .kernels
                .iter()
                .map(|k| k.ptx.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// Runs `ptx` (kernel `kernel`'s, or a changed copy) on the simulator, sanitizer on,
/// with `program`'s buffers zeroed but for `inputs`.
pub fn run_kernel(
    program: &Program,
    kernel: &calib_codegen::CompiledKernel,
    ptx: &str,
    inputs: &BTreeMap<String, HostTensor>,
) -> Result<calib_runtime::sim::Stats, calib_runtime::sim::SimError> {
    use calib_runtime::sim::{self, GlobalMemory, KernelArg, SimOptions};
    let mut memory = GlobalMemory::new();
    let args: Vec<KernelArg> = allocate_params(program, kernel, inputs, &mut memory)
        .into_iter()
        .map(KernelArg::U64)
        .collect();
    let module = sim::parse(ptx).unwrap();
    let (grid, block, shared) = (kernel.grid, kernel.block, kernel.shared_bytes);
    let options = SimOptions::default();
    sim::simulate_with(
        &options,
        &module,
        &kernel.name,
        grid,
        block,
        shared,
        &args,
        &mut memory,
    )
}

/// An allocation in `memory` for each of `kernel`'s parameters, zeroed but for the
/// buffers `inputs` name; their addresses, in parameter order.
pub fn allocate_params(
    program: &Program,
    kernel: &calib_codegen::CompiledKernel,
    inputs: &BTreeMap<String, HostTensor>,
    memory: &mut calib_runtime::sim::GlobalMemory,
) -> Vec<u64> {
    (kernel.params.iter())
        .map(|p| {
            let buffer = program.buffer(p.buffer);
            let at = memory.alloc(buffer.ty.size_bytes()).unwrap();
            if let Some(t) = inputs.get(&buffer.name) {
                memory.write_bytes(at, &t.to_le_bytes()).unwrap();
            }
            at
        })
        .collect()
}

/// What the simulator executed for kernel `k` of `program` (its buffers zeroed but for
/// `inputs`, its launches' instruction counts being what matters).
pub fn launch_stats(
    program: &Program,
    k: usize,
    inputs: &BTreeMap<String, HostTensor>,
) -> calib_runtime::sim::Stats {
    let kernel = compile(program).unwrap().kernels.remove(k);
    run_kernel(program, &kernel, &kernel.ptx, inputs).unwrap_or_else(|e| panic!("{e}"))
}

/// The census of compiled `kernel`'s whole launch per element of an output of `numel`
/// elements: `(global loads, special-function operations)`.
pub fn per_element(kernel: &calib_codegen::CompiledKernel, numel: usize) -> (f64, f64) {
    let launch = kernel.launch(kernel.estimated_registers());
    let threads = launch.blocks as f64 * launch.threads as f64;
    let per = |count: f64| count * threads / numel as f64;
    (per(launch.census.global_loads), per(launch.census.sfu))
}

/// A pooled image of `shape` for the max-pooling adjoint's rules: tied integers in
/// -2..=2 with NaN and -inf strewn among them (about 4% each), the values its ordinary
/// comparisons leave to the exact ones.
pub fn tied_with_nan_and_infinity(shape: Vec<usize>) -> HostTensor {
    let mut state = 0x9E37_79B9_u32;
    let values = (0..shape.iter().product::<usize>())
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            match state >> 24 {
                0..=9 => f32::NAN,
                10..=19 => f32::NEG_INFINITY,
                r => (r % 5) as f32 - 2.0,
            }
        })
        .collect();
    HostTensor::from_f32(shape, values).expect("values for the shape")
}

/// Deterministic tensors for every input and parameter of `graph`: floats in [-1, 1)
/// (running variances in [0.5, 1.5)),
/// integers in `0..int_range`.
pub fn tensors(graph: &Graph, seed: u64, int_range: i64) -> BTreeMap<String, HostTensor> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 32) as u32
    };
    let mut out = BTreeMap::new();
    for node in &graph.nodes {
        let name = match &node.op {
            Op::Input { name } | Op::Param { name } => name.clone(),
            _ => continue,
        };
        let n = node.ty.numel();
        let t = match node.ty.dtype {
            DType::I64 => HostTensor::from_i64(
                node.ty.shape.clone(),
                (0..n).map(|_| (next() as i64) % int_range).collect(),
            ),
            // Variances must be positive for BatchNorm in eval mode.
            _ if name.ends_with("running_var") => HostTensor::from_f32(
                node.ty.shape.clone(),
                (0..n)
                    .map(|_| next() as f32 / 4_294_967_296.0 + 0.5)
                    .collect(),
            ),
            _ => HostTensor::from_f32(
                node.ty.shape.clone(),
                (0..n)
                    .map(|_| next() as f32 / 2_147_483_648.0 - 1.0)
                    .collect(),
            ),
        };
        out.insert(name, t.unwrap());
    }
    out
}

/// Binds `tensors` to `graph`'s inputs and params by name.
pub fn bind<'a>(graph: &Graph, tensors: &'a BTreeMap<String, HostTensor>) -> Bindings<'a> {
    let mut b = Bindings::new();
    for node in &graph.nodes {
        match &node.op {
            Op::Input { name } => b = b.input(name.clone(), &tensors[name]),
            Op::Param { name } => b = b.param(name.clone(), &tensors[name]),
            _ => {}
        }
    }
    b
}

/// Runs `program` (a plan of `graph`) on the simulator and the graph on the reference
/// interpreter, and checks every output: `max |sim - ref| <= tol * max(1, max |ref|)`.
/// Returns the largest scaled error.
pub fn check(graph: &Graph, program: &Program, seed: u64, tol: f64) -> f64 {
    check_tensors(graph, program, &tensors(graph, seed, 3), tol)
}

/// [`check`] on given input and parameter tensors.
pub fn check_tensors(
    graph: &Graph,
    program: &Program,
    tensors: &BTreeMap<String, HostTensor>,
    tol: f64,
) -> f64 {
    let b = bind(graph, tensors);
    let want = Reference::new().run(graph, &b).expect("reference run");
    let got = simulate(program, &b);
    let mut worst = 0f64;
    for (name, w) in &want {
        let g = &got[name];
        assert_eq!(g.ty(), w.ty(), "output {name}");
        let err = g.max_abs_diff(w).unwrap() / w.max_abs().max(1.0);
        assert!(
            err <= tol,
            "output {name}: scaled error {err:e} > {tol:e}\nsim {g:?}\nref {w:?}"
        );
        worst = worst.max(err);
    }
    worst
}

/// Runs `program` on the simulator and `graph` on the reference with `tensors`, and
/// asserts that every output element is NaN on both sides or equal on both.
pub fn check_exact_with_nans(
    graph: &Graph,
    program: &Program,
    tensors: &BTreeMap<String, HostTensor>,
) {
    let b = bind(graph, tensors);
    let want = Reference::new().run(graph, &b).expect("reference run");
    let got = simulate(program, &b);
    for (name, w) in &want {
        let (g, w) = (got[name].to_f64_vec(), w.to_f64_vec());
        let nans = w.iter().filter(|v| v.is_nan()).count();
        for (i, (g, w)) in g.iter().zip(&w).enumerate() {
            let same = (g.is_nan() && w.is_nan()) || g == w;
            assert!(
                same,
                "output {name}[{i}]: sim {g}, reference {w} ({nans} NaN expected)"
            );
        }
    }
}

/// The family code generation picks for each kernel of `program`.
pub fn families(program: &Program) -> Vec<calib_codegen::Family> {
    compile(program)
        .unwrap()
        .kernels
        .iter()
        .map(|k| k.family)
        .collect()
}

/// The ptxas to use, or `None` when `CALIB_SKIP_PTXAS=1` says to skip assembling.
/// Without ptxas otherwise, the test fails saying how to install it.
pub fn ptxas_binary() -> Option<PathBuf> {
    if std::env::var("CALIB_SKIP_PTXAS").is_ok_and(|v| v == "1") {
        return None;
    }
    match ptxas::find_ptxas() {
        Ok(p) => Some(p),
        Err(e) => panic!("{e}\n(set CALIB_SKIP_PTXAS=1 to skip assembling with ptxas)"),
    }
}

/// Assembles every distinct kernel of `compiled` for sm_80 and sm_90 (concurrently),
/// panicking on any ptxas error; returns the sm_80 resources of every kernel by name.
pub fn assemble(
    label: &str,
    compiled: &CompiledProgram,
) -> Option<HashMap<String, KernelResources>> {
    let binary = ptxas_binary()?;
    let (module, representative) = compiled.distinct_module();
    let distinct: HashSet<&String> = representative.iter().collect();
    let reports = std::thread::scope(|s| {
        let jobs: Vec<_> = ["sm_80", "sm_90"]
            .map(|arch| s.spawn(|| ptxas::assemble_with(&binary, &module, arch)))
            .into_iter()
            .collect();
        jobs.into_iter()
            .map(|j| j.join().expect("ptxas thread"))
            .collect::<Vec<_>>()
    });
    let mut sm80 = HashMap::new();
    for report in reports {
        let report = report.unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(
            report.kernels.len(),
            distinct.len(),
            "{label}: ptxas reports every kernel for {}",
            report.arch
        );
        if report.arch == "sm_80" {
            sm80 = report
                .kernels
                .into_iter()
                .map(|k| (k.name.clone(), k))
                .collect();
        }
    }
    Some(
        compiled
            .kernels
            .iter()
            .zip(&representative)
            .map(|(k, r)| (k.name.clone(), sm80[r].clone()))
            .collect(),
    )
}
