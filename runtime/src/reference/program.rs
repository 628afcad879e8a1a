//! Running a kernel plan ([`Program`]): each kernel's body goes through the graph
//! interpreter, in program order, over the program's buffers.
//!
//! This is the oracle for fused code: a kernel body is an ordinary graph, so running it
//! here checks the plan's dataflow (which buffer each kernel reads and writes, slices
//! of concat-as-view buffers included) with the same numerics as the unfused graph.
//! Temporary buffers are freed after their last reader.

use super::{bound, run_with};
use crate::{Bindings, HostTensor, Outputs, Precision, RuntimeError, Storage};
use calib_ir::kernel::Slice;
use calib_ir::{Kernel, Program, Role};

/// Runs `program` in `f32`; returns every program output by name.
pub fn run_program(program: &Program, bindings: &Bindings) -> Result<Outputs, RuntimeError> {
    run_program_with(program, bindings, Precision::F32)
}

/// Runs `program` with floating values held in `precision`.
pub fn run_program_with(
    program: &Program,
    bindings: &Bindings,
    precision: Precision,
) -> Result<Outputs, RuntimeError> {
    program.validate()?;
    let mut last_read = vec![0; program.buffers.len()];
    for (k, kernel) in program.kernels.iter().enumerate() {
        kernel.inputs.iter().for_each(|b| last_read[b.0] = k);
    }
    let mut kept = vec![false; program.buffers.len()];
    program.outputs.iter().for_each(|o| kept[o.buffer.0] = true);

    let mut buffers: Vec<Option<HostTensor>> = vec![None; program.buffers.len()];
    for (i, buf) in program.buffers.iter().enumerate() {
        let tensor = match buf.role {
            Role::Input => bindings.get_input(&buf.name),
            Role::Param => bindings.get_param(&buf.name),
            Role::Output | Role::Temp => continue,
        };
        let kind = if buf.role == Role::Input {
            "input"
        } else {
            "param"
        };
        buffers[i] = Some(bound(kind, &buf.name, tensor, &buf.ty, precision)?.into_owned());
    }
    for (k, kernel) in program.kernels.iter().enumerate() {
        let fail = |e: RuntimeError| RuntimeError::Kernel {
            kernel: kernel.name.clone(),
            source: Box::new(e),
        };
        let mut args = Bindings::new();
        for (i, b) in kernel.inputs.iter().enumerate() {
            let t = buffers[b.0]
                .as_ref()
                .expect("validated: inputs are written before they are read");
            args = args.input(Kernel::input_name(i), t);
        }
        let mut results = run_with(&kernel.body, &args, precision).map_err(fail)?;
        for (i, out) in kernel.outputs.iter().enumerate() {
            let value = results
                .remove(&Kernel::output_name(i))
                .expect("validated: the body has every output");
            let slot = &mut buffers[out.buffer.0];
            *slot = Some(match (out.slice, slot.take()) {
                (None, _) => value,
                (Some(s), dst) => {
                    let ty = &program.buffer(out.buffer).ty;
                    let dst = dst.unwrap_or_else(|| HostTensor::full(ty, 0.0, precision));
                    write_slice(dst, value, s).map_err(fail)?
                }
            });
        }
        for b in &kernel.inputs {
            let temp = program.buffer(*b).role == Role::Temp;
            if temp && last_read[b.0] == k && !kept[b.0] {
                buffers[b.0] = None;
            }
        }
    }
    Ok(program
        .outputs
        .iter()
        .map(|o| {
            let t = buffers[o.buffer.0]
                .clone()
                .expect("validated: outputs are written");
            (o.name.clone(), t)
        })
        .collect())
}

/// `dst` with `src` stored at `slice` (validated to fit).
fn write_slice(dst: HostTensor, src: HostTensor, s: Slice) -> Result<HostTensor, RuntimeError> {
    fn copy<T: Copy>(dst: &mut [T], src: &[T], shape: &[usize], s: Slice) {
        let inner: usize = shape[s.axis + 1..].iter().product();
        let (row, part) = (shape[s.axis] * inner, (s.end - s.start) * inner);
        for (o, chunk) in src.chunks(part).enumerate() {
            let at = o * row + s.start * inner;
            dst[at..at + part].copy_from_slice(chunk);
        }
    }
    let (dtype, shape) = (dst.dtype(), dst.shape().to_vec());
    let mut storage = dst.into_storage();
    match (&mut storage, src.storage()) {
        (Storage::F32(d), Storage::F32(v)) => copy(d, v, &shape, s),
        (Storage::F64(d), Storage::F64(v)) => copy(d, v, &shape, s),
        (Storage::I64(d), Storage::I64(v)) => copy(d, v, &shape, s),
        (d, v) => {
            return Err(RuntimeError::Op {
                node: 0,
                op: "store",
                scope: String::new(),
                source: crate::OpError::Storage {
                    found: v.kind(),
                    expected: d.kind(),
                },
            })
        }
    }
    HostTensor::new(dtype, shape, storage).map_err(|e| RuntimeError::Op {
        node: 0,
        op: "store",
        scope: String::new(),
        source: e.into(),
    })
}
