//! What a training-step graph reads and writes besides the batch: the model's state and
//! SGD's momentum buffers, moved in and out by name (see `calib_passes::train_step`),
//! either per run ([`SgdState::bindings`], [`SgdState::absorb`]) or kept in a session
//! ([`carry`], [`SgdState::resident`], [`SgdState::take_resident`]); and a bf16 step's
//! rounded weight copies (`calib_passes::precision::apply_step`), which are the master
//! weights' function: made here from them where a run starts, carried by the step after.

use calib_ir::DType;
use calib_passes::precision::weight_copy_name;
use calib_passes::{momentum_name, TrainStep, LOSS, LR};
use calib_runtime::{Bindings, Carry, Finiteness, HostTensor, Outputs, TensorMap};

/// What a training step brings back from a session: the loss and the logits (the
/// trainer counts correct predictions from them with its own tie rule; they are a few
/// kilobytes, where the state is megabytes).
pub const STEP_FETCH: &[&str] = &[LOSS, "logits"];

/// Parameters and buffers by `state_dict` name, momentum buffers by parameter name.
#[derive(Clone, Debug, PartialEq)]
pub struct SgdState {
    pub state: TensorMap,
    pub momentum: TensorMap,
    /// A bf16 step's rounded weight copies by parameter name ([`TrainStep::copies`]),
    /// for [`SgdState::bindings`]: [`rounded_copy`] of `state`'s weights, kept so by
    /// [`SgdState::new`], [`SgdState::absorb`] and [`SgdState::take_resident`]. Never
    /// checkpointed (a decoded checkpoint has none; [`SgdState::resident`] makes them).
    pub copies: TensorMap,
}

impl SgdState {
    /// `state` with zero momentum for every parameter `step` trains (PyTorch's first
    /// step: `0.9 * 0 + d` is exactly `d`).
    pub fn new(step: &TrainStep, state: TensorMap) -> Self {
        let momentum = step
            .params
            .iter()
            .map(|name| {
                let ty = state[name].ty();
                (name.clone(), HostTensor::full(&ty, 0.0, Default::default()))
            })
            .collect();
        let copies = rounded_copies(step, &state);
        SgdState {
            state,
            momentum,
            copies,
        }
    }

    /// Bindings for one step: the state as params, the momentum buffers, the batch and
    /// the learning rate as inputs.
    pub fn bindings<'a>(
        &'a self,
        step: &TrainStep,
        input: &'a HostTensor,
        labels: &'a HostTensor,
        lr: &'a HostTensor,
    ) -> Bindings<'a> {
        let mut b = Bindings::new()
            .params(&self.state)
            .input("input", input)
            .input("labels", labels)
            .input(LR, lr);
        for name in &step.params {
            b = b.input(momentum_name(name), &self.momentum[name]);
        }
        for (name, copy) in &self.copies {
            b = b.param(weight_copy_name(name), copy);
        }
        b
    }

    /// Takes the step's results: outputs named like a parameter or buffer replace it,
    /// `momentum.<name>` outputs replace the momentum buffers. What remains in
    /// `outputs` (loss, logits) is left there.
    pub fn absorb(&mut self, step: &TrainStep, outputs: &mut Outputs) {
        for name in step.params.iter().chain(&step.buffers) {
            if let Some(t) = outputs.remove(name.as_str()) {
                self.state.insert(name.clone(), t);
            }
        }
        for name in &step.params {
            if let Some(t) = outputs.remove(&momentum_name(name)) {
                self.momentum.insert(name.clone(), t);
            }
        }
        for name in &step.copies {
            if let Some(t) = outputs.remove(&weight_copy_name(name)) {
                self.copies.insert(name.clone(), t);
            }
        }
    }

    /// The state, momentum and weight copies as a session holds them: by the step
    /// graph's input and param names (`momentum.<name>`, `bf16.<name>`). Copies `self`
    /// lacks (a checkpoint's state) are rounded from the weights here.
    pub fn resident(&self, step: &TrainStep) -> TensorMap {
        let mut map = self.state.clone();
        for name in &step.params {
            map.insert(momentum_name(name), self.momentum[name].clone());
        }
        for name in &step.copies {
            let copy = match self.copies.get(name) {
                Some(copy) => copy.clone(),
                None => rounded_copy(&self.state[name]),
            };
            map.insert(weight_copy_name(name), copy);
        }
        map
    }

    /// The names [`SgdState::resident`] gives the values a step updates and a
    /// checkpoint keeps (not the weight copies: they are the weights' function).
    pub fn resident_names(step: &TrainStep) -> Vec<String> {
        step.params
            .iter()
            .chain(&step.buffers)
            .cloned()
            .chain(step.params.iter().map(|p| momentum_name(p)))
            .collect()
    }

    /// The first tensor holding a NaN or an infinity, by its checkpoint name, and what
    /// it holds: parameters and buffers in `order` (the model's), then their momentum
    /// buffers in the same order, then anything `order` does not list, by name.
    pub fn first_non_finite(&self, order: &[String]) -> Option<(String, Finiteness)> {
        let state = in_order(&self.state, order).map(|(n, t)| (n.clone(), t));
        let momentum = in_order(&self.momentum, order).map(|(n, t)| (momentum_name(n), t));
        state.chain(momentum).find_map(|(name, t)| {
            let census = Finiteness::of(t);
            (!census.is_finite()).then_some((name, census))
        })
    }

    /// Takes values read back from a session (named as in [`SgdState::resident`]).
    pub fn take_resident(&mut self, step: &TrainStep, mut values: TensorMap) {
        for name in &step.params {
            if let Some(t) = values.remove(&momentum_name(name)) {
                self.momentum.insert(name.clone(), t);
            }
        }
        self.state.extend(values);
        // The session's copies are these weights rounded: no need to read them back.
        self.copies = rounded_copies(step, &self.state);
    }
}

