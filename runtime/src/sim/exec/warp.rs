//! A warp: 32 lanes' registers and the scheduling of divergent control flow.
//!
//! # The divergence model
//!
//! Lanes that share a program counter form a *group*; a converged warp is one group. Each
//! step runs the group with the lowest program counter for all of its lanes at once.
//! Branches split a group into the lanes that jump and those that fall through; groups
//! that arrive at the same instruction merge. Running the lowest PC first makes the lanes
//! that skip ahead wait at the join point of structured code (the end of an `if`, the exit
//! of a loop) until the others catch up, so warps reconverge where CUDA's do, without
//! analysing the control-flow graph.
//!
//! One consequence: a lane spinning on a lock that another lane of its own warp holds
//! never lets that lane run (pre-Volta behaviour), and the launch ends at the step limit.
//!
//! Warp-wide instructions (`shfl.sync`, `vote.sync`, `mma.sync`, `ldmatrix`) execute once
//! for the whole group, which sees every lane's registers; a member mask must name
//! exactly the non-exited lanes that are in the group, and the `.aligned` `mma` and
//! `ldmatrix` need all 32 lanes.

use super::block::{BlockEnv, BlockState, LaneFault};
use super::{async_copy, collective, ldmatrix, memory, mma};
use crate::sim::alu;
use crate::sim::ast::{BoolOp, Instruction, Op, Operand, PredSrc, Reg, Special};
use crate::sim::error::FaultKind;

pub(crate) const WARP: usize = 32;

/// Lanes at one program counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Group {
    pub pc: usize,
    pub mask: u32,
    /// Arrived at the `bar.sync` at `pc` and waiting for the block.
    pub waiting: bool,
}

/// Lane indices of a mask, lowest first.
pub(crate) fn lanes(mask: u32) -> impl Iterator<Item = usize> {
    let mut m = mask;
    std::iter::from_fn(move || {
        (m != 0).then(|| {
            let lane = m.trailing_zeros() as usize;
            m &= m - 1;
            lane
        })
    })
}

/// What one call to [`Warp::step`] achieved.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    Ran,
    /// Every live lane waits at a barrier, or every lane has exited.
    Blocked,
}

pub(crate) struct Warp {
    /// Index of the warp in its block.
    pub index: u32,
    /// `regs[r][lane]`: raw bits of register `r`.
    pub regs: Vec<[u64; WARP]>,
    /// `init[r]`: lanes that have written register `r`.
    pub init: Vec<u32>,
    pub groups: Vec<Group>,
    /// Lanes that have exited, or that do not exist in a partial last warp.
    pub exited: u32,
    pub steps: u64,
}

impl Warp {
    pub fn new() -> Self {
        Warp {
            index: 0,
            regs: Vec::new(),
            init: Vec::new(),
            groups: Vec::new(),
            exited: 0,
            steps: 0,
        }
    }

    /// Readies the warp for warp `index` of a new block with `live` lanes in use.
    pub fn reset(&mut self, index: u32, registers: usize, live: u32) {
        self.index = index;
        if self.regs.len() < registers {
            self.regs.resize(registers, [0; WARP]);
        }
        self.init.clear();
        self.init.resize(registers, 0);
        self.groups.clear();
        self.groups.push(Group {
            pc: 0,
            mask: live,
            waiting: false,
        });
        self.exited = !live;
        self.steps = 0;
    }

    pub fn done(&self) -> bool {
        self.groups.is_empty()
    }

    /// Puts `mask` at `pc`, merging with a group already there.
    fn place(&mut self, pc: usize, mask: u32, waiting: bool) {
        if mask == 0 {
            return;
        }
        match self
            .groups
            .iter_mut()
            .find(|g| g.pc == pc && g.waiting == waiting)
        {
            Some(g) => g.mask |= mask,
            None => self.groups.push(Group { pc, mask, waiting }),
        }
    }

    /// Releases lanes waiting at a barrier to the next instruction.
    pub fn release_barrier(&mut self) {
        let waiting: Vec<Group> = self.groups.iter().copied().filter(|g| g.waiting).collect();
        self.groups.retain(|g| !g.waiting);
        for g in waiting {
            self.place(g.pc + 1, g.mask, false);
        }
    }

