//! Convolutions as implicit GEMMs: forward, backward-data and backward-weight, grouped,
//! strided, padded and dilated, each as an [`Operands`] for the GEMM template.
//!
//! With `x [N,C,H,W]`, `w [O,C/G,KH,KW]`, `y [N,O,OH,OW]` and group `g`:
//!
//! | op | m | n | k | A | B |
//! |---|---|---|---|---|---|
//! | forward `y` | (n, oh, ow) | o | (kh, kw, c) | x (im2col) | w |
//! | backward data `dx` | (n, h, w) | c | (kh, kw, o) | dy (col2im gather) | w |
//! | backward weight `dw` | o | (kh, kw, c) | (n, oh, ow) | dy | x (im2col) |
//!
//! A window's channels are its innermost `k` axis ([`calib_ir::window_k`]; a 1x1 window,
//! or channels that no step divides, keep `(c, kh, kw)`), so that the rows of one step
//! share their tap: its window position and padding checks are computed once a step,
//! and each row's channel is the step's plus a constant. A weight gradient orders its
//! `n` the same way, so that the columns a thread loads share their tap too (the
//! loader's `Slot`s: their window positions and checks computed once per tap a step).
//!
//! Input row `ih = oh * s + kh * d - p`; the backward-data gather inverts it,
//! `oh = (h + p - kh * d) / s`, valid when the division is exact and `oh < OH` (see
//! [`crate::window`]). A strided data gradient whose window spans its stride runs
//! phase by phase instead ([`calib_ir::Phases`]): `m` is a phase's positions
//! `(n, h / s_h, w / s_w)`, `k` the phase's taps `(t_h, t_w, o)`, one GEMM group per
//! phase, and no product is a zero the division would have discarded.

use crate::error::Result;
use crate::eval::Emitter;
use crate::flow::Check;
use crate::gemm::{self, Contiguity, Element, Operands, Phase};
use crate::index::Index;
use crate::ptx::Operand;
use crate::window::Axis;
use calib_ir::{taps_outer, window_k, GemmDims, Op, Phases, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Forward,
    BackwardData,
    BackwardWeight,
}

/// One convolution node of a body, with its geometry.
pub(crate) struct Conv {
    kind: Kind,
    /// The node's two operands, in op order.
    a: Value,
    b: Value,
    /// `[N, C, H, W]` of the image convolved and `[N, O, OH, OW]` of the result.
    x: [usize; 4],
    y: [usize; 4],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
    /// A strided 1x1 data gradient computed as a GEMM over the lattice of positions
    /// the convolution read (strides along rows and columns); the rest are zero.
    lattice: Option<[usize; 2]>,
    /// A strided data gradient computed phase by phase ([`calib_ir::Phases`]).
    phases: Option<Phases>,
    /// Which way the kernel's layouts make its operands and result adjacent in memory.
    contiguity: Contiguity,
}

impl Conv {
    /// The convolution at body node `v` as its kernel's GEMM anchor: like
    /// [`Conv::of`], but a strided 1x1 data gradient runs over its lattice only (see
    /// `calib_ir::GemmDims::lattice`), and a strided data gradient whose window spans
    /// its stride phase by phase (`calib_ir::GemmDims::phases`).
    pub fn anchor(cx: &Emitter, v: Value) -> Option<Conv> {
        let mut conv = Conv::of(cx, v)?;
        let dims = GemmDims::of(&cx.kernel.body, v)?;
        (conv.lattice, conv.phases) = (dims.lattice, dims.phases);
        Some(conv)
    }

