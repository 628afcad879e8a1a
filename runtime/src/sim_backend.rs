//! Running a [`DeviceProgram`] on the PTX simulator ([`crate::sim`]), as the `cuda`
//! executor runs it on a GPU: inputs and parameters uploaded, every kernel launched in
//! order with buffer addresses as arguments, outputs read back.
//!
//! Unlike the GPU, each buffer gets an allocation of its own rather than its place in
//! the arena, so that an access outside a buffer faults instead of landing silently in
//! a neighbour. [`SimResident`] keeps those allocations between steps, for sessions.

use crate::memory::Need;
use crate::session::{BufferCopy, ResidentProgram};
use crate::sim::{self, GlobalMemory, KernelArg, Module, SimOptions};
use crate::{Action, Bindings, Collective, DeviceProgram, Outputs, RuntimeError};
use calib_ir::BufferId;
use std::sync::Arc;

/// A device program with its kernels parsed, ready to run on the simulator.
pub struct SimProgram {
    plan: DeviceProgram,
    modules: Vec<Module>,
}

impl SimProgram {
    /// Parses every kernel's PTX; fails on a malformed plan, unparsable PTX or a kernel
    /// parameter naming a buffer the plan does not have.
    pub fn new(plan: DeviceProgram) -> Result<SimProgram, RuntimeError> {
        plan.program.validate()?;
        let buffers = plan.program.buffers.len();
        let modules = plan
            .kernels
            .iter()
            .map(|k| {
                if let Some(b) = k.params.iter().find(|b| b.0 >= buffers) {
                    return Err(failure(
                        &k.name,
                        format!("parameter {b} is not a buffer of the plan"),
                    ));
                }
                sim::parse(&k.ptx).map_err(|e| failure(&k.name, e))
            })
            .collect::<Result<_, _>>()?;
        Ok(SimProgram { plan, modules })
    }

    pub fn plan(&self) -> &DeviceProgram {
        &self.plan
    }

    /// Runs the program with the simulator's default checks.
    pub fn run(&self, bindings: &Bindings) -> Result<Outputs, RuntimeError> {
        self.run_with(&SimOptions::default(), bindings)
    }

    /// Runs the program; returns every program output by name.
    pub fn run_with(
        &self,
        options: &SimOptions,
        bindings: &Bindings,
    ) -> Result<Outputs, RuntimeError> {
        let program = &self.plan.program;
        let mut memory = GlobalMemory::new();
        let addresses = self.allocate(&mut memory)?;
        for (id, tensor) in self.plan.bound_tensors(bindings)? {
            memory
                .write_bytes(addresses[id.0], &self.plan.stored_bytes(id, tensor))
                .map_err(|e| failure("(upload)", e))?;
        }
        self.execute(options, &addresses, &mut memory, bindings.get_collective())?;
        program
            .outputs
            .iter()
            .map(|o| {
                let ty = &program.buffer(o.buffer).ty;
                let bytes = memory
                    .read_bytes(addresses[o.buffer.0], ty.size_bytes())
                    .map_err(|e| failure("(download)", e))?;
                Ok((o.name.clone(), self.plan.stored_tensor(o.buffer, &bytes)?))
            })
            .collect()
    }

    /// What the simulator holds for this program at its peak: every buffer, each in an
    /// allocation of its own (in host memory).
    pub fn memory_need(&self) -> Need {
        let buffers = self.plan.program.buffers.iter();
        Need {
            what: "the simulator's device buffers".into(),
            parts: vec![(
                "buffers",
                buffers.fold(0u64, |n, b| {
                    n.saturating_add(b.ty.size_bytes().max(1) as u64)
                }),
            )],
        }
    }

    /// An allocation of its own for every buffer; their addresses, by buffer. Refused
    /// with the figures when host memory cannot hold them.
    fn allocate(&self, memory: &mut GlobalMemory) -> Result<Vec<u64>, RuntimeError> {
        crate::memory::check_host(&self.memory_need())?;
        self.plan
            .program
            .buffers
            .iter()
            .map(|b| memory.alloc(b.ty.size_bytes().max(1)))
            .collect::<Result<Vec<u64>, _>>()
            .map_err(|e| failure("(allocation)", e))
    }

