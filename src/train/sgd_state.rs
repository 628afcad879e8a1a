//! What a training-step graph reads and writes besides the batch: the model's state and
//! SGD's momentum buffers, moved in and out by name (see `calib_passes::train_step`).

use calib_passes::{momentum_name, TrainStep, LR};
use calib_runtime::{Bindings, HostTensor, Outputs, TensorMap};

/// Parameters and buffers by `state_dict` name, momentum buffers by parameter name.
#[derive(Clone, Debug, PartialEq)]
pub struct SgdState {
    pub state: TensorMap,
    pub momentum: TensorMap,
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
        SgdState { state, momentum }
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
    }
}