    /// The convolution at body node `v`, if it is one.
    pub fn of(cx: &Emitter, v: Value) -> Option<Conv> {
        let node = cx.node(v);
        let dims = |u: Value| -> [usize; 4] {
            let s = &cx.ty(u).shape;
            [s[0], s[1], s[2], s[3]]
        };
        let (a, b) = (node.inputs[0], node.inputs[1]);
        let (kind, stride, padding, dilation, groups, x, y, w) = match node.op {
            Op::Conv2d {
                stride,
                padding,
                dilation,
                groups,
            } => (
                Kind::Forward,
                stride,
                padding,
                dilation,
                groups,
                dims(a),
                dims(v),
                dims(b),
            ),
            Op::Conv2dBackwardData {
                stride,
                padding,
                dilation,
                groups,
                ..
            } => (
                Kind::BackwardData,
                stride,
                padding,
                dilation,
                groups,
                dims(v),
                dims(a),
                dims(b),
            ),
            Op::Conv2dBackwardWeight {
                stride,
                padding,
                dilation,
                groups,
                ..
            } => (
                Kind::BackwardWeight,
                stride,
                padding,
                dilation,
                groups,
                dims(a),
                dims(b),
                dims(v),
            ),
            _ => return None,
        };
        let body = &cx.kernel.body;
        let [a_m, b_n] = calib_ir::walks_width(body, v, &cx.input_layouts());
        // A result stored channels-last is adjacent along its channels, `n`.
        let stored_last = body.outputs.iter().enumerate().any(|(i, o)| {
            cx.ty(o.value).shape == cx.ty(v).shape && !cx.output_layout(i).is_row_major()
        });
        let contiguity = Contiguity {
            a_m,
            b_n,
            c_m: kind != Kind::BackwardWeight && !stored_last,
        };
        Some(Conv {
            kind,
            a,
            b,
            x,
            y,
            kernel: [w[2], w[3]],
            stride,
            padding,
            dilation,
            groups,
            lattice: None,
            phases: None,
            contiguity,
        })
    }

    fn c_group(&self) -> usize {
        self.x[1] / self.groups
    }

    fn o_group(&self) -> usize {
        self.y[1] / self.groups
    }

    /// The channels a forward or data-gradient window sums over (`k`'s channel axis).
    fn k_channels(&self) -> usize {
        match self.kind {
            Kind::BackwardData => self.o_group(),
            _ => self.c_group(),
        }
    }

    /// A forward or data-gradient `k` as its channel and its tap `[kh, kw]`, in the
    /// order [`window_k`] gave the axes.
    fn channel_and_tap(&self, k: &[Operand]) -> (Operand, [Operand; 2]) {
        match taps_outer(self.k_channels(), self.kernel) {
            true => (k[2], [k[0], k[1]]),
            false => (k[0], [k[1], k[2]]),
        }
    }

    /// The window along `axis` (0 rows, 1 columns).
    fn axis(&self, axis: usize) -> Axis {
        Axis {
            stride: self.stride[axis],
            padding: self.padding[axis],
            dilation: self.dilation[axis],
            input: self.x[2 + axis],
            output: self.y[2 + axis],
        }
    }

    /// The image `x[n, g * C/G + c, ih, iw]` that output position `(oh, ow)` reads
    /// through tap `(kh, kw)`, zero in the padding.
    fn image(
        &self,
        cx: &mut Emitter,
        [g, c, n]: [Operand; 3],
        o: [Operand; 2],
        k: [Operand; 2],
    ) -> Element {
        let (ih, ch) = self.axis(0).input_pos(cx, o[0], k[0]);
        let (iw, cw) = self.axis(1).input_pos(cx, o[1], k[1]);
        // Padding reads as zero; the tap is read at a clamped position either way, so
        // that a tile's loads need no branches.
        let ih = clamp_unless_known(cx, ih, &ch, self.x[2]);
        let iw = clamp_unless_known(cx, iw, &cw, self.x[3]);
        let channel = cx.b.mad_u32(g, Operand::Int(self.c_group() as i64), c);
        // The image is the first operand of both ops that read one.
        Element {
            value: self.a,
            at: vec![n, channel, ih, iw],
            inside: vec![ch, cw],
        }
    }

