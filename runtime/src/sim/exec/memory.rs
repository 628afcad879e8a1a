//! Loads, stores and atomics of one warp instruction: address generation, the state
//! space an address falls in, alignment and bounds checks, and shared-memory race checks.

use super::block::{BlockEnv, BlockState, LaneFault};
use super::race::Accessor;
use super::warp::{lanes, Warp, WARP};
use crate::sim::alu::sign_extend;
use crate::sim::ast::{
    Address, Alu, AtomOp, FloatOp, IntOp, Op, Operand, Reg, Space, SHARED_WINDOW,
};
use crate::sim::error::{Access, FaultKind};
use crate::sim::memory;
use crate::sim::types::Ty;

/// Where one address points after generic addresses are decoded.
#[derive(Clone, Copy)]
enum Target {
    Global(u64),
    Shared(u64),
    Param(u64),
}

fn target(space: Space, addr: u64) -> Target {
    match space {
        Space::Global => Target::Global(addr),
        Space::Shared => Target::Shared(addr),
        Space::Param => Target::Param(addr),
        Space::Generic if (SHARED_WINDOW..SHARED_WINDOW + (1 << 32)).contains(&addr) => {
            Target::Shared(addr - SHARED_WINDOW)
        }
        Space::Generic => Target::Global(addr),
    }
}

/// One lane's access, with what a fault report needs.
pub(super) struct Site<'a> {
    env: &'a BlockEnv<'a>,
    lane: usize,
    access: Access,
    accessor: Accessor,
}

impl<'a> Site<'a> {
    pub(super) fn new(
        env: &'a BlockEnv<'a>,
        warp: &Warp,
        state: &BlockState,
        lane: usize,
        pc: usize,
        access: Access,
    ) -> Self {
        Site {
            env,
            lane,
            access,
            accessor: accessor(warp, state, lane, pc),
        }
    }

    pub(super) fn accessor(&self) -> Accessor {
        self.accessor
    }

    pub(super) fn fault(&self, kind: FaultKind) -> LaneFault {
        LaneFault::new(self.lane as u32, kind)
    }

    pub(super) fn out_of_bounds(
        &self,
        space: &'static str,
        addr: u64,
        bytes: usize,
        detail: String,
    ) -> LaneFault {
        self.fault(FaultKind::OutOfBounds {
            space,
            access: self.access,
            addr,
            bytes,
            detail,
        })
    }

    /// Checks that `[addr, addr + bytes)` lies in a space of `len` bytes.
    pub(super) fn in_bounds(
        &self,
        space: &'static str,
        addr: u64,
        bytes: usize,
        len: usize,
    ) -> Result<usize, LaneFault> {
        if addr
            .checked_add(bytes as u64)
            .is_some_and(|end| end <= len as u64)
        {
            return Ok(addr as usize);
        }
        let detail = format!("the {space} space of this launch has {len} bytes");
        Err(self.out_of_bounds(space, addr, bytes, detail))
    }

    /// Checks each byte of a shared access against the copies in flight and for races.
    pub(super) fn shared_race(
        &self,
        state: &mut BlockState,
        offset: usize,
        bytes: usize,
        write: bool,
    ) -> Result<(), LaneFault> {
        if !self.env.options.race_check {
            return Ok(());
        }
        for addr in offset..offset + bytes {
            if let Some(copy) = state.copies.in_flight(addr) {
                return Err(self.fault(FaultKind::AsyncCopyPending {
                    addr: addr as u64,
                    access: self.access,
                    copy: self.env.other(copy),
                }));
            }
            let result = if write {
                state
                    .race
                    .write(addr, self.accessor, self.access == Access::Atomic)
            } else {
                state.race.read(addr, self.accessor)
            };
            if let Err(race) = result {
                return Err(self.fault(FaultKind::SharedRace {
                    addr: addr as u64,
                    what: race.what,
                    other: self.env.other(race.other),
                }));
            }
        }
        Ok(())
    }

    pub(super) fn load(
        &self,
        state: &mut BlockState,
        space: Space,
        addr: u64,
        bytes: usize,
    ) -> Result<u64, LaneFault> {
        match target(space, addr) {
            Target::Global(a) => {
                let (words, offset) = self
                    .env
                    .global
                    .locate(a, bytes)
                    .map_err(|detail| self.out_of_bounds("global", a, bytes, detail))?;
                Ok(memory::load(words, offset, bytes))
            }
            Target::Shared(a) => {
                let offset = self.in_bounds("shared", a, bytes, state.shared.len())?;
                self.shared_race(state, offset, bytes, false)?;
                Ok(read_le(&state.shared[offset..offset + bytes]))
            }
            Target::Param(a) => {
                let offset = self.in_bounds("param", a, bytes, self.env.params.len())?;
                Ok(read_le(&self.env.params[offset..offset + bytes]))
            }
        }
    }

