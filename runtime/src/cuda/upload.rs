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
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{
    CudaContext, CudaEvent, CudaSlice, CudaStream, CudaViewMut, DriverError, PinnedHostSlice,
};
use std::collections::HashMap;
use std::sync::Arc;

/// Uploads of per-step buffers for one program.
pub(super) struct Uploader {
    ctx: Arc<CudaContext>,
    copies: Arc<CudaStream>,
    slots: HashMap<BufferId, Slots>,
}

/// A destination buffer's two page-locked slots, and which goes next.
#[derive(Default)]
struct Slots {
    pair: [Option<PinnedHostSlice<u8>>; 2],
    turn: Turn,
}

/// Which of two slots a copy uses: they alternate, so the host fills one while the copy
/// from the other may still be in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Turn(usize);

impl Turn {
    /// The slot to use now; the other one goes next.
    pub(super) fn take(&mut self) -> usize {
        let now = self.0;
        self.0 = 1 - now;
        now
    }
}

/// A copy enqueued on the copy stream: its completion, and with timing asked for, an
/// event recorded right before it (the pair brackets the copy on the GPU's clock).
pub(super) struct Copied {
    pub(super) start: Option<CudaEvent>,
    pub(super) end: CudaEvent,
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
        let before = compute.record_event(None)?;
        let copied = self.copy(id, bytes, dst, Some(&before), false)?;
        compute.wait(&copied.end)
    }

    /// Device memory of `len` bytes, allocated in the copy stream's order: copies this
    /// uploader enqueues into it need no other ordering after the allocation.
    pub(super) fn alloc(&self, len: usize) -> Result<CudaSlice<u8>, DriverError> {
        // SAFETY: the memory is only read after a copy into it has filled it (the
        // caller's contract).
        unsafe { self.copies.alloc::<u8>(len) }
    }

    /// Enqueues the copy of `bytes` (exactly `dst`'s length, not empty) into `dst`
    /// through `id`'s next page-locked slot, on the copy stream after `after` (if any);
    /// nothing else orders it. With `timed`, the copy is bracketed by timing events.
    pub(super) fn copy(
        &mut self,
        id: BufferId,
        bytes: &[u8],
        dst: &mut CudaViewMut<'_, u8>,
        after: Option<&CudaEvent>,
        timed: bool,
    ) -> Result<Copied, DriverError> {
        let slots = self.slots.entry(id).or_default();
        let slot = &mut slots.pair[slots.turn.take()];
        if slot.as_ref().is_none_or(|s| s.len() != bytes.len()) {
            // SAFETY: the slot is filled completely below before any copy reads it.
            *slot = Some(unsafe { self.ctx.alloc_pinned::<u8>(bytes.len()) }?);
        }
        let slot = slot.as_mut().expect("allocated above");
        // Waits for this slot's previous copy, then fills it.
        slot.as_mut_slice()?.copy_from_slice(bytes);
        if let Some(after) = after {
            self.copies.wait(after)?;
        }
        let timing = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let start = match timed {
            true => Some(self.copies.record_event(timing)?),
            false => None,
        };
        self.copies.memcpy_htod(slot, dst)?;
        let end = self
            .copies
            .record_event(timed.then_some(timing).flatten())?;
        Ok(Copied { start, end })
    }
}

#[cfg(test)]
mod tests {
    use super::Turn;

    #[test]
    fn slots_alternate_from_the_first() {
        let mut turn = Turn::default();
        let taken: Vec<usize> = (0..5).map(|_| turn.take()).collect();
        assert_eq!(taken, [0, 1, 0, 1, 0]);
    }
}