    /// Of a phased data gradient, `k = [t_h, t_w, o]`: the gradient `dy[n, o, oh, ow]`
    /// that position `m = (n, i_h, i_w)` of GEMM group `g`'s phase reads through the
    /// phase's taps `t`, at `oh = i_h + b_h - t_h` ([`calib_ir::Phases::first_tap`]).
    fn phased_gradient(
        &self,
        cx: &mut Emitter,
        p: &Phases,
        g: Operand,
        m: &[Operand],
        k: &[Operand],
    ) -> Element {
        let phase = Phase::of(cx, p, g);
        let mut inside = vec![];
        let mut rows = [Operand::Int(0); 2];
        for axis in 0..2 {
            let t = k[axis];
            inside.push(cx.b.lt_u32(t, phase.taps[axis]));
            let shifted = cx.b.add_u32(m[1 + axis], phase.offset[axis]);
            // Above the first row the difference wraps past every extent.
            let row = cx.b.sub_u32(shifted, t);
            let extent = self.y[2 + axis];
            inside.push(cx.b.lt_u32(row, Operand::Int(extent as i64)));
            rows[axis] = cx.clamp_index(row, extent);
        }
        let o =
            cx.b.mad_u32(phase.group, Operand::Int(self.o_group() as i64), k[2]);
        Element {
            value: self.a,
            at: vec![m[0], o, rows[0], rows[1]],
            inside,
        }
    }

    /// Of a phased data gradient: the weight `w[o, c, c_h + s_h * t_h, c_w + s_w * t_w]`
    /// for GEMM group `g`'s phase, zero past the taps it meets.
    fn phased_weight(
        &self,
        cx: &mut Emitter,
        p: &Phases,
        g: Operand,
        k: &[Operand],
        n: Operand,
    ) -> Element {
        let phase = Phase::of(cx, p, g);
        let mut inside = vec![];
        let mut taps = [Operand::Int(0); 2];
        for axis in 0..2 {
            inside.push(cx.b.lt_u32(k[axis], phase.taps[axis]));
            let stride = Operand::Int(p.stride[axis] as i64);
            let tap = cx.b.mad_u32(k[axis], stride, phase.first_tap[axis]);
            taps[axis] = cx.clamp_index(tap, self.kernel[axis]);
        }
        let out =
            cx.b.mad_u32(phase.group, Operand::Int(self.o_group() as i64), k[2]);
        Element {
            value: self.b,
            at: vec![out, n, taps[0], taps[1]],
            inside,
        }
    }

    /// The weight `w[g * O/G + o, c, kh, kw]`.
    fn weight(&self, cx: &mut Emitter, [g, o, c]: [Operand; 3], k: [Operand; 2]) -> Element {
        let out = cx.b.mad_u32(g, Operand::Int(self.o_group() as i64), o);
        Element::whole(self.b, vec![out, c, k[0], k[1]])
    }
}

impl Operands for Conv {
    fn dims(&self) -> GemmDims {
        if let Some(lattice) = self.lattice {
            let [n, _, oh, ow] = self.y;
            return GemmDims {
                groups: self.groups,
                m: vec![n, oh, ow],
                n: vec![self.c_group()],
                k: vec![self.o_group(), 1, 1],
                lattice: Some(lattice),
                phases: None,
            };
        }
        if let Some(p) = self.phases {
            let [n, _, h, w] = self.x;
            return GemmDims {
                groups: self.groups * p.count(),
                m: vec![n, h / p.stride[0], w / p.stride[1]],
                n: vec![self.c_group()],
                k: vec![p.most_taps(0), p.most_taps(1), self.o_group()],
                lattice: None,
                phases: Some(p),
            };
        }
        let [n, _, h, w] = self.x;
        let [_, _, oh, ow] = self.y;
        let (cg, og) = (self.c_group(), self.o_group());
        let (m, n_, k) = match self.kind {
            Kind::Forward => (vec![n, oh, ow], vec![og], window_k(cg, self.kernel)),
            Kind::BackwardData => (vec![n, h, w], vec![cg], window_k(og, self.kernel)),
            Kind::BackwardWeight => (vec![og], window_k(cg, self.kernel), vec![n, oh, ow]),
        };
        GemmDims {
            groups: self.groups,
            m,
            n: n_,
            k,
            lattice: None,
            phases: None,
        }
    }

