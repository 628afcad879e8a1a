//! The adjoint of max pooling: each window's gradient goes to its first maximum.

use super::{tap, windows_containing, zero, LOWEST};
use crate::error::Result;
use crate::eval::Emitter;
use crate::flow::Check;
use crate::index::Index;
use crate::ptx::{ins, Operand, Reg, Ty};
use crate::window::Axis;
use calib_ir::Value;
use std::collections::HashMap;

/// The widest window (along either axis) whose max-pooling adjoint branches on residues
/// ([`max_pool_backward`]): 3x3 windows of stride 2 need four branches sharing up to 25
/// loads; wider ones scan each window instead.
const BRANCHED_WINDOWS: usize = 3;
/// A position no window element has.
const NOWHERE: i64 = u32::MAX as i64;

/// Each window's gradient goes to its first maximum in row-major order, a NaN counting
/// as the maximum (PyTorch's rule: the first NaN if there is one, else the first
/// largest value). An input position gathers from the windows whose first maximum it
/// is, and it can tell without finding the maximum: the value here is a window's first
/// maximum iff no tap before it is NaN or at least as large, and no tap after it is
/// larger or NaN (unless the value here is NaN itself, which only an earlier NaN beats).
///
/// Which windows contain a position, and as which of their taps, depends on
/// `(at + padding) % stride` along each axis. The kernel branches on those residues, so
/// that within a branch every tap lies at a constant offset from `at` and the windows
/// share the loads of the positions they have in common (a 3x3 window of stride 2
/// reaches 25 positions from its up to four windows, not 36).
pub(super) fn max_pool_backward(
    cx: &mut Emitter,
    [x, dy]: [Value; 2],
    at: &[Operand],
    w: [Axis; 2],
    kernel: [usize; 2],
) -> Result<Operand> {
    if kernel.iter().any(|&k| k > BRANCHED_WINDOWS) {
        return max_pool_backward_by_scan(cx, [x, dy], at, w, kernel);
    }
    let acc = zero(cx);
    let here = cx.value(x, &Index::coords(at.to_vec()))?;
    let here = cx.b.materialize(here, Ty::F32);
    let here_nan = cx.b.setp("nan", Ty::F32, here.into(), here.into());
    let number = cx.b.reg(Ty::Pred);
    ins!(cx.b, "not.pred {number}, {here_nan}");
    let [(rh, qh), (rw, qw)] = [0, 1].map(|a| {
        let shifted = cx.b.add_u32(at[2 + a], Operand::Int(w[a].padding as i64));
        (
            cx.b.rem_u32(shifted, w[a].stride),
            cx.b.div_u32(shifted, w[a].stride),
        )
    });
    let windows = Windows {
        x,
        dy,
        at,
        w,
        kernel,
        here,
        number,
        quotient: [qh, qw],
    };
    for residue_h in 0..w[0].stride {
        for residue_w in 0..w[1].stride {
            let residues = vec![equals(cx, rh, residue_h), equals(cx, rw, residue_w)];
            // Neighbouring threads differ in column, not (mostly) in row: a warp runs
            // every column branch but only its row's.
            cx.b.enter_loop(1.0 / w[0].stride as f64);
            cx.when_all(residues, |cx| {
                windows.gather(cx, [residue_h, residue_w], acc)
            })?;
            cx.b.exit_loop();
        }
    }
    Ok(acc.into())
}