    fn store(
        &self,
        state: &mut BlockState,
        space: Space,
        addr: u64,
        bytes: usize,
        value: u64,
    ) -> Result<(), LaneFault> {
        match target(space, addr) {
            Target::Global(a) => {
                let (words, offset) = self
                    .env
                    .global
                    .locate(a, bytes)
                    .map_err(|detail| self.out_of_bounds("global", a, bytes, detail))?;
                memory::store(words, offset, bytes, value);
            }
            Target::Shared(a) => {
                let offset = self.in_bounds("shared", a, bytes, state.shared.len())?;
                self.shared_race(state, offset, bytes, true)?;
                state.shared[offset..offset + bytes].copy_from_slice(&value.to_le_bytes()[..bytes]);
            }
            Target::Param(_) => unreachable!("the decoder rejects stores to .param"),
        }
        Ok(())
    }

    /// Atomically replaces the value at `addr` by `f(old)`; returns `old`.
    fn rmw(
        &self,
        state: &mut BlockState,
        space: Space,
        addr: u64,
        bytes: usize,
        f: impl Fn(u64) -> u64,
    ) -> Result<u64, LaneFault> {
        match target(space, addr) {
            Target::Global(a) => {
                let (words, offset) = self
                    .env
                    .global
                    .locate(a, bytes)
                    .map_err(|detail| self.out_of_bounds("global", a, bytes, detail))?;
                Ok(memory::rmw(words, offset, bytes, f))
            }
            Target::Shared(a) => {
                let offset = self.in_bounds("shared", a, bytes, state.shared.len())?;
                self.shared_race(state, offset, bytes, true)?;
                let old = read_le(&state.shared[offset..offset + bytes]);
                state.shared[offset..offset + bytes]
                    .copy_from_slice(&f(old).to_le_bytes()[..bytes]);
                Ok(old)
            }
            Target::Param(_) => unreachable!("the decoder rejects atomics on .param"),
        }
    }

    pub(super) fn check_aligned(
        &self,
        space: Space,
        addr: u64,
        bytes: usize,
    ) -> Result<(), LaneFault> {
        // Access sizes are powers of two.
        if addr & (bytes as u64 - 1) == 0 {
            return Ok(());
        }
        let space = match target(space, addr) {
            Target::Global(_) => "global",
            Target::Shared(_) => "shared",
            Target::Param(_) => "param",
        };
        Err(self.fault(FaultKind::Misaligned {
            space,
            access: self.access,
            addr,
            bytes,
        }))
    }
}

fn read_le(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(b)
}

