//! A session whose state lives in a device program's buffers. The executor (the PTX
//! simulator, a GPU) supplies buffer reads and writes and a step that ends with the
//! carry's buffer-to-buffer copies; everything else (what is loaded where, what a step
//! must upload, what it may download, the accounting) is here, once for every device.

use super::host::never_loaded;
use super::staging::{CopyTimes, StagedNames};
use super::{not_an_output, Carry, Session, Transfers};
use crate::{Bindings, Collective, DeviceProgram, HostTensor, Outputs, RuntimeError, TensorMap};
use calib_ir::{BufferId, Graph, Role, TensorType};
use std::collections::HashMap;

/// After a step, buffer `from` is copied into buffer `to` (of the same type) on the
/// device, before anything else touches either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferCopy {
    pub from: BufferId,
    pub to: BufferId,
}

/// A device program whose buffers keep their contents between steps.
pub trait ResidentProgram: Send {
    fn plan(&self) -> &DeviceProgram;
    /// Writes a whole buffer.
    fn write(&mut self, buffer: BufferId, bytes: &[u8]) -> Result<(), RuntimeError>;
    /// Writes a whole buffer that the next step reads and every step rewrites (the
    /// batch): a GPU copies it asynchronously through page-locked memory, ordered
    /// before the step by an event. By default, [`ResidentProgram::write`].
    fn write_batch(&mut self, buffer: BufferId, bytes: &[u8]) -> Result<(), RuntimeError> {
        self.write(buffer, bytes)
    }
    /// Reads a whole buffer, after everything enqueued so far.
    fn read(&mut self, buffer: BufferId) -> Result<Vec<u8>, RuntimeError>;
    /// Runs the schedule, all-reduces through `group`, then performs `copies`.
    fn step(
        &mut self,
        group: Option<&dyn Collective>,
        copies: &[BufferCopy],
    ) -> Result<(), RuntimeError>;
    /// [`ResidentProgram::step`], then the whole buffers `next` written for the step
    /// after it: they must not reach a buffer before this step is done with it, and must
    /// be in place when the next step starts. A GPU starts their copies once this step
    /// is enqueued and before waiting for it, into staging memory of its own, and moves
    /// them into place at the next step's start. By default (executors whose `step`
    /// returns when the step is done): `step`, then [`ResidentProgram::write_batch`].
    fn step_then_stage(
        &mut self,
        group: Option<&dyn Collective>,
        copies: &[BufferCopy],
        next: &[(BufferId, Vec<u8>)],
    ) -> Result<(), RuntimeError> {
        self.step(group, copies)?;
        for (buffer, bytes) in next {
            self.write_batch(*buffer, bytes)?;
        }
        Ok(())
    }
    /// See [`Session::copy_times`].
    fn copy_times(&self) -> Option<CopyTimes> {
        None
    }
    /// [`ResidentProgram::step`] with a timer around every launch: microseconds per
    /// launch, in program order.
    fn timed_step(
        &mut self,
        group: Option<&dyn Collective>,
        copies: &[BufferCopy],
    ) -> Result<Vec<f64>, RuntimeError> {
        let _ = (group, copies);
        Err(RuntimeError::Device(
            "per-launch timing needs a GPU executor (the cuda backend)".into(),
        ))
    }
    /// See [`Session::stats`].
    fn stats(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// An input or param buffer, and the tensor a batch binds to it, if any.
type Bound<'p, 'b> = (BufferId, &'p calib_ir::Buffer, Option<&'b HostTensor>);

/// Every input and param buffer of `plan`, with the tensor `batch` binds to it (checked
/// to be of its type), if any.
fn bound_buffers<'p, 'b>(
    plan: &'p calib_ir::Program,
    batch: &Bindings<'b>,
) -> Result<Vec<Bound<'p, 'b>>, RuntimeError> {
    let mut found = vec![];
    for (i, buf) in plan.buffers.iter().enumerate() {
        let tensor = match buf.role {
            Role::Input => batch.get_input(&buf.name),
            Role::Param => batch.get_param(&buf.name),
            Role::Output | Role::Temp => continue,
        };
        if let Some(t) = tensor.filter(|t| t.ty() != buf.ty) {
            return Err(RuntimeError::BindingType {
                kind: kind_of(buf.role),
                name: buf.name.clone(),
                expected: buf.ty.clone(),
                found: t.ty(),
            });
        }
        found.push((BufferId(i), buf, tensor));
    }
    Ok(found)
}

/// How errors name a buffer of `role`.
fn kind_of(role: Role) -> &'static str {
    match role {
        Role::Param => "param",
        _ => "input",
    }
}

/// Where a resident value is.
#[derive(Clone, Debug)]
enum Place {
    /// In its input or param buffer.
    Buffer(BufferId),
    /// In the output buffer the last step wrote it to (a carried value whose
    /// destination no kernel reads, so the plan gave it no buffer).
    Output(BufferId),
    /// On the host (loaded, but no kernel reads it).
    Host(HostTensor),
}

/// A [`Session`] over a [`ResidentProgram`].
pub struct ResidentSession<P> {
    program: P,
    /// Every input and param of the graph, with its type and its buffer (if a kernel
    /// reads it).
    sources: HashMap<String, (TensorType, Option<BufferId>)>,
    outputs: HashMap<String, BufferId>,
    copies: Vec<BufferCopy>,
    /// Carried values without a buffer of their own: destination and output buffer.
    unbuffered: Vec<(String, BufferId)>,
    /// Carried values with a buffer: their names.
    buffered: Vec<String>,
    values: HashMap<String, Place>,
    /// What the last step staged for the next: written into its buffers by then.
    staged: StagedNames,
    transfers: Transfers,
}

impl<P: ResidentProgram> ResidentSession<P> {
    /// A session of `graph`, compiled into `program`, carrying `carry`.
    pub fn new(program: P, graph: &Graph, carry: &Carry) -> Result<Self, RuntimeError> {
        carry.check(graph)?;
        let plan = &program.plan().program;
        let buffer_of = |name: &str| {
            plan.buffers
                .iter()
                .position(|b| b.name == name && matches!(b.role, Role::Input | Role::Param))
                .map(BufferId)
        };
        let sources: HashMap<_, _> = graph
            .inputs()
            .chain(graph.params())
            .map(|(name, v)| (name.to_string(), (graph.ty(v).clone(), buffer_of(name))))
            .collect();
        let outputs: HashMap<_, _> = plan
            .outputs
            .iter()
            .map(|o| (o.name.clone(), o.buffer))
            .collect();
        let (mut copies, mut unbuffered, mut buffered) = (vec![], vec![], vec![]);
        for c in carry.iter() {
            let from = *outputs.get(&c.output).ok_or_else(|| {
                RuntimeError::Session(format!(
                    "the device plan has no output `{}` to carry",
                    c.output
                ))
            })?;
            let to = sources[&c.into].1;
            if let Some(to) = to.filter(|&to| plan.buffer(to).layout != plan.buffer(from).layout) {
                return Err(RuntimeError::Session(format!(
                    "cannot carry output `{}` ({}) into `{}` ({}): a step copies the bytes, so \
                     both buffers must be stored in the same layout",
                    c.output,
                    plan.buffer(from).layout,
                    c.into,
                    plan.buffer(to).layout
                )));
            }
            match to {
                Some(to) if to == from => buffered.push(c.into.clone()),
                Some(to) => {
                    copies.push(BufferCopy { from, to });
                    buffered.push(c.into.clone());
                }
                None => unbuffered.push((c.into.clone(), from)),
            }
        }
        // The copies act at once: none may read a buffer another one writes.
        if let Some(c) = copies
            .iter()
            .find(|c| copies.iter().any(|d| d.to == c.from))
        {
            return Err(RuntimeError::Session(format!(
                "cannot carry: output buffer {} is itself a carried input or param (the plan \
                 stores an output in an input's buffer)",
                c.from
            )));
        }
        Ok(ResidentSession {
            program,
            sources,
            outputs,
            copies,
            unbuffered,
            buffered,
            values: HashMap::new(),
            staged: StagedNames::default(),
            transfers: Transfers::default(),
        })
    }

