//! Batch N+1's copy overlapping step N (`ResidentProgram::step_then_stage`).
//!
//! Step N reads its batch from its input buffers in the arena until its last kernel
//! (the first convolution's weight gradient reads the images at the very end of the
//! backward pass), so batch N+1 cannot be copied there while step N runs. It is copied
//! instead into a staging buffer of its own on the device, on the copy stream, as soon
//! as step N is enqueued; the next step begins with a device-to-device move from there
//! into the arena on the compute stream (at device-memory speed, a small fraction of
//! the copy over PCIe). Ordering, as events:
//!
//! - the copy into a staging buffer waits for the `free` event of the move out of it
//!   at the previous step's start (it must not overwrite a batch not yet moved);
//! - the move waits for the copy's completion (`ready`), and is enqueued on the compute
//!   stream after step N's work and before step N+1's kernels (or graph replay), so step
//!   N never sees batch N+1 and step N+1 sees nothing else.
//!
//! A staged batch's copies (input, labels, learning rate: one after another on the copy
//! stream) are timed together, with timing events before the first and after the last,
//! and one at the end of the step they overlap: `exposed` is the part of the copy still
//! running after that step ended (what the next step may have waited for), at most the
//! copy's own time.

use super::executor::fail;
use super::upload::Uploader;
use crate::session::CopyTimes;
use crate::RuntimeError;
use calib_ir::BufferId;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DevicePtr};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A staging buffer on the device for one arena buffer.
struct Stage {
    device: CudaSlice<u8>,
    /// The move out of `device` at the last step's start: the next copy in waits for it.
    free: Option<CudaEvent>,
    /// The copy into `device` that is not yet moved into the arena.
    ready: Option<Arc<CudaEvent>>,
}

/// One staged batch's timing events.
struct Timed {
    copy_start: CudaEvent,
    copy_end: Arc<CudaEvent>,
    /// The end of the step the copies were enqueued behind.
    overlapped_end: CudaEvent,
}

/// The staging buffers of one program, and the timing of its staged copies.
#[derive(Default)]
pub(super) struct Staging {
    stages: BTreeMap<BufferId, Stage>,
    /// Batches not yet moved into place.
    in_flight: Vec<Timed>,
    /// Batches moved into place by the step now running, read once it has been waited
    /// for.
    moved: Vec<Timed>,
    times: CopyTimes,
}

impl Staging {
    /// Enqueues the copies of `next` (whole buffers and their bytes) into their staging
    /// buffers on the copy stream, each behind the move out of it at the last step's
    /// start. Called right after a step is enqueued on `compute`: that is the step they
    /// overlap.
    pub(super) fn stage(
        &mut self,
        uploader: &mut Uploader,
        compute: &Arc<CudaStream>,
        next: &[(BufferId, Vec<u8>)],
    ) -> Result<(), RuntimeError> {
        let timing = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let overlapped_end = compute
            .record_event(timing)
            .map_err(|e| fail("recording the end of the step", e))?;
        let mut first_start = None;
        let mut last_end = None;
        for (buffer, bytes) in next.iter().filter(|(_, b)| !b.is_empty()) {
            if self
                .stages
                .get(buffer)
                .is_none_or(|s| s.device.len() != bytes.len())
            {
                // On the copy stream, so that the copies into it are ordered after the
                // allocation; a move out of it waits for such a copy.
                let device = uploader
                    .alloc(bytes.len())
                    .map_err(|e| fail("allocating a staging buffer for the next batch", e))?;
                let stage = Stage {
                    device,
                    free: None,
                    ready: None,
                };
                self.stages.insert(*buffer, stage);
            }
            let stage = self.stages.get_mut(buffer).expect("inserted above");
            let mut view = stage.device.slice_mut(..);
            let copied = uploader
                .copy(*buffer, bytes, &mut view, stage.free.as_ref(), true)
                .map_err(|e| fail("copying the next batch through page-locked memory", e))?;
            let end = Arc::new(copied.end);
            stage.ready = Some(end.clone());
            if first_start.is_none() {
                first_start = copied.start;
            }
            last_end = Some(end);
        }
        if let (Some(copy_start), Some(copy_end)) = (first_start, last_end) {
            self.in_flight.push(Timed {
                copy_start,
                copy_end,
                overlapped_end,
            });
        }
        Ok(())
    }

    /// Enqueues on `compute`, before the step about to be enqueued, the move of every
    /// staged buffer into its arena buffer at `address(buffer)`, which is as long.
    pub(super) fn move_into_place(
        &mut self,
        compute: &Arc<CudaStream>,
        address: impl Fn(BufferId) -> u64,
    ) -> Result<(), RuntimeError> {
        for (&buffer, stage) in &mut self.stages {
            let Some(ready) = stage.ready.take() else {
                continue;
            };
            compute
                .wait(&ready)
                .map_err(|e| fail("waiting for the next batch's copy", e))?;
            let (from, _sync) = stage.device.device_ptr(compute);
            // SAFETY: both ranges are `len` bytes (the caller staged exactly the arena
            // buffer's bytes), and both outlive the move: the arena and the staging
            // buffers live as long as the program, whose steps are waited for.
            unsafe {
                cudarc::driver::result::memcpy_dtod_async(
                    address(buffer),
                    from,
                    stage.device.len(),
                    compute.cu_stream(),
                )
            }
            .map_err(|e| fail("moving the next batch into place", e))?;
            stage.free = Some(
                compute
                    .record_event(None)
                    .map_err(|e| fail("recording a staged batch's move", e))?,
            );
        }
        self.moved.append(&mut self.in_flight);
        Ok(())
    }

    /// Reads the timing of the batches moved into place by the step just waited for.
    pub(super) fn settle(&mut self) -> Result<(), RuntimeError> {
        let seconds = |a: &CudaEvent, b: &CudaEvent| {
            a.elapsed_ms(b)
                .map(|ms| ms as f64 / 1e3)
                .map_err(|e| fail("reading a copy's timing events", e))
        };
        for t in self.moved.drain(..) {
            let copy = seconds(&t.copy_start, &t.copy_end)?;
            // The copy's time outside the step: after the step's end, and never more
            // than the copy took (a copy that started after a short step ended was not
            // hidden at all, however late it started).
            let after_step = seconds(&t.overlapped_end, &t.copy_end)?;
            self.times.copies += 1;
            self.times.seconds += copy;
            self.times.exposed_seconds += after_step.clamp(0.0, copy);
        }
        Ok(())
    }

    pub(super) fn times(&self) -> CopyTimes {
        self.times
    }
}