/// [`max_pool_backward`] by finding each window's first maximum: for windows wider than
/// [`BRANCHED_WINDOWS`], whose residue branches would repeat too much code.
fn max_pool_backward_by_scan(
    cx: &mut Emitter,
    [x, dy]: [Value; 2],
    at: &[Operand],
    w: [Axis; 2],
    kernel: [usize; 2],
) -> Result<Operand> {
    let acc = zero(cx);
    let here = cx.b.mad_u32(at[2], Operand::Int(w[1].input as i64), at[3]);
    windows_containing(cx, at, w, kernel, &mut |cx, oh, ow, contains| {
        let best = cx.b.materialize(LOWEST, Ty::F32);
        let pos = cx.b.materialize(Operand::Int(NOWHERE), Ty::U32);
        cx.for_each_small(&kernel, &mut |cx, k| {
            let ([ih, iw], inside) = tap(cx, w, [oh, ow], k);
            let v = cx.value(x, &Index::coords(vec![at[0], at[1], ih, iw]))?;
            let v = cx.b.materialize(v, Ty::F32);
            // better = inside && (first || (best is a number && (v > best || v is NaN)))
            let first = cx.b.setp("eq", Ty::U32, pos.into(), Operand::Int(NOWHERE));
            let number = cx.b.setp("num", Ty::F32, best.into(), best.into());
            let above = cx.b.setp("gtu", Ty::F32, v.into(), best.into());
            let better = cx.b.reg(Ty::Pred);
            ins!(cx.b, "and.pred {better}, {number}, {above}");
            ins!(cx.b, "or.pred {better}, {better}, {first}");
            match inside {
                Ok(p) => ins!(cx.b, "and.pred {better}, {better}, {p}"),
                Err(true) => {}
                Err(false) => return Ok(()),
            }
            let flat = cx.b.mad_u32(ih, Operand::Int(w[1].input as i64), iw);
            ins!(cx.b, "@{better} mov.f32 {best}, {v}");
            ins!(cx.b, "@{better} mov.u32 {pos}, {flat}");
            Ok(())
        })?;
        let mine = cx.b.setp("eq", Ty::U32, pos.into(), here);
        let g = cx.select_or_zero(vec![Ok(mine), contains], Ty::F32, |cx| {
            cx.value(dy, &Index::coords(vec![at[0], at[1], oh, ow]))
        })?;
        ins!(cx.b, "add.rn.f32 {acc}, {acc}, {g}");
        Ok(())
    })?;
    Ok(acc.into())
}

/// Whether `r` equals `value`.
fn equals(cx: &mut Emitter, r: Operand, value: usize) -> Check {
    match r.as_int() {
        Some(r) => Err(r == value as i64),
        None => Ok(cx.b.setp("eq", Ty::U32, r, Operand::Int(value as i64))),
    }
}

/// What the branches of [`max_pool_backward`] share.
struct Windows<'a> {
    x: Value,
    dy: Value,
    at: &'a [Operand],
    w: [Axis; 2],
    kernel: [usize; 2],
    /// The pooled input at `at`, and whether it is not NaN.
    here: Reg,
    number: Reg,
    /// `(at + padding) / stride` along each axis: the last window containing `at`.
    quotient: [Operand; 2],
}

/// One tap of the pooled input at a constant offset from `at`.
#[derive(Clone, Copy)]
struct Tap {
    value: Reg,
    inside: Check,
    /// Inside and NaN.
    nan: Check,
}