/// Each active lane's address.
pub(super) fn addresses(
    warp: &Warp,
    env: &BlockEnv,
    addr: Address,
    active: u32,
) -> Result<[u64; WARP], LaneFault> {
    let mut out = match addr.base {
        Some(r) => warp.read(env, Operand::Reg(r), active)?,
        None => [0; WARP],
    };
    for a in out.iter_mut() {
        *a = a.wrapping_add(addr.offset as u64);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn load(
    warp: &mut Warp,
    env: &BlockEnv,
    state: &mut BlockState,
    pc: usize,
    space: Space,
    ty: Ty,
    dst: &[Reg],
    addr: Address,
    active: u32,
) -> Result<(), LaneFault> {
    let addrs = addresses(warp, env, addr, active)?;
    let bytes = ty.bytes();
    let mut values = [[0u64; WARP]; 4];
    for lane in lanes(active) {
        let site = Site {
            env,
            lane,
            access: Access::Load,
            accessor: accessor(warp, state, lane, pc),
        };
        site.check_aligned(space, addrs[lane], bytes * dst.len())?;
        for (i, v) in values.iter_mut().take(dst.len()).enumerate() {
            let raw = site.load(
                state,
                space,
                addrs[lane].wrapping_add((i * bytes) as u64),
                bytes,
            )?;
            // Signed loads extend into a wider destination register.
            v[lane] = if ty.is_signed() {
                sign_extend(raw, ty.bits())
            } else {
                raw
            };
        }
    }
    for (r, v) in dst.iter().zip(&values) {
        warp.write(*r, active, v);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn store(
    warp: &mut Warp,
    env: &BlockEnv,
    state: &mut BlockState,
    pc: usize,
    space: Space,
    ty: Ty,
    src: &[Operand],
    addr: Address,
    active: u32,
) -> Result<(), LaneFault> {
    let addrs = addresses(warp, env, addr, active)?;
    let values = src
        .iter()
        .map(|s| warp.read(env, *s, active))
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = ty.bytes();
    for lane in lanes(active) {
        let site = Site {
            env,
            lane,
            access: Access::Store,
            accessor: accessor(warp, state, lane, pc),
        };
        site.check_aligned(space, addrs[lane], bytes * src.len())?;
        for (i, v) in values.iter().enumerate() {
            site.store(
                state,
                space,
                addrs[lane].wrapping_add((i * bytes) as u64),
                bytes,
                v[lane],
            )?;
        }
    }
    Ok(())
}

pub(super) fn atomic(
    warp: &mut Warp,
    env: &BlockEnv,
    state: &mut BlockState,
    pc: usize,
    op: &Op,
    active: u32,
) -> Result<(), LaneFault> {
    let Op::Atom {
        space,
        op,
        ty,
        dst,
        addr,
        b,
        c,
    } = *op
    else {
        unreachable!("atomic() is called for atom and red");
    };
    let addrs = addresses(warp, env, addr, active)?;
    let bv = warp.read(env, b, active)?;
    let cv = match c {
        Some(c) => warp.read(env, c, active)?,
        None => [0; WARP],
    };
    let bytes = ty.bytes();
    let mut old = [0u64; WARP];
    // Lanes apply their updates one at a time, in lane order: one of the orders a GPU
    // may serialize them in.
    for lane in lanes(active) {
        let site = Site {
            env,
            lane,
            access: Access::Atomic,
            accessor: accessor(warp, state, lane, pc),
        };
        site.check_aligned(space, addrs[lane], bytes)?;
        let update = |x: u64| atomic_update(op, ty, x, bv[lane], cv[lane]);
        old[lane] = site.rmw(state, space, addrs[lane], bytes, update)?;
    }
    if let Some(d) = dst {
        warp.write(d, active, &old);
    }
    Ok(())
}

fn accessor(warp: &Warp, state: &BlockState, lane: usize, pc: usize) -> Accessor {
    Accessor {
        thread: (warp.index as usize * WARP + lane) as u32,
        event: state.event,
        pc: pc as u32,
    }
}

/// The new value of an atomic location holding `old`.
fn atomic_update(op: AtomOp, ty: Ty, old: u64, b: u64, c: u64) -> u64 {
    let int = |op| Alu::Int { op, ty }.apply(old, b, 0).unwrap_or(old);
    match op {
        // The PTX ISA specifies that atom.add.f32 flushes subnormal inputs and results.
        AtomOp::Add if ty.is_float() => Alu::Float {
            op: FloatOp::Add,
            ty,
            ftz: ty == Ty::F32,
            sat: false,
        }
        .apply(old, b, 0)
        .unwrap_or(old),
        AtomOp::Add => int(IntOp::Add),
        AtomOp::Min => int(IntOp::Min),
        AtomOp::Max => int(IntOp::Max),
        AtomOp::And => int(IntOp::And),
        AtomOp::Or => int(IntOp::Or),
        AtomOp::Xor => int(IntOp::Xor),
        AtomOp::Inc => {
            if old >= b {
                0
            } else {
                old + 1
            }
        }
        AtomOp::Dec => {
            if old == 0 || old > b {
                b
            } else {
                old - 1
            }
        }
        AtomOp::Exch => b,
        AtomOp::Cas => {
            if old == b {
                c
            } else {
                old
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_updates_follow_ptx() {
        assert_eq!(atomic_update(AtomOp::Inc, Ty::U32, 5, 5, 0), 0);
        assert_eq!(atomic_update(AtomOp::Inc, Ty::U32, 4, 5, 0), 5);
        assert_eq!(atomic_update(AtomOp::Dec, Ty::U32, 0, 7, 0), 7);
        assert_eq!(atomic_update(AtomOp::Dec, Ty::U32, 3, 7, 0), 2);
        assert_eq!(atomic_update(AtomOp::Cas, Ty::B32, 3, 3, 9), 9);
        assert_eq!(atomic_update(AtomOp::Cas, Ty::B32, 4, 3, 9), 4);
        assert_eq!(atomic_update(AtomOp::Max, Ty::S32, 0xffff_ffff, 1, 0), 1);
        assert_eq!(
            atomic_update(AtomOp::Max, Ty::U32, 0xffff_ffff, 1, 0),
            0xffff_ffff
        );
        let f = |x: f32| x.to_bits() as u64;
        assert_eq!(
            atomic_update(AtomOp::Add, Ty::F32, f(1.5), f(2.0), 0),
            f(3.5)
        );
        assert_eq!(
            atomic_update(AtomOp::Add, Ty::F32, f(0.0), f(f32::from_bits(1)), 0),
            f(0.0)
        );
    }
}