    /// The values of `operand` in every lane of `mask`; registers must be initialized.
    pub fn read(
        &self,
        env: &BlockEnv,
        operand: Operand,
        mask: u32,
    ) -> Result<[u64; WARP], LaneFault> {
        match operand {
            Operand::Reg(r) => {
                self.check_init(env, r, mask)?;
                Ok(self.regs[r.0 as usize])
            }
            Operand::Imm(v) => Ok([v; WARP]),
            Operand::Special(s) => {
                let mut out = [0; WARP];
                for lane in lanes(mask) {
                    out[lane] = self.special(env, s, lane);
                }
                Ok(out)
            }
        }
    }

    pub fn check_init(&self, env: &BlockEnv, r: Reg, mask: u32) -> Result<(), LaneFault> {
        let missing = mask & !self.init[r.0 as usize];
        if missing == 0 {
            return Ok(());
        }
        Err(LaneFault::new(
            missing.trailing_zeros(),
            FaultKind::UninitializedRegister {
                register: env.kernel.registers[r.0 as usize].name.clone(),
            },
        ))
    }

    pub fn write(&mut self, r: Reg, mask: u32, values: &[u64; WARP]) {
        let dst = &mut self.regs[r.0 as usize];
        for lane in lanes(mask) {
            dst[lane] = values[lane];
        }
        self.init[r.0 as usize] |= mask;
    }

    /// Lanes of `mask` where the predicate holds.
    pub fn pred_mask(&self, env: &BlockEnv, p: PredSrc, mask: u32) -> Result<u32, LaneFault> {
        let values = self.read(env, p.operand, mask)?;
        let mut out = 0;
        for lane in lanes(mask) {
            if (values[lane] & 1 != 0) != p.negated {
                out |= 1 << lane;
            }
        }
        Ok(out)
    }

    fn special(&self, env: &BlockEnv, s: Special, lane: usize) -> u64 {
        let linear = self.index as usize * WARP + lane;
        let v = match s {
            Special::Tid(d) => env.thread_index(linear)[d],
            Special::Ntid(d) => env.block[d],
            Special::Ctaid(d) => env.ctaid[d],
            Special::Nctaid(d) => env.grid[d],
            Special::LaneId => lane as u32,
            Special::WarpId => self.index,
            Special::NWarpId => env.warps() as u32,
            Special::WarpSize => WARP as u32,
        };
        v as u64
    }

    /// Runs one instruction for the lowest-PC runnable group.
    pub fn step(
        &mut self,
        env: &BlockEnv,
        state: &mut BlockState,
    ) -> Result<Progress, (usize, LaneFault)> {
        let Some(i) = (0..self.groups.len())
            .filter(|&i| !self.groups[i].waiting)
            .min_by_key(|&i| self.groups[i].pc)
        else {
            return Ok(Progress::Blocked);
        };
        let Group { pc, mask, .. } = self.groups[i];
        self.steps += 1;
        if self.steps > env.options.max_warp_steps {
            let limit = env.options.max_warp_steps;
            return Err((
                pc,
                LaneFault::new(mask.trailing_zeros(), FaultKind::StepLimit { limit }),
            ));
        }
        let Some(instr) = env.kernel.body.get(pc) else {
            // Running off the end of the body ends the thread, as `ret` would.
            self.groups.swap_remove(i);
            self.exited |= mask;
            return Ok(Progress::Ran);
        };
        state.stats.warp_instructions += 1;
        state.stats.thread_instructions += mask.count_ones() as u64;
        state.event = state.event.wrapping_add(1);
        let active = match instr.guard {
            None => mask,
            Some(g) => self.pred_mask(env, g, mask).map_err(|f| (pc, f))?,
        };
        self.groups.swap_remove(i);
        let next = match &instr.op {
            Op::Bra { target } => {
                self.place(*target, active, false);
                mask & !active
            }
            Op::Exit => {
                self.exited |= active;
                mask & !active
            }
            Op::Bar { id } => {
                self.read(env, *id, active).map_err(|f| (pc, f))?;
                self.place(pc, active, true);
                mask & !active
            }
            _ => {
                // Put the group back first so a fault leaves the warp consistent.
                let result = self.execute(env, state, pc, instr, active);
                self.place(pc + 1, mask, false);
                result.map_err(|f| (pc, f))?;
                return Ok(Progress::Ran);
            }
        };
        self.place(pc + 1, next, false);
        Ok(Progress::Ran)
    }