impl Windows<'_> {
    /// Adds to `acc` the gradient of every window whose first maximum `at` is, where
    /// `at` is tap `residue + j * stride` of the `j`-th window back along each axis.
    fn gather(&self, cx: &mut Emitter, residue: [usize; 2], acc: Reg) -> Result<()> {
        // Along each axis: the windows containing `at`, and the tap of each it is.
        let candidates = [0, 1].map(|a| {
            (0..)
                .map(|j| (j, residue[a] + j * self.w[a].stride))
                .take_while(|&(_, t)| t < self.kernel[a])
                .map(|(j, t)| (cx.b.sub_u32(self.quotient[a], Operand::Int(j as i64)), t))
                .collect::<Vec<_>>()
        });
        let mut taps: HashMap<[i64; 2], Tap> = HashMap::new();
        for &(oh, th) in &candidates[0] {
            for &(ow, tw) in &candidates[1] {
                let (mut before, mut after) = (vec![], vec![]);
                for kh in 0..self.kernel[0] {
                    for kw in 0..self.kernel[1] {
                        if (kh, kw) == (th, tw) {
                            continue;
                        }
                        let d = [kh as i64 - th as i64, kw as i64 - tw as i64];
                        let tap = match taps.get(&d) {
                            Some(t) => *t,
                            None => {
                                let t = self.tap(cx, d)?;
                                taps.insert(d, t);
                                t
                            }
                        };
                        let earlier = (kh, kw) < (th, tw);
                        // Ties go to the earlier tap; a NaN beats everything before it.
                        let cmp = if earlier { "ge" } else { "gtu" };
                        let beats = match tap.inside {
                            Err(false) => continue,
                            Err(true) => {
                                cx.b.setp(cmp, Ty::F32, tap.value.into(), self.here.into())
                            }
                            Ok(inside) => {
                                let p = cx.b.reg(Ty::Pred);
                                let (v, here) = (tap.value, self.here);
                                ins!(cx.b, "setp.{cmp}.and.f32 {p}, {v}, {here}, {inside}");
                                p
                            }
                        };
                        if earlier {
                            before.push(beats);
                            before.extend(tap.nan.ok());
                        } else {
                            after.push(beats);
                        }
                    }
                }
                // A later tap that is larger or NaN wins unless the value here is NaN.
                let mut beaten = before;
                if let Some(later) = any(cx, after) {
                    let p = cx.b.reg(Ty::Pred);
                    ins!(cx.b, "and.pred {p}, {later}, {}", self.number);
                    beaten.push(p);
                }
                let mut mine = vec![
                    cx.b.lt_u32(oh, Operand::Int(self.w[0].output as i64)),
                    cx.b.lt_u32(ow, Operand::Int(self.w[1].output as i64)),
                ];
                if let Some(beaten) = any(cx, beaten) {
                    let first = cx.b.reg(Ty::Pred);
                    ins!(cx.b, "not.pred {first}, {beaten}");
                    mine.push(Ok(first));
                }
                let oh = cx.clamp_index(oh, self.w[0].output);
                let ow = cx.clamp_index(ow, self.w[1].output);
                let at = self.at;
                let g = cx.select_or_zero(mine, Ty::F32, |cx| {
                    cx.value(self.dy, &Index::coords(vec![at[0], at[1], oh, ow]))
                })?;
                ins!(cx.b, "add.rn.f32 {acc}, {acc}, {g}");
            }
        }
        Ok(())
    }

    /// The pooled input at offset `d` from `at`: loaded at the position clamped into
    /// the image (the load needs no branch), with whether it really is inside.
    fn tap(&self, cx: &mut Emitter, d: [i64; 2]) -> Result<Tap> {
        let mut inside = vec![];
        let mut pos = [Operand::Int(0); 2];
        for a in 0..2 {
            let p = match d[a] {
                d if d >= 0 => cx.b.add_u32(self.at[2 + a], Operand::Int(d)),
                d => cx.b.sub_u32(self.at[2 + a], Operand::Int(-d)),
            };
            // A position before the image wraps around to a huge one.
            inside.push(cx.b.lt_u32(p, Operand::Int(self.w[a].input as i64)));
            pos[a] = cx.clamp_index(p, self.w[a].input);
        }
        let inside = cx.all_of(inside);
        let at = vec![self.at[0], self.at[1], pos[0], pos[1]];
        let value = cx.value(self.x, &Index::coords(at))?;
        let value = cx.b.materialize(value, Ty::F32);
        let nan = match inside {
            Err(false) => Err(false),
            Err(true) => Ok(cx.b.setp("nan", Ty::F32, value.into(), value.into())),
            Ok(q) => {
                let p = cx.b.reg(Ty::Pred);
                ins!(cx.b, "setp.nan.and.f32 {p}, {value}, {value}, {q}");
                Ok(p)
            }
        };
        Ok(Tap { value, inside, nan })
    }
}

/// One predicate for "any of `ps` holds", if there are any.
fn any(cx: &mut Emitter, ps: Vec<Reg>) -> Option<Reg> {
    ps.into_iter().reduce(|a, b| {
        let p = cx.b.reg(Ty::Pred);
        ins!(cx.b, "or.pred {p}, {a}, {b}");
        p
    })
}
