//! Kernel plans: what `Program::validate` accepts and refuses, and the JSON and text
//! forms.

use calib_ir::kernel::Slice;
use calib_ir::{
    Anchor, Buffer, BufferId, DType, Graph, Kernel, KernelOutput, Layout, Op, Program,
    ProgramOutput, Role, TensorType,
};

fn ty(shape: &[usize]) -> TensorType {
    TensorType::new(DType::F32, shape.to_vec())
}

/// A body `out0 = relu(in0)` over `shape`.
fn relu_body(shape: &[usize]) -> Graph {
    let mut g = Graph::new();
    let x = g
        .push_source(
            Op::Input {
                name: Kernel::input_name(0),
            },
            ty(shape),
            "",
        )
        .unwrap();
    let y = g.push(Op::Relu, vec![x], "").unwrap();
    g.add_output(Kernel::output_name(0), y).unwrap();
    g
}

fn kernel(name: &str, input: usize, output: KernelOutput, shape: &[usize]) -> Kernel {
    Kernel {
        name: name.into(),
        label: String::new(),
        anchor: Anchor::Pointwise,
        inputs: vec![BufferId(input)],
        outputs: vec![output],
        body: relu_body(shape),
        covers: vec![1],
        schedule: None,
        workspace: None,
        semaphore: None,
    }
}

fn whole(b: usize) -> KernelOutput {
    KernelOutput {
        buffer: BufferId(b),
        slice: None,
    }
}

/// x -> relu into both channel halves of y (concat as a view).
fn sliced() -> Program {
    let half = [1, 2, 3];
    let slice = |start| KernelOutput {
        buffer: BufferId(1),
        slice: Some(Slice {
            axis: 1,
            start,
            end: start + 2,
        }),
    };
    let buffers = vec![
        Buffer::new("x", ty(&half), Role::Input),
        Buffer::new("y", ty(&[1, 4, 3]), Role::Output),
    ];
    let kernels = vec![
        kernel("k0", 0, slice(0), &half),
        kernel("k1", 0, slice(2), &half),
    ];
    program(buffers, kernels)
}

/// A plan whose last buffer is its output `y`.
fn program(buffers: Vec<Buffer>, kernels: Vec<Kernel>) -> Program {
    let output = ProgramOutput {
        name: "y".into(),
        buffer: BufferId(buffers.len() - 1),
    };
    Program {
        buffers,
        kernels,
        outputs: vec![output],
    }
}

#[test]
fn a_buffer_filled_slice_by_slice_is_valid_and_round_trips() {
    let p = sliced();
    p.validate().unwrap();
    assert_eq!(Program::from_json(&p.to_json()).unwrap(), p);
    let text = p.to_text();
    assert!(
        text.contains("kernel k1 pointwise \"\" ($0) -> ($1[axis 1: 2..4])"),
        "{text}"
    );
    assert!(p.to_dot().starts_with("digraph program {"));
    assert_eq!(p.kernel("k1").unwrap().index_maps().count(), 0);
}

#[test]
fn malformed_plans_are_refused_with_the_reason() {
    let err = |p: &Program| p.validate().unwrap_err().to_string();
    let mut p = sliced();
    p.kernels.pop();
    assert!(err(&p).contains("never fully written"), "{}", err(&p));
    let mut p = sliced();
    p.kernels[1].outputs[0].slice = Some(Slice {
        axis: 1,
        start: 1,
        end: 3,
    });
    assert!(err(&p).contains("twice"), "{}", err(&p));
    let mut p = sliced();
    p.kernels[0].outputs[0] = whole(0);
    assert!(err(&p).contains("bound buffer"), "{}", err(&p));
    let mut p = sliced();
    p.kernels[0].inputs[0] = BufferId(1);
    assert!(
        err(&p).contains("does not match") || err(&p).contains("before"),
        "{}",
        err(&p)
    );
    let mut p = sliced();
    p.kernels[0].inputs[0] = BufferId(7);
    assert!(err(&p).contains("does not exist"), "{}", err(&p));
    assert!(Program::from_json("{\"buffers\": 3}").is_err());
}

/// x -> relu into a temporary t -> relu into y, all `[1, 2, 2, 2]`.
fn through_temp() -> Program {
    let shape = [1, 2, 2, 2];
    let buffers = vec![
        Buffer::new("x", ty(&shape), Role::Input),
        Buffer::new("t", ty(&shape), Role::Temp),
        Buffer::new("y", ty(&shape), Role::Output),
    ];
    let kernels = vec![
        kernel("k0", 0, whole(1), &shape),
        kernel("k1", 1, whole(2), &shape),
    ];
    program(buffers, kernels)
}

#[test]
fn a_channels_last_temporary_is_valid_and_round_trips() {
    let mut p = through_temp();
    assert!(!p.to_json().contains("layout"), "row-major is the default");
    p.buffers[1].layout = Layout::ChannelsLast;
    p.validate().unwrap();
    assert_eq!(Program::from_json(&p.to_json()).unwrap(), p);
    assert!(p
        .to_text()
        .contains("$1 temp t : f32[1,2,2,2] channels_last"));
}

#[test]
fn boundary_buffers_may_be_stored_channels_last() {
    // The runtime permutes them as it uploads and downloads.
    let mut p = through_temp();
    p.buffers[0].layout = Layout::ChannelsLast;
    p.buffers[2].layout = Layout::ChannelsLast;
    p.validate().unwrap();
}

#[test]
fn layouts_that_cannot_hold_are_refused() {
    let err = |p: &Program| p.validate().unwrap_err().to_string();
    let mut p = sliced();
    p.buffers.push(Buffer::new("flat", ty(&[4]), Role::Temp));
    p.buffers[2].layout = Layout::ChannelsLast;
    assert!(
        err(&p).contains("cannot be stored channels_last"),
        "{}",
        err(&p)
    );
}