    /// Runs the schedule on buffers already in `memory`.
    fn execute(
        &self,
        options: &SimOptions,
        addresses: &[u64],
        memory: &mut GlobalMemory,
        group: Option<&dyn Collective>,
    ) -> Result<(), RuntimeError> {
        let program = &self.plan.program;
        // An all-reduce runs at its join, the latest moment a GPU may complete it, and
        // its output holds NaN until then: a kernel that read it earlier would poison
        // the results, which every comparison with the reference catches.
        for action in self.plan.schedule() {
            match action {
                Action::Launch(i) => self.launch(options, i, addresses, memory)?,
                Action::StartAllReduce(c) => {
                    let c = &self.plan.all_reduces[c];
                    let poison = vec![0xff; program.buffer(c.output).ty.size_bytes()];
                    memory
                        .write_bytes(addresses[c.output.0], &poison)
                        .map_err(|e| failure(&c.kernel, e))?;
                }
                Action::JoinAllReduce(c) => {
                    let c = &self.plan.all_reduces[c];
                    let ty = &program.buffer(c.input).ty;
                    let input = memory
                        .read_bytes(addresses[c.input.0], ty.size_bytes())
                        .map_err(|e| failure(&c.kernel, e))?;
                    let reduced = c.reduce_on_host(program, &input, group)?;
                    memory
                        .write_bytes(addresses[c.output.0], &reduced)
                        .map_err(|e| failure(&c.kernel, e))?;
                }
            }
        }
        Ok(())
    }

    fn launch(
        &self,
        options: &SimOptions,
        i: usize,
        addresses: &[u64],
        memory: &mut GlobalMemory,
    ) -> Result<(), RuntimeError> {
        let (kernel, module) = (&self.plan.kernels[i], &self.modules[i]);
        let args: Vec<KernelArg> = kernel
            .params
            .iter()
            .map(|b| KernelArg::U64(addresses[b.0]))
            .collect();
        sim::simulate_with(
            options,
            module,
            &kernel.name,
            kernel.grid,
            kernel.block,
            kernel.shared_bytes as usize,
            &args,
            memory,
        )
        .map_err(|e| failure(&kernel.name, e))?;
        Ok(())
    }
}

/// A simulated device whose buffers keep their contents between steps: where a
/// session on the `sim` backend keeps its state.
pub struct SimResident {
    program: Arc<SimProgram>,
    memory: GlobalMemory,
    addresses: Vec<u64>,
}

impl SimResident {
    pub fn new(program: Arc<SimProgram>) -> Result<Self, RuntimeError> {
        let mut memory = GlobalMemory::new();
        let addresses = program.allocate(&mut memory)?;
        Ok(SimResident {
            program,
            memory,
            addresses,
        })
    }

    fn size(&self, buffer: BufferId) -> usize {
        self.program.plan.program.buffer(buffer).ty.size_bytes()
    }
}

impl ResidentProgram for SimResident {
    fn plan(&self) -> &DeviceProgram {
        &self.program.plan
    }

    fn write(&mut self, buffer: BufferId, bytes: &[u8]) -> Result<(), RuntimeError> {
        if bytes.len() != self.size(buffer) {
            return Err(failure(
                "(upload)",
                format!(
                    "{} bytes for the {} of buffer {buffer}",
                    bytes.len(),
                    self.size(buffer)
                ),
            ));
        }
        self.memory
            .write_bytes(self.addresses[buffer.0], bytes)
            .map_err(|e| failure("(upload)", e))
    }

    fn read(&mut self, buffer: BufferId) -> Result<Vec<u8>, RuntimeError> {
        self.memory
            .read_bytes(self.addresses[buffer.0], self.size(buffer))
            .map_err(|e| failure("(download)", e))
    }

    fn step(
        &mut self,
        group: Option<&dyn Collective>,
        copies: &[BufferCopy],
    ) -> Result<(), RuntimeError> {
        let options = SimOptions::default();
        self.program
            .execute(&options, &self.addresses, &mut self.memory, group)?;
        for c in copies {
            let bytes = self.read(c.from)?;
            self.write(c.to, &bytes)?;
        }
        Ok(())
    }
}

fn failure(kernel: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Simulator {
        kernel: kernel.to_string(),
        message: e.to_string(),
    }
}