    /// Executes a non-control instruction for the lanes of `active`.
    fn execute(
        &mut self,
        env: &BlockEnv,
        state: &mut BlockState,
        pc: usize,
        instr: &Instruction,
        active: u32,
    ) -> Result<(), LaneFault> {
        if active == 0 {
            return Ok(());
        }
        match &instr.op {
            Op::Alu { alu, dst, src } => {
                let mut args = [[0u64; WARP]; 3];
                for (slot, operand) in args.iter_mut().zip(src) {
                    *slot = self.read(env, *operand, active)?;
                }
                let mut out = [0u64; WARP];
                for lane in lanes(active) {
                    out[lane] = alu
                        .apply(args[0][lane], args[1][lane], args[2][lane])
                        .map_err(|_| LaneFault::new(lane as u32, FaultKind::DivideByZero))?;
                }
                self.write(*dst, active, &out);
            }
            Op::Setp {
                cmp,
                ty,
                ftz,
                p,
                q,
                a,
                b,
                combine,
            } => {
                let (a, b) = (self.read(env, *a, active)?, self.read(env, *b, active)?);
                let c = match combine {
                    Some((_, c)) => self.pred_mask(env, *c, active)?,
                    None => 0,
                };
                let (mut pv, mut qv) = ([0u64; WARP], [0u64; WARP]);
                for lane in lanes(active) {
                    let t = alu::compare(*cmp, *ty, *ftz, a[lane], b[lane]);
                    let cl = c >> lane & 1 != 0;
                    let join = |x: bool| match combine {
                        None => x,
                        Some((BoolOp::And, _)) => x && cl,
                        Some((BoolOp::Or, _)) => x || cl,
                        Some((BoolOp::Xor, _)) => x ^ cl,
                    };
                    pv[lane] = join(t) as u64;
                    qv[lane] = join(!t) as u64;
                }
                self.write(*p, active, &pv);
                if let Some(q) = q {
                    self.write(*q, active, &qv);
                }
            }
            Op::Ld {
                space,
                ty,
                dst,
                addr,
            } => memory::load(self, env, state, pc, *space, *ty, dst, *addr, active)?,
            Op::St {
                space,
                ty,
                src,
                addr,
            } => memory::store(self, env, state, pc, *space, *ty, src, *addr, active)?,
            Op::Atom { .. } => memory::atomic(self, env, state, pc, &instr.op, active)?,
            Op::Shfl { .. } | Op::Vote { .. } => collective::execute(self, env, &instr.op, active)?,
            Op::Fence => {}
            Op::Unpack { parts, src, bits } => {
                let v = self.read(env, *src, active)?;
                let mask = crate::sim::types::width_mask(*bits);
                self.write(parts[0], active, &v.map(|x| x & mask));
                self.write(parts[1], active, &v.map(|x| x >> bits & mask));
            }
            Op::Mma(m) => mma::execute(self, env, m, active)?,
            Op::Ldmatrix { trans, dst, addr } => {
                ldmatrix::execute(self, env, state, pc, *trans, dst, *addr, active)?
            }
            Op::CpAsync {
                dst,
                src,
                bytes,
                src_size,
            } => async_copy::issue(self, env, state, pc, *dst, *src, *bytes, *src_size, active)?,
            Op::CpAsyncCommit => async_copy::commit(self, state, active),
            Op::CpAsyncWait {
                newest_pending,
                commit,
            } => async_copy::wait(self, env, state, *newest_pending, *commit, active)?,
            Op::Bra { .. } | Op::Exit | Op::Bar { .. } => {
                unreachable!("control flow handled in step")
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_lists_set_bits_in_order() {
        assert_eq!(lanes(0b1010_0001).collect::<Vec<_>>(), vec![0, 5, 7]);
        assert_eq!(lanes(1 << 31).collect::<Vec<_>>(), vec![31]);
        assert_eq!(lanes(0).count(), 0);
    }

    #[test]
    fn groups_merge_at_one_pc_and_barriers_release_to_the_next() {
        let mut w = Warp::new();
        w.reset(0, 2, 0xffff);
        w.groups.clear();
        w.place(4, 0x00ff, false);
        w.place(4, 0xff00, false);
        assert_eq!(
            w.groups,
            vec![Group {
                pc: 4,
                mask: 0xffff,
                waiting: false
            }]
        );
        w.groups.clear();
        w.place(7, 0x0f, true);
        w.place(7, 0xf0, true);
        w.release_barrier();
        assert_eq!(
            w.groups,
            vec![Group {
                pc: 8,
                mask: 0xff,
                waiting: false
            }]
        );
        assert_eq!(w.exited, !0xffff);
    }
}
