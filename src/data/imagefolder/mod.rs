//! ImageNet-style data sets in torchvision's `ImageFolder` layout
//! (`DIR/train/<class>/*.JPEG`, `DIR/val/<class>/*.JPEG`), with torchvision's training
//! and validation transforms at any square size.
//!
//! Samples of a batch are decoded and transformed in parallel on a pool of loader threads;
//! each sample's augmentation comes from its own generator ([`sample_rng`]: seed, epoch,
//! sample), so a batch is the same bytes however the work is spread. A file that cannot
//! be read or decoded is reported once, counted, and its slot filled by the next readable
//! sample of the data set (in index order, so the replacement is the same on every run).

pub mod geometry;
pub mod pixels;
pub mod scan;

use super::dataset::{sample_rng, Batch, Dataset, Draw};
use anyhow::{anyhow, bail, Context, Result};
use geometry::{centre_crop, random_resized_crop, resize_side, resized_shape, Crop};
use pixels::{crop_resize, decode, write_normalized, Rgb};
use rayon::prelude::*;
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How many following samples are tried in place of an unreadable one before the batch
/// fails: a data set with that many bad files in a row is not worth training on.
const MAX_REPLACEMENTS: usize = 64;

/// The largest image side accepted (`--image-size`); the models' spatial bound.
pub const MAX_SIZE: u32 = 16384;

/// One split of an image folder data set.
pub struct ImageFolder {
    dir: PathBuf,
    classes: Vec<String>,
    samples: Vec<(PathBuf, u32)>,
    size: u32,
    pool: Arc<rayon::ThreadPool>,
    /// Samples whose files were found unreadable (warned about once each).
    bad: Mutex<BTreeSet<usize>>,
}

/// The loader threads for `workers` (0: one per core).
pub fn loader_pool(workers: usize) -> Result<Arc<rayon::ThreadPool>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .thread_name(|i| format!("calib-loader-{i}"))
        .build()
        .map_err(|e| anyhow!("cannot start the loader threads: {e}"))?;
    Ok(Arc::new(pool))
}

/// The train and val splits of the data set in `dir`, their classes checked to agree.
pub fn open_splits(
    dir: &Path,
    size: u32,
    pool: Arc<rayon::ThreadPool>,
) -> Result<(ImageFolder, ImageFolder)> {
    if !(1..=MAX_SIZE).contains(&size) {
        bail!("--image-size {size}: must be in 1..={MAX_SIZE}");
    }
    let (train_dir, val_dir) = (dir.join("train"), dir.join("val"));
    let train = scan::list_split(&train_dir)?;
    let val = scan::list_split(&val_dir)?;
    scan::check_same_classes((&train_dir, &train), (&val_dir, &val))?;
    let make = |dir: PathBuf, listing: scan::Listing| ImageFolder {
        dir,
        classes: listing.classes,
        samples: listing.samples,
        size,
        pool: pool.clone(),
        bad: Mutex::new(BTreeSet::new()),
    };
    Ok((make(train_dir, train), make(val_dir, val)))
}

impl ImageFolder {
    /// Keeps `n` samples spread evenly over the split (every class keeps its share, where
    /// the first `n` would be the first classes only).
    pub fn limit(&mut self, n: usize) {
        let len = self.samples.len();
        if n < len {
            self.samples = (0..n).map(|i| self.samples[i * len / n].clone()).collect();
        }
    }

    pub fn class_names(&self) -> &[String] {
        &self.classes
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sample `index` transformed into `out` (3 x size x size); returns its label.
    /// Augmented with the generator of `(draw, index)` when `draw` is given.
    pub fn load(&self, index: usize, draw: Option<Draw>, out: &mut [f32]) -> Result<u32> {
        self.load_into_slot(index, index, draw, out)
    }

    /// Sample `index`'s file transformed with the augmentation drawn for sample `slot`
    /// (itself, or the unreadable sample it replaces).
    fn load_into_slot(
        &self,
        index: usize,
        slot: usize,
        draw: Option<Draw>,
        out: &mut [f32],
    ) -> Result<u32> {
        let (path, label) = &self.samples[index];
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let image = decode(path, &bytes)?;
        let (size, (w, h)) = (self.size, (image.width, image.height));
        let (resized, flip) = match draw {
            Some(d) => {
                let mut rng = sample_rng(d.seed, d.epoch, slot);
                let crop = random_resized_crop(w, h, &mut rng);
                // RandomHorizontalFlip comes after the crop: its draw comes second.
                let flip = rng.below(2) == 1;
                (crop_resize(&image, crop, size, size)?, flip)
            }
            None => {
                let (rw, rh) = resized_shape(w, h, resize_side(size));
                let whole = Crop {
                    top: 0,
                    left: 0,
                    height: h,
                    width: w,
                };
                let full = crop_resize(&image, whole, rw, rh)?;
                (cut(&full, centre_crop(rw, rh, size)), false)
            }
        };
        write_normalized(&resized, flip, out);
        Ok(*label)
    }

    /// [`ImageFolder::load`], replacing an unreadable sample by the next readable one.
    fn load_or_replace(&self, index: usize, draw: Option<Draw>, out: &mut [f32]) -> Result<u32> {
        let n = self.samples.len();
        let tries = MAX_REPLACEMENTS.min(n);
        let mut first_error = None;
        for k in 0..tries {
            let j = (index + k) % n;
            // The replacement keeps the slot's own generator: the draws do not depend on
            // which files happen to be bad.
            match self.load_into_slot(j, index, draw, out) {
                Ok(label) => return Ok(label),
                Err(e) => {
                    if self.bad.lock().expect("never poisoned").insert(j) {
                        eprintln!("warning: skipping an unreadable image: {e:#}");
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        let e = first_error.expect("at least one sample was tried");
        Err(e.context(format!(
            "no readable image among the {tries} samples from {} on in {}",
            self.samples[index].0.display(),
            self.dir.display()
        )))
    }
}

/// The pixels of `crop` copied out of `image`.
fn cut(image: &Rgb, crop: Crop) -> Rgb {
    let (w, cw) = (image.width as usize, crop.width as usize);
    let mut data = Vec::with_capacity(cw * crop.height as usize * 3);
    for y in crop.top as usize..(crop.top + crop.height) as usize {
        let start = (y * w + crop.left as usize) * 3;
        data.extend_from_slice(&image.data[start..start + cw * 3]);
    }
    Rgb {
        width: crop.width,
        height: crop.height,
        data,
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn classes(&self) -> usize {
        self.classes.len()
    }

    fn image_shape(&self) -> [usize; 3] {
        [3, self.size as usize, self.size as usize]
    }

    fn batch(&self, indices: &[usize], draw: Option<Draw>) -> Result<Batch> {
        let per = 3 * self.size as usize * self.size as usize;
        let mut pixels = vec![0f32; indices.len() * per];
        let labels = self.pool.install(|| {
            pixels
                .par_chunks_mut(per)
                .zip(indices)
                .map(|(out, &i)| self.load_or_replace(i, draw, out).map(i64::from))
                .collect::<Result<Vec<i64>>>()
        })?;
        Ok(Batch { pixels, labels })
    }

    /// Only the shard's samples: each one's draws are its own (seed, epoch, sample), and
    /// an unreadable one's replacement depends on the data set alone, not on the batch.
    fn shard(&self, indices: &[usize], draw: Option<Draw>, rows: Range<usize>) -> Result<Batch> {
        self.batch(&indices[rows], draw)
    }

    fn skipped(&self) -> usize {
        self.bad.lock().expect("never poisoned").len()
    }
}