    /// The buffer-to-buffer copies that end every step.
    pub fn copies(&self) -> &[BufferCopy] {
        &self.copies
    }

    /// Uploads what `batch` binds, checks that everything else is in place (loaded,
    /// carried, or staged by the step before), runs the step (timed, or staging `next`
    /// for the step after), and updates where every value is.
    fn run(
        &mut self,
        batch: &Bindings,
        timed: bool,
        next: Option<&Bindings>,
    ) -> Result<Vec<f64>, RuntimeError> {
        // Whatever happens, what was staged serves this step alone.
        let staged = std::mem::take(&mut self.staged);
        staged.check_not_bound_again(batch)?;
        let plan = &self.program.plan().program;
        let mut uploads = vec![];
        let mut bound = vec![];
        for (b, buf, t) in bound_buffers(plan, batch)? {
            match t {
                Some(t) => {
                    uploads.push((b, t));
                    bound.push(buf.name.clone());
                }
                None if staged.contains(&buf.name) => {}
                None if matches!(self.values.get(&buf.name), Some(Place::Buffer(_))) => {}
                None => {
                    return Err(RuntimeError::Unbound {
                        kind: kind_of(buf.role),
                        name: buf.name.clone(),
                        expected: buf.ty.clone(),
                    })
                }
            }
        }
        // Checked and made bytes before the step runs, so a bad `next` fails it cleanly.
        let next_uploads: Vec<(BufferId, Vec<u8>)> = match next {
            Some(next) => bound_buffers(plan, next)?
                .into_iter()
                .filter_map(|(b, _, t)| t.map(|t| (b, self.program.plan().stored_bytes(b, t))))
                .collect(),
            None => vec![],
        };
        for (b, t) in uploads {
            let data = self.program.plan().stored_bytes(b, t);
            self.program.write_batch(b, &data)?;
            self.transfers.uploaded_bytes += data.len() as u64;
        }
        let group = batch.get_collective();
        let times = if timed {
            self.program.timed_step(group, &self.copies)?
        } else if next.is_some() {
            self.program
                .step_then_stage(group, &self.copies, &next_uploads)?;
            vec![]
        } else {
            self.program.step(group, &self.copies)?;
            vec![]
        };
        if let Some(next) = next {
            let plan = &self.program.plan().program;
            // Only what a kernel reads has a buffer to be staged into; the rest of
            // `next` is what a step's batch may bind and no kernel reads: dropped, as
            // a step drops it.
            self.staged = StagedNames::of(next);
            self.staged
                .retain(|n| next_uploads.iter().any(|(b, _)| plan.buffer(*b).name == n));
            self.transfers.uploaded_bytes += next_uploads
                .iter()
                .map(|(_, d)| d.len() as u64)
                .sum::<u64>();
        }
        // A value the batch bound (or staged) served this step only; carried values are
        // in place.
        for name in bound.iter().map(String::as_str).chain(staged.iter()) {
            self.values.remove(name);
        }
        for name in &self.buffered {
            let to = self.sources[name].1.expect("buffered values have a buffer");
            self.values.insert(name.clone(), Place::Buffer(to));
        }
        for (name, from) in &self.unbuffered {
            self.values.insert(name.clone(), Place::Output(*from));
        }
        Ok(times)
    }

