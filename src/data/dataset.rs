//! What the trainer asks of a data set, whatever it is read from: a size, a number of
//! classes, the shape of one image, and a batch of given samples with or without the
//! training augmentation. Also the draws that make a run reproducible: the epoch's order
//! and the augmentation's generators are functions of the seed, the epoch and the step
//! or sample, so a resumed run sees exactly the batches an uninterrupted one would.

use super::rng::Rng;
use super::{make_batch, Augment, ImageSet};
use anyhow::Result;
use std::ops::Range;

/// One batch: NCHW pixels and a label per image.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
}

/// Where a training batch sits in the run, for the augmentation's random draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Draw {
    pub seed: u64,
    pub epoch: u64,
    pub step: u64,
}

/// A labelled image data set the trainer and the evaluator read batches from. `Sync`:
/// batches are built on loader threads while the step runs.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn classes(&self) -> usize;
    /// Channels, height and width of every image of a batch.
    fn image_shape(&self) -> [usize; 3];
    /// The samples `indices`, augmented for training when `draw` is given, else with the
    /// evaluation transform.
    fn batch(&self, indices: &[usize], draw: Option<Draw>) -> Result<Batch>;
    /// Rows `rows` of `batch(indices, draw)`, the same bytes: one data-parallel
    /// process's shard. By default the whole batch is made and cut; a data set whose
    /// samples are drawn independently makes only the shard's samples.
    fn shard(&self, indices: &[usize], draw: Option<Draw>, rows: Range<usize>) -> Result<Batch> {
        let whole = self.batch(indices, draw)?;
        let per_row = whole.pixels.len() / indices.len().max(1);
        Ok(Batch {
            pixels: whole.pixels[rows.start * per_row..rows.end * per_row].to_vec(),
            labels: whole.labels[rows].to_vec(),
        })
    }
    /// How many files were found unreadable so far (their samples were replaced).
    fn skipped(&self) -> usize {
        0
    }
}

/// Independent generator streams for (seed, purpose) without correlated starts.
pub fn stream(seed: u64, purpose: u64) -> u64 {
    Rng::new(seed ^ purpose.wrapping_mul(0x9e37_79b9_7f4a_7c15)).next_u64()
}

/// The order of the `n` training samples in `epoch`.
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(stream(seed, epoch)).shuffle(&mut order);
    order
}

/// The generator of one sample's augmentation in one epoch: a function of the seed, the
/// epoch and the sample alone, so it is the same whichever thread builds the sample and
/// whichever batch the sample falls in.
pub fn sample_rng(seed: u64, epoch: u64, index: usize) -> Rng {
    // Bit 62 keeps these streams apart from the epochs' shuffles (purpose = epoch) and
    // Fashion-MNIST's per-step streams (purpose = u64::MAX - step).
    Rng::new(stream(stream(seed, (1 << 62) | epoch), index as u64))
}

/// Fashion-MNIST (or any [`ImageSet`]) standardized by the training set's statistics,
/// augmented by a crop after zero padding 2 and a flip, drawn per step.
pub struct GreyImages {
    pub set: ImageSet,
    pub stats: (f32, f32),
}

impl Dataset for GreyImages {
    fn len(&self) -> usize {
        self.set.len()
    }
    fn classes(&self) -> usize {
        self.set.classes
    }
    fn image_shape(&self) -> [usize; 3] {
        [1, self.set.height, self.set.width]
    }
    fn batch(&self, indices: &[usize], draw: Option<Draw>) -> Result<Batch> {
        // One generator per step (not per sample), as this path always drew: runs made
        // before other data sets existed keep their exact batches.
        let mut rng = draw.map(|d| Rng::new(stream(d.seed, u64::MAX - d.step)));
        let augment = rng
            .as_mut()
            .map(|rng| (Augment { pad: 2, flip: true }, rng));
        let (pixels, labels) = make_batch(&self.set, indices, self.stats, augment);
        Ok(Batch { pixels, labels })
    }
}