    fn lattice(&self) -> Option<[usize; 2]> {
        self.lattice
    }

    fn contiguity(&self) -> Contiguity {
        self.contiguity
    }

    fn a_element(&self, cx: &mut Emitter, g: Operand, m: &[Operand], k: &[Operand]) -> Element {
        match self.kind {
            Kind::Forward => {
                let (c, tap) = self.channel_and_tap(k);
                self.image(cx, [g, c, m[0]], [m[1], m[2]], tap)
            }
            Kind::BackwardData if self.phases.is_some() => {
                let p = self.phases.expect("phases");
                self.phased_gradient(cx, &p, g, m, k)
            }
            Kind::BackwardData if self.lattice.is_some() => {
                let o = cx.b.mad_u32(g, Operand::Int(self.o_group() as i64), k[0]);
                Element::whole(self.a, vec![m[0], o, m[1], m[2]])
            }
            Kind::BackwardData => {
                let (o, [kh, kw]) = self.channel_and_tap(k);
                let (oh, mut inside) = self.axis(0).output_pos(cx, m[1], kh);
                let (ow, cw) = self.axis(1).output_pos(cx, m[2], kw);
                inside.extend(cw);
                let oh = cx.clamp_index(oh, self.y[2]);
                let ow = cx.clamp_index(ow, self.y[3]);
                let o = cx.b.mad_u32(g, Operand::Int(self.o_group() as i64), o);
                Element {
                    value: self.a,
                    at: vec![m[0], o, oh, ow],
                    inside,
                }
            }
            Kind::BackwardWeight => {
                let o = cx.b.mad_u32(g, Operand::Int(self.o_group() as i64), m[0]);
                Element::whole(self.b, vec![k[0], o, k[1], k[2]])
            }
        }
    }

    fn b_element(&self, cx: &mut Emitter, g: Operand, k: &[Operand], n: &[Operand]) -> Element {
        match self.kind {
            Kind::Forward => {
                let (c, tap) = self.channel_and_tap(k);
                self.weight(cx, [g, n[0], c], tap)
            }
            Kind::BackwardData => match self.phases {
                Some(p) => self.phased_weight(cx, &p, g, k, n[0]),
                None => {
                    let (o, tap) = self.channel_and_tap(k);
                    self.weight(cx, [g, o, n[0]], tap)
                }
            },
            Kind::BackwardWeight => {
                let (c, tap) = self.channel_and_tap(n);
                self.image(cx, [g, c, k[0]], [k[1], k[2]], tap)
            }
        }
    }

    fn c(&self, cx: &mut Emitter, g: Operand, m: &[Operand], n: &[Operand]) -> Vec<Operand> {
        match self.kind {
            Kind::Forward => {
                let o = cx.b.mad_u32(g, Operand::Int(self.o_group() as i64), n[0]);
                vec![m[0], o, m[1], m[2]]
            }
            Kind::BackwardData if self.phases.is_some() => {
                let p = self.phases.expect("phases");
                let phase = Phase::of(cx, &p, g);
                let c =
                    cx.b.mad_u32(phase.group, Operand::Int(self.c_group() as i64), n[0]);
                let at = [1, 2].map(|a| {
                    let stride = Operand::Int(p.stride[a - 1] as i64);
                    cx.b.mad_u32(m[a], stride, phase.r[a - 1])
                });
                vec![m[0], c, at[0], at[1]]
            }
            Kind::BackwardData => {
                let c = cx.b.mad_u32(g, Operand::Int(self.c_group() as i64), n[0]);
                match self.lattice {
                    Some([sh, sw]) => {
                        let h = cx.b.mul_u32(m[1], Operand::Int(sh as i64));
                        let w = cx.b.mul_u32(m[2], Operand::Int(sw as i64));
                        vec![m[0], c, h, w]
                    }
                    None => vec![m[0], c, m[1], m[2]],
                }
            }
            Kind::BackwardWeight => {
                let o = cx.b.mad_u32(g, Operand::Int(self.o_group() as i64), m[0]);
                let (c, [kh, kw]) = self.channel_and_tap(n);
                vec![o, c, kh, kw]
            }
        }
    }