    /// The output buffers of the names in `fetch`.
    fn wanted<'f>(&self, fetch: &[&'f str]) -> Result<Vec<(&'f str, BufferId)>, RuntimeError> {
        fetch
            .iter()
            .map(|&name| match self.outputs.get(name) {
                Some(&b) => Ok((name, b)),
                None => Err(not_an_output(name)),
            })
            .collect()
    }

    /// Downloads the `wanted` outputs after a step.
    fn fetch(&mut self, wanted: Vec<(&str, BufferId)>) -> Result<Outputs, RuntimeError> {
        let mut fetched = Outputs::new();
        for (name, b) in wanted {
            fetched.insert(name.to_string(), self.download(b)?);
        }
        Ok(fetched)
    }

    fn download(&mut self, buffer: BufferId) -> Result<HostTensor, RuntimeError> {
        let data = self.program.read(buffer)?;
        self.transfers.downloaded_bytes += data.len() as u64;
        self.program.plan().stored_tensor(buffer, &data)
    }
}

impl<P: ResidentProgram> Session for ResidentSession<P> {
    fn load(&mut self, state: &TensorMap) -> Result<(), RuntimeError> {
        for (name, tensor) in state {
            let Some((ty, buffer)) = self.sources.get(name) else {
                continue;
            };
            if tensor.ty() != *ty {
                return Err(RuntimeError::BindingType {
                    kind: "state",
                    name: name.clone(),
                    expected: ty.clone(),
                    found: tensor.ty(),
                });
            }
            let place = match *buffer {
                Some(b) => {
                    let data = self.program.plan().stored_bytes(b, tensor);
                    self.program.write(b, &data)?;
                    self.transfers.uploaded_bytes += data.len() as u64;
                    Place::Buffer(b)
                }
                None => Place::Host(tensor.clone()),
            };
            self.values.insert(name.clone(), place);
        }
        Ok(())
    }

    fn step(&mut self, batch: &Bindings, fetch: &[&str]) -> Result<Outputs, RuntimeError> {
        let wanted = self.wanted(fetch)?;
        self.run(batch, false, None)?;
        self.fetch(wanted)
    }

    fn step_and_stage(
        &mut self,
        batch: &Bindings,
        fetch: &[&str],
        next: &Bindings,
    ) -> Result<Outputs, RuntimeError> {
        let wanted = self.wanted(fetch)?;
        self.run(batch, false, Some(next))?;
        self.fetch(wanted)
    }

    fn read(&mut self, names: &[&str]) -> Result<TensorMap, RuntimeError> {
        let mut out = TensorMap::new();
        for &name in names {
            let tensor = match self.values.get(name).cloned() {
                Some(Place::Buffer(b)) | Some(Place::Output(b)) => self.download(b)?,
                // Never crossed: nothing to count.
                Some(Place::Host(t)) => t,
                None => return Err(never_loaded(name)),
            };
            out.insert(name.to_string(), tensor);
        }
        Ok(out)
    }

    fn transfers(&self) -> Transfers {
        self.transfers
    }

    fn time_launches(&mut self, batch: &Bindings) -> Result<Vec<f64>, RuntimeError> {
        self.run(batch, true, None)
    }

    fn copy_times(&self) -> Option<CopyTimes> {
        self.program.copy_times()
    }

    fn plan(&self) -> Option<&DeviceProgram> {
        Some(self.program.plan())
    }

    fn stats(&self) -> serde_json::Value {
        self.program.stats()
    }
}
