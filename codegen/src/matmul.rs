//! `matmul` (`[M,K] x [K,N]`, either operand transposed) as an [`Operands`] for the GEMM
//! template.

use crate::error::Result;
use crate::eval::Emitter;
use crate::gemm::{self, Contiguity, Element, Operands};
use crate::index::Index;
use crate::ptx::Operand;
use calib_ir::{GemmDims, Op, Value};

/// One matmul node of a body.
pub(crate) struct MatMul {
    a: Value,
    b: Value,
    transpose_a: bool,
    transpose_b: bool,
    m: usize,
    n: usize,
    k: usize,
}

impl MatMul {
    /// The matmul at body node `v`, if it is one.
    pub fn of(cx: &Emitter, v: Value) -> Option<MatMul> {
        let node = cx.node(v);
        let Op::MatMul {
            transpose_a,
            transpose_b,
        } = node.op
        else {
            return None;
        };
        let a = &cx.ty(node.inputs[0]).shape;
        Some(MatMul {
            a: node.inputs[0],
            b: node.inputs[1],
            transpose_a,
            transpose_b,
            m: node.ty.shape[0],
            n: node.ty.shape[1],
            k: if transpose_a { a[0] } else { a[1] },
        })
    }
}

impl Operands for MatMul {
    fn dims(&self) -> GemmDims {
        GemmDims {
            groups: 1,
            m: vec![self.m],
            n: vec![self.n],
            k: vec![self.k],
            lattice: None,
            phases: None,
        }
    }

    fn contiguity(&self) -> Contiguity {
        Contiguity {
            a_m: self.transpose_a,
            b_n: !self.transpose_b,
            c_m: false,
        }
    }

    fn a_element(&self, _: &mut Emitter, _: Operand, m: &[Operand], k: &[Operand]) -> Element {
        let at = if self.transpose_a {
            vec![k[0], m[0]]
        } else {
            vec![m[0], k[0]]
        };
        Element::whole(self.a, at)
    }

    fn b_element(&self, _: &mut Emitter, _: Operand, k: &[Operand], n: &[Operand]) -> Element {
        let at = if self.transpose_b {
            vec![n[0], k[0]]
        } else {
            vec![k[0], n[0]]
        };
        Element::whole(self.b, at)
    }

    fn c(&self, _: &mut Emitter, _: Operand, m: &[Operand], n: &[Operand]) -> Vec<Operand> {
        vec![m[0], n[0]]
    }

    fn c_contiguous(&self) -> usize {
        self.dims().n[0]
    }

    fn split(&self, _: &mut Emitter, at: &[Operand]) -> (Operand, Vec<Operand>, Vec<Operand>) {
        (Operand::Int(0), vec![at[0]], vec![at[1]])
    }
}

/// Matmul node `v` at `at`, one product at a time.
pub(crate) fn serial(cx: &mut Emitter, v: Value, at: &Index) -> Result<Operand> {
    let mm = MatMul::of(cx, v).ok_or_else(|| cx.unsupported(v, "not a matmul"))?;
    let coords = cx.coords(at, &cx.ty(v).shape);
    gemm::serial(cx, &mm, &coords)
}
