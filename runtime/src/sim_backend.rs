//! Running a compiled kernel plan on the PTX simulator ([`crate::sim`]): every buffer of
//! the [`Program`] in simulated global memory, inputs and parameters uploaded, each
//! kernel launched in order with the buffer addresses as arguments, outputs read back.
//!
//! The PTX comes from code generation as data ([`SimLaunch`]), so this crate does not
//! depend on the code generator; the `calib` facade wires graph, fusion, code generation
//! and this executor into a backend.

use crate::sim::{self, GlobalMemory, KernelArg, Module, SimOptions};
use crate::{Bindings, HostTensor, Outputs, RuntimeError};
use calib_ir::{BufferId, DType, Program, Role};

/// One kernel launch of a compiled plan.
#[derive(Clone, Debug)]
pub struct SimLaunch {
    /// The PTX module holding the kernel.
    pub ptx: String,
    /// The entry to run.
    pub entry: String,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Dynamic shared memory in bytes.
    pub shared_bytes: usize,
    /// The buffer whose device address fills each `.param`, in order.
    pub args: Vec<BufferId>,
}

/// A plan with its kernels parsed, ready to run on the simulator any number of times.
pub struct SimProgram {
    program: Program,
    launches: Vec<(SimLaunch, Module)>,
}

impl SimProgram {
    /// Parses every launch's PTX; fails on a malformed plan, unparsable PTX or a launch
    /// naming a buffer the plan does not have.
    pub fn new(program: Program, launches: Vec<SimLaunch>) -> Result<SimProgram, RuntimeError> {
        program.validate()?;
        let parsed = launches
            .into_iter()
            .map(|l| {
                let module = sim::parse(&l.ptx).map_err(|e| failure(&l.entry, e))?;
                if let Some(b) = l.args.iter().find(|b| b.0 >= program.buffers.len()) {
                    return Err(failure(&l.entry, format!("argument {b} is not a buffer of the plan")));
                }
                Ok((l, module))
            })
            .collect::<Result<_, _>>()?;
        Ok(SimProgram {
            program,
            launches: parsed,
        })
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Runs the plan with default simulator checks.
    pub fn run(&self, bindings: &Bindings) -> Result<Outputs, RuntimeError> {
        self.run_with(&SimOptions::default(), bindings)
    }

    /// Runs the plan; returns every program output by name.
    pub fn run_with(&self, options: &SimOptions, bindings: &Bindings) -> Result<Outputs, RuntimeError> {
        let mut memory = GlobalMemory::new();
        let mut addresses = Vec::with_capacity(self.program.buffers.len());
        for buf in &self.program.buffers {
            let bytes = buf.ty.size_bytes().max(1);
            let address = memory.alloc(bytes).map_err(|e| failure("(allocation)", e))?;
            let (kind, tensor) = match buf.role {
                Role::Input => ("input", bindings.get_input(&buf.name)),
                Role::Param => ("param", bindings.get_param(&buf.name)),
                Role::Output | Role::Temp => {
                    addresses.push(address);
                    continue;
                }
            };
            let tensor = checked(kind, &buf.name, tensor, &buf.ty)?;
            upload(&mut memory, address, tensor).map_err(|e| failure("(upload)", e))?;
            addresses.push(address);
        }
        for (launch, module) in &self.launches {
            let args: Vec<KernelArg> = launch.args.iter().map(|b| KernelArg::U64(addresses[b.0])).collect();
            sim::simulate_with(
                options,
                module,
                &launch.entry,
                launch.grid,
                launch.block,
                launch.shared_bytes,
                &args,
                &mut memory,
            )
            .map_err(|e| failure(&launch.entry, e))?;
        }
        self.program
            .outputs
            .iter()
            .map(|o| {
                let ty = &self.program.buffer(o.buffer).ty;
                let tensor = download(&memory, addresses[o.buffer.0], ty)
                    .map_err(|e| failure("(download)", e))?;
                Ok((o.name.clone(), tensor))
            })
            .collect()
    }
}

fn failure(kernel: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Simulator {
        kernel: kernel.to_string(),
        message: e.to_string(),
    }
}

/// The bound tensor, if it matches the buffer's type.
fn checked<'a>(
    kind: &'static str,
    name: &str,
    tensor: Option<&'a HostTensor>,
    expected: &calib_ir::TensorType,
) -> Result<&'a HostTensor, RuntimeError> {
    let tensor = tensor.ok_or_else(|| RuntimeError::Unbound {
        kind,
        name: name.to_string(),
        expected: expected.clone(),
    })?;
    if tensor.ty() != *expected {
        return Err(RuntimeError::BindingType {
            kind,
            name: name.to_string(),
            expected: expected.clone(),
            found: tensor.ty(),
        });
    }
    Ok(tensor)
}

fn upload(memory: &mut GlobalMemory, address: u64, t: &HostTensor) -> Result<(), String> {
    let written = match t.dtype() {
        DType::I64 => memory.write(address, t.as_i64().ok_or("i64 tensor without i64 storage")?),
        DType::F32 => memory.write(address, &t.to_f32_vec()),
        d => return Err(format!("{d} tensors are not supported on the simulator yet")),
    };
    written.map_err(|e| e.to_string())
}

fn download(memory: &GlobalMemory, address: u64, ty: &calib_ir::TensorType) -> Result<HostTensor, String> {
    let n = ty.numel();
    let tensor = match ty.dtype {
        DType::I64 => HostTensor::from_i64(ty.shape.clone(), memory.read(address, n).map_err(|e| e.to_string())?),
        DType::F32 => HostTensor::from_f32(ty.shape.clone(), memory.read(address, n).map_err(|e| e.to_string())?),
        d => return Err(format!("{d} tensors are not supported on the simulator yet")),
    };
    tensor.map_err(|e| e.to_string())
}