    fn c_contiguous(&self) -> usize {
        // A result stored channels-last keeps a group's channels (`n`) adjacent.
        if !self.contiguity.c_m && self.kind != Kind::BackwardWeight {
            return match self.kind {
                Kind::Forward => self.o_group(),
                _ => self.c_group(),
            };
        }
        match (self.kind, self.lattice) {
            // Lattice positions, and a phase's, are strides apart.
            (_, Some(_)) => 1,
            (Kind::BackwardData, None) if self.phases.is_some() => 1,
            (Kind::Forward, None) => self.y[2] * self.y[3],
            (Kind::BackwardData, None) => self.x[2] * self.x[3],
            // Taps outside the channels: consecutive `n` are a window apart.
            (Kind::BackwardWeight, None) if taps_outer(self.c_group(), self.kernel) => 1,
            (Kind::BackwardWeight, None) => self.c_group() * self.kernel[0] * self.kernel[1],
        }
    }

    fn split(&self, cx: &mut Emitter, at: &[Operand]) -> (Operand, Vec<Operand>, Vec<Operand>) {
        let (cg, og) = (self.c_group(), self.o_group());
        match self.kind {
            Kind::Forward => {
                let (g, o) = (cx.b.div_u32(at[1], og), cx.b.rem_u32(at[1], og));
                (g, vec![at[0], at[2], at[3]], vec![o])
            }
            Kind::BackwardData if self.phases.is_some() => {
                let p = self.phases.expect("phases");
                let (group, c) = (cx.b.div_u32(at[1], cg), cx.b.rem_u32(at[1], cg));
                let [sh, sw] = p.stride;
                let (rh, rw) = (cx.b.rem_u32(at[2], sh), cx.b.rem_u32(at[3], sw));
                let row_major = cx.b.mad_u32(rh, Operand::Int(sw as i64), rw);
                let j = match p.reversed() {
                    true => cx.b.sub_u32(Operand::Int(p.count() as i64 - 1), row_major),
                    false => row_major,
                };
                let g = cx.b.mad_u32(group, Operand::Int(p.count() as i64), j);
                let (h, w) = (cx.b.div_u32(at[2], sh), cx.b.div_u32(at[3], sw));
                (g, vec![at[0], h, w], vec![c])
            }
            Kind::BackwardData => {
                let (g, c) = (cx.b.div_u32(at[1], cg), cx.b.rem_u32(at[1], cg));
                // Off the lattice this names the lattice position below; callers check.
                let (h, w) = match self.lattice {
                    Some([sh, sw]) => (cx.b.div_u32(at[2], sh), cx.b.div_u32(at[3], sw)),
                    None => (at[2], at[3]),
                };
                (g, vec![at[0], h, w], vec![c])
            }
            Kind::BackwardWeight => {
                let (g, o) = (cx.b.div_u32(at[0], og), cx.b.rem_u32(at[0], og));
                let n = match taps_outer(cg, self.kernel) {
                    true => vec![at[2], at[3], at[1]],
                    false => vec![at[1], at[2], at[3]],
                };
                (g, vec![o], n)
            }
        }
    }
}

/// `pos` clamped into `0..extent` unless constants already decided `check`.
fn clamp_unless_known(cx: &mut Emitter, pos: Operand, check: &Check, extent: usize) -> Operand {
    match check {
        Ok(_) => cx.clamp_index(pos, extent),
        Err(_) => pos,
    }
}

/// Convolution node `v` at `at`, one product at a time (for a convolution that is not
/// its kernel's anchor).
pub(crate) fn serial(cx: &mut Emitter, v: Value, at: &Index) -> Result<Operand> {
    let conv = Conv::of(cx, v).ok_or_else(|| cx.unsupported(v, "not a convolution"))?;
    let coords = cx.coords(at, &cx.ty(v).shape);
    gemm::serial(cx, &conv, &coords)
}
