//! The batch's way to the GPU: page-locked host memory and a copy stream of its own.
//!
//! A copy from ordinary (pageable) memory is staged by the driver through its own
//! pinned buffer and blocks the host until it is done; from page-locked memory the DMA
//! engine reads the host bytes directly and the host returns at once. Each destination
//! buffer has two page-locked slots used in turn (double buffering), so the host fills
//! one while the copy from the other may still be in flight; a slot is only rewritten
//! once its last copy has completed (the slot's event, which cudarc records on every
//! copy from it and waits for before handing the slot's bytes out).
//!
//! Ordering, stated as events: a copy starts after everything the compute stream had
//! enqueued before it (a kernel of the previous step may still read the buffer), and
//! the compute stream waits for the copy's completion before anything it enqueues next
//! (the step's kernels, or a CUDA graph's replay). Nothing else orders them.

use calib_ir::BufferId;
use cudarc::driver::{CudaContext, CudaStream, CudaViewMut, DriverError, PinnedHostSlice};
use std::collections::HashMap;
use std::sync::Arc;

/// Uploads of per-step buffers for one program.
pub(super) struct Uploader {
    ctx: Arc<CudaContext>,
    copies: Arc<CudaStream>,
    slots: HashMap<BufferId, Slots>,
}

/// A destination buffer's two page-locked slots, and whether the second goes next.
#[derive(Default)]
struct Slots {
    first: Option<PinnedHostSlice<u8>>,
    second: Option<PinnedHostSlice<u8>>,
    second_next: bool,
}

impl Uploader {
    pub(super) fn new(ctx: &Arc<CudaContext>) -> Result<Self, DriverError> {
        Ok(Uploader {
            ctx: ctx.clone(),
            copies: ctx.new_stream()?,
            slots: HashMap::new(),
        })
    }

    /// Enqueues the copy of `bytes` (exactly `dst`'s length) into buffer `id` at `dst`,
    /// ordered after `compute`'s work so far and before its next.
    pub(super) fn upload(
        &mut self,
        id: BufferId,
        bytes: &[u8],
        dst: &mut CudaViewMut<'_, u8>,
        compute: &Arc<CudaStream>,
    ) -> Result<(), DriverError> {
        if bytes.is_empty() {
            // Nothing to copy (and the driver has no page-locked allocation of 0 bytes).
            return Ok(());
        }
        let slots = self.slots.entry(id).or_default();
        let slot = if slots.second_next {
            &mut slots.second
        } else {
            &mut slots.first
        };
        slots.second_next = !slots.second_next;
        if slot.as_ref().is_none_or(|s| s.len() != bytes.len()) {
            // SAFETY: the slot is filled completely below before any copy reads it.
            *slot = Some(unsafe { self.ctx.alloc_pinned::<u8>(bytes.len()) }?);
        }
        let slot = slot.as_mut().expect("allocated above");
        // Waits for this slot's previous copy, then fills it.
        slot.as_mut_slice()?.copy_from_slice(bytes);
        let before = compute.record_event(None)?;
        self.copies.wait(&before)?;
        self.copies.memcpy_htod(slot, dst)?;
        let copied = self.copies.record_event(None)?;
        compute.wait(&copied)
    }
}
