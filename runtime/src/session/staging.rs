//! Staging: handing a session the batch of step N+1 while step N runs.
//!
//! A training loop knows its next batch before the current step's results are back. With
//! [`Session::step_and_stage`](super::Session::step_and_stage) it passes that batch
//! along with the current step; an executor with asynchronous copies (cuda) starts
//! copying it once step N's work is enqueued and before it waits for it, so the
//! host-to-device copy of batch N+1 overlaps step N's kernels. An executor without them
//! keeps the batch (the host session) or writes it after step N is done (the simulator).
//! Either way the contract is the same, and it is what keeps results bit-identical:
//!
//! - step N reads only its own batch: a staged batch never reaches a buffer step N
//!   reads before step N is done with it;
//! - step N+1 reads the staged batch as if its own bindings had bound those tensors;
//!   its own bindings may bind the rest (the collective, which is per step), but not a
//!   staged name again (refused: two values for one input is a caller's bug);
//! - a staged batch serves one step; after a failed step it is dropped, as the state is.

use crate::{Bindings, RuntimeError};
use std::collections::BTreeSet;

/// Time spent copying staged batches to the device (cuda events), since the session
/// began: how long the copies took, and how much of that no step hid (the part of each
/// copy still running after the step it overlapped had finished, which the next step
/// waited for).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CopyTimes {
    /// Copies measured.
    pub copies: u64,
    pub seconds: f64,
    pub exposed_seconds: f64,
}

impl std::ops::Sub for CopyTimes {
    type Output = CopyTimes;

    fn sub(self, earlier: CopyTimes) -> CopyTimes {
        CopyTimes {
            copies: self.copies - earlier.copies,
            seconds: self.seconds - earlier.seconds,
            exposed_seconds: self.exposed_seconds - earlier.exposed_seconds,
        }
    }
}

/// The names of the tensors a session holds staged for its next step.
#[derive(Clone, Debug, Default)]
pub(super) struct StagedNames(BTreeSet<String>);

impl StagedNames {
    /// The names `next` binds (inputs and params).
    pub(super) fn of(next: &Bindings) -> Self {
        StagedNames(
            next.bound_inputs()
                .chain(next.bound_params())
                .map(|(n, _)| n.to_string())
                .collect(),
        )
    }

    /// Keeps only the names `keep` accepts.
    pub(super) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.0.retain(|n| keep(n));
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Refuses a step's `batch` that binds a tensor already staged for it.
    pub(super) fn check_not_bound_again(&self, batch: &Bindings) -> Result<(), RuntimeError> {
        match batch
            .bound_inputs()
            .chain(batch.bound_params())
            .find(|(n, _)| self.contains(n))
        {
            Some((name, _)) => Err(RuntimeError::Session(format!(
                "`{name}` was staged for this step by the one before it and is bound again: \
                 bind it once"
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostTensor;

    #[test]
    fn a_staged_name_bound_again_is_refused_and_others_pass() {
        let t = HostTensor::from_f32(vec![1], vec![1.0]).unwrap();
        let staged = StagedNames::of(&Bindings::new().input("input", &t).param("w", &t));
        assert!(staged.contains("input") && staged.contains("w"));
        assert_eq!(staged.iter().collect::<Vec<_>>(), ["input", "w"]);
        staged
            .check_not_bound_again(&Bindings::new().input("lr", &t))
            .unwrap();
        let e = staged
            .check_not_bound_again(&Bindings::new().input("input", &t))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`input` was staged"), "{e}");
    }

    #[test]
    fn copy_times_subtract_field_by_field() {
        let a = CopyTimes {
            copies: 5,
            seconds: 2.0,
            exposed_seconds: 0.5,
        };
        let b = CopyTimes {
            copies: 2,
            seconds: 0.5,
            exposed_seconds: 0.25,
        };
        assert_eq!(
            a - b,
            CopyTimes {
                copies: 3,
                seconds: 1.5,
                exposed_seconds: 0.25
            }
        );
    }
}