/// `weight` rounded to bf16 (to nearest even): the reference interpreter's
/// `cast(weight, bf16)` itself, so a copy made here is the bits the step's update
/// would have made from the same weight.
pub fn rounded_copy(weight: &HostTensor) -> HostTensor {
    weight.cast(DType::BF16)
}

/// [`rounded_copy`] of each weight `step` reads through a copy, by parameter name.
fn rounded_copies(step: &TrainStep, state: &TensorMap) -> TensorMap {
    step.copies
        .iter()
        .map(|name| (name.clone(), rounded_copy(&state[name])))
        .collect()
}

/// The entries of `map` named in `order`, in that order, then the others by name.
fn in_order<'a>(
    map: &'a TensorMap,
    order: &'a [String],
) -> impl Iterator<Item = (&'a String, &'a HostTensor)> + 'a {
    let listed = order.iter().filter(|n| map.contains_key(*n));
    let rest = map.keys().filter(|n| !order.contains(n));
    listed.chain(rest).map(|n| (n, &map[n]))
}

/// What a session carries from one training step to the next: every trained parameter,
/// its momentum buffer, every BatchNorm buffer and every weight copy, each into the
/// input or param it replaces.
pub fn carry(step: &TrainStep) -> Carry {
    let copies = step.copies.iter().map(|p| weight_copy_name(p));
    SgdState::resident_names(step)
        .into_iter()
        .chain(copies)
        .fold(Carry::new(), |carry, name| carry.with(name.clone(), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(values: &[f32]) -> HostTensor {
        HostTensor::from_f32(vec![values.len()], values.to_vec()).unwrap()
    }

    #[test]
    fn the_first_non_finite_tensor_is_found_in_model_order_then_in_momentum() {
        let sgd = SgdState {
            state: [
                ("a".to_string(), tensor(&[1.0, f32::NAN])),
                ("b".to_string(), tensor(&[f32::INFINITY])),
            ]
            .into(),
            momentum: [("c".to_string(), tensor(&[f32::NAN]))].into(),
            copies: TensorMap::new(),
        };
        let order = ["b".to_string(), "a".to_string()];
        let (name, census) = sgd.first_non_finite(&order).unwrap();
        assert_eq!((name.as_str(), census.infinite), ("b", 1));
        let only_momentum = SgdState {
            state: [("a".to_string(), tensor(&[1.0]))].into(),
            momentum: sgd.momentum.clone(),
            copies: TensorMap::new(),
        };
        let (name, census) = only_momentum.first_non_finite(&order).unwrap();
        assert_eq!((name.as_str(), census.nan), ("momentum.c", 1));
        let finite = SgdState {
            momentum: TensorMap::new(),
            ..only_momentum
        };
        assert_eq!(finite.first_non_finite(&order), None);
    }
}
