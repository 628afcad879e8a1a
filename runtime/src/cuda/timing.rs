//! Timing every launch of a step with CUDA events (`calib bench --per-kernel`): a
//! timing event recorded on the stream right before and right after each launch, so
//! each pair brackets exactly one kernel on the GPU's clock (the host's launch overhead
//! falls between pairs, not inside them).

use super::executor::{fail, CudaProgram};
use crate::session::ResidentProgram;
use crate::{Action, ArenaCopy, RuntimeError};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaEvent;

impl CudaProgram {
    /// Runs the schedule eagerly (never as a graph: events must bracket launches) with
    /// an event pair around every launch, then `copies`; returns microseconds per
    /// launch, in program order. Programs with all-reduces are refused by the caller.
    pub(super) fn time_launches(&mut self, copies: &[ArenaCopy]) -> Result<Vec<f64>, RuntimeError> {
        let ctx = self.stream().context().clone();
        let event = || {
            ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| fail("creating a timing event", e))
        };
        let pairs: Vec<(CudaEvent, CudaEvent)> = (0..self.plan().kernels.len())
            .map(|_| Ok((event()?, event()?)))
            .collect::<Result<_, RuntimeError>>()?;
        for action in self.plan().schedule() {
            let Action::Launch(i) = action else {
                return Err(RuntimeError::Device(
                    "per-launch timing runs programs without all-reduces".into(),
                ));
            };
            let (start, end) = &pairs[i];
            start
                .record(self.stream())
                .map_err(|e| fail("recording a timing event", e))?;
            self.launch(i)?;
            end.record(self.stream())
                .map_err(|e| fail("recording a timing event", e))?;
        }
        self.carry_on_stream(copies)?;
        self.stream()
            .synchronize()
            .map_err(|e| fail("running the timed step", e))?;
        pairs
            .iter()
            .map(|(start, end)| {
                start
                    .elapsed_ms(end)
                    .map(|ms| ms as f64 * 1e3)
                    .map_err(|e| fail("reading a timing event", e))
            })
            .collect()
    }
}
