//! The interpreter's finite check (`Reference::checking_finite`, `calib train
//! --check-finite`): every value is looked at as it is made, and the run stops at the
//! first op that *created* a non-finite value, naming its node, op and scope.
//!
//! An op is blamed when its output holds a NaN and none of its operands does, or an
//! infinity while all its operands are finite. Ops that only carry a non-finite value
//! along are not: graphs use `-inf` constants as masks (max pooling's padding), and
//! the op that matters is the one where finite arithmetic first broke down. Bound
//! inputs and parameters must be finite outright: a poisoned state is the caller's
//! problem, not any op's.

use crate::finite::Finiteness;
use crate::{HostTensor, OpError, RuntimeError};
use calib_ir::Node;

/// What kinds of non-finite values a value holds.
#[derive(Clone, Copy, Debug, Default)]
struct Holds {
    nan: bool,
    infinite: bool,
}

impl Holds {
    fn of(census: &Finiteness) -> Self {
        Holds {
            nan: census.nan > 0,
            infinite: census.infinite > 0,
        }
    }
}

/// The per-value record of one checked run.
pub(super) struct FiniteCheck {
    holds: Vec<Holds>,
}

impl FiniteCheck {
    /// A check of a graph of `nodes` nodes.
    pub(super) fn new(nodes: usize) -> Self {
        FiniteCheck {
            holds: vec![Holds::default(); nodes],
        }
    }

    /// A bound input or parameter: it must be finite.
    pub(super) fn bound(
        &self,
        kind: &'static str,
        name: &str,
        value: &HostTensor,
    ) -> Result<(), RuntimeError> {
        let census = Finiteness::of(value);
        if census.is_finite() {
            return Ok(());
        }
        Err(RuntimeError::NonFiniteBinding {
            kind,
            name: name.to_string(),
            census,
        })
    }

    /// A constant: recorded, never blamed (`-inf` masks are legitimate).
    pub(super) fn constant(&mut self, id: usize, value: f64) {
        self.holds[id] = Holds {
            nan: value.is_nan(),
            infinite: value.is_infinite(),
        };
    }

    /// A computed node's output, against what its operands held.
    pub(super) fn computed(
        &mut self,
        id: usize,
        node: &Node,
        value: &HostTensor,
    ) -> Result<(), RuntimeError> {
        let census = Finiteness::of(value);
        let out = Holds::of(&census);
        self.holds[id] = out;
        if census.is_finite() {
            return Ok(());
        }
        let operands = node.inputs.iter().map(|v| self.holds[v.0]);
        let (nan_in, any_in) = operands.fold((false, false), |(nan, any), h| {
            (nan || h.nan, any || h.nan || h.infinite)
        });
        if (out.nan && !nan_in) || (out.infinite && !any_in) {
            return Err(RuntimeError::Op {
                node: id,
                op: node.op.name(),
                scope: super::scope_suffix(node),
                source: OpError::NonFinite(census),
            });
        }
        Ok(())
    }
}
