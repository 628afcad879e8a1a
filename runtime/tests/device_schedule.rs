//! How a device program orders launches and all-reduces, and what it refuses: a plan
//! with one gradient all-reduce between an independent kernel and the kernel that reads
//! its result, written out by hand.

use calib_ir::{
    Anchor, Buffer, BufferId, DType, Graph, GraphBuilder, Kernel, KernelOutput, Mode, Program,
    ProgramOutput, ReduceOp, Role, TensorType, Value,
};
use calib_runtime::{Action, DeviceKernel, DeviceProgram, RuntimeError};

const N: usize = 64;

fn ty() -> TensorType {
    TensorType::new(DType::F32, vec![N])
}

/// A kernel body of `inputs` inputs computed by `f`.
fn body(inputs: usize, f: impl Fn(&mut GraphBuilder, &[Value]) -> Value) -> Graph {
    let mut g = GraphBuilder::new(Mode::Eval, DType::F32);
    let xs: Vec<Value> = (0..inputs)
        .map(|i| {
            g.input(&Kernel::input_name(i), DType::F32, vec![N])
                .unwrap()
        })
        .collect();
    let y = f(&mut g, &xs);
    g.output("out0", y).unwrap();
    g.finish()
}

fn kernel(name: &str, anchor: Anchor, inputs: &[usize], output: usize, body: Graph) -> Kernel {
    Kernel {
        name: name.into(),
        label: String::new(),
        anchor,
        inputs: inputs.iter().map(|&b| BufferId(b)).collect(),
        outputs: vec![KernelOutput {
            buffer: BufferId(output),
            slice: None,
        }],
        body,
        covers: vec![],
        schedule: None,
        workspace: None,
        semaphore: None,
    }
}

/// `g = -x; r = all_reduce(g); o = relu(x); y = r + o`, with the all-reduce's body given.
fn program(all_reduce_body: Graph) -> Program {
    let buffer = |name: &str, role| Buffer::new(name, ty(), role);
    Program {
        buffers: vec![
            buffer("x", Role::Input),
            buffer("g", Role::Temp),
            buffer("r", Role::Temp),
            buffer("o", Role::Temp),
            buffer("y", Role::Output),
        ],
        kernels: vec![
            kernel(
                "k0",
                Anchor::Pointwise,
                &[0],
                1,
                body(1, |g, x| g.neg(x[0]).unwrap()),
            ),
            kernel("k1", Anchor::Collective, &[1], 2, all_reduce_body),
            kernel(
                "k2",
                Anchor::Pointwise,
                &[0],
                3,
                body(1, |g, x| g.relu(x[0]).unwrap()),
            ),
            kernel(
                "k3",
                Anchor::Pointwise,
                &[2, 3],
                4,
                body(2, |g, x| g.add(x[0], x[1]).unwrap()),
            ),
        ],
        outputs: vec![ProgramOutput {
            name: "y".into(),
            buffer: BufferId(4),
        }],
    }
}

fn mean_all_reduce() -> Graph {
    body(1, |g, x| g.all_reduce(x[0], ReduceOp::Mean, 2).unwrap())
}

fn launch(kernel: &str, params: &[usize]) -> DeviceKernel {
    DeviceKernel {
        name: kernel.into(),
        kernel: kernel.into(),
        ptx: String::new(),
        grid: [1, 1, 1],
        block: [N as u32, 1, 1],
        shared_bytes: 0,
        params: params.iter().map(|&b| BufferId(b)).collect(),
        info: Default::default(),
    }
}

fn device_program(
    all_reduce_body: Graph,
    offsets: Vec<usize>,
) -> Result<DeviceProgram, RuntimeError> {
    let launches = vec![
        launch("k0", &[0, 1]),
        launch("k2", &[0, 3]),
        launch("k3", &[2, 3, 4]),
    ];
    DeviceProgram::new(program(all_reduce_body), launches, offsets, 5 * N * 4)
}

/// Every buffer in its own bytes.
fn apart() -> Vec<usize> {
    (0..5).map(|b| b * N * 4).collect()
}

#[test]
fn an_all_reduce_starts_after_its_input_and_joins_before_its_reader() {
    let p = device_program(mean_all_reduce(), apart()).unwrap();
    assert_eq!(p.all_reduces.len(), 1);
    let c = &p.all_reduces[0];
    assert_eq!(
        (c.input, c.output, c.replicas, c.after_launches),
        (BufferId(1), BufferId(2), 2, 1)
    );
    assert_eq!(
        p.schedule(),
        [
            Action::Launch(0),
            Action::StartAllReduce(0),
            Action::Launch(1),
            Action::JoinAllReduce(0),
            Action::Launch(2),
        ]
    );
    p.check_overlap().unwrap();
}

#[test]
fn a_kernel_on_the_bytes_of_an_all_reduce_in_flight_is_caught() {
    // `o`, written while the all-reduce runs, placed on the all-reduce's input.
    let mut offsets = apart();
    offsets[3] = offsets[1];
    let p = device_program(mean_all_reduce(), offsets).unwrap();
    let err = p.check_overlap().unwrap_err();
    assert!(
        err.contains("launch k2") && err.contains("all-reduce k1"),
        "{err}"
    );
}

#[test]
fn a_collective_kernel_with_arithmetic_in_it_is_refused() {
    let fused = body(1, |g, x| {
        let r = g.all_reduce(x[0], ReduceOp::Sum, 2).unwrap();
        g.neg(r).unwrap()
    });
    let err = device_program(fused, apart()).unwrap_err().to_string();
    assert!(
        err.contains("kernel k1") && err.contains("nothing else"),
        "{err}"
    );
}

#[test]
fn launches_out_of_plan_order_are_refused() {
    let launches = vec![
        launch("k2", &[0, 3]),
        launch("k0", &[0, 1]),
        launch("k3", &[2, 3, 4]),
    ];
    let err = DeviceProgram::new(program(mean_all_reduce()), launches, apart(), 5 * N * 4)
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of the plan's kernel order"), "{err}");
}
