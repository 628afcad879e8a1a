//! Data sets for training: Fashion-MNIST from Debian's `dataset-fashion-mnist` package
//! and ImageNet-style image folders (`imagefolder/`), behind one [`Dataset`] interface,
//! with batches built ahead of the step by a loader thread (`prefetch.rs`).

pub mod dataset;
pub mod digest;
mod idx;
pub mod imagefolder;
pub mod prefetch;
pub mod rng;
pub mod source;

use anyhow::{bail, Result};
use rng::Rng;
use std::path::{Path, PathBuf};

pub use dataset::{Batch, Dataset, Draw};
pub use idx::read_idx;
pub use source::{DataSource, Splits};

/// Where Debian's `dataset-fashion-mnist` package puts the gzipped IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// A labelled set of single-channel 8-bit images.
pub struct ImageSet {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Mean and standard deviation of all pixels scaled to [0, 1].
    pub fn pixel_stats(&self) -> (f32, f32) {
        let n = self.images.len() as f64;
        let (sum, sq) = self.images.iter().fold((0.0f64, 0.0f64), |(s, q), &p| {
            let v = p as f64 / 255.0;
            (s + v, q + v * v)
        });
        let mean = sum / n;
        ((mean) as f32, (sq / n - mean * mean).sqrt() as f32)
    }
}

/// Which half of a data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// Loads Fashion-MNIST from `dir` (default [`FASHION_MNIST_DIR`]).
pub fn fashion_mnist(dir: Option<&Path>, split: Split) -> Result<ImageSet> {
    let dir: PathBuf = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| FASHION_MNIST_DIR.into());
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images_path = dir.join(format!("{prefix}-images-idx3-ubyte.gz"));
    let labels_path = dir.join(format!("{prefix}-labels-idx1-ubyte.gz"));
    if !images_path.exists() || !labels_path.exists() {
        bail!(
            "Fashion-MNIST not found: {} is missing. Install Debian's `dataset-fashion-mnist` \
             package (`apt-get install dataset-fashion-mnist`, or run scripts/setup.sh)",
            if images_path.exists() {
                labels_path.display()
            } else {
                images_path.display()
            }
        );
    }
    let images = read_idx(&images_path)?;
    let labels = read_idx(&labels_path)?;
    let (images_file, labels_file) = (images_path.display(), labels_path.display());
    if images.dims.len() != 3 || images.dims.contains(&0) {
        bail!(
            "{images_file} holds dims {:?}; images need three positive ones (count, height, \
             width)",
            images.dims
        );
    }
    if labels.dims.len() != 1 || labels.dims[0] != images.dims[0] {
        bail!(
            "{labels_file} holds dims {:?}; it needs one, the {} images of {images_file}",
            labels.dims,
            images.dims[0]
        );
    }
    if let Some(bad) = labels.data.iter().find(|&&l| l >= 10) {
        bail!(
            "label {bad} out of range 0..10 in {}",
            labels_path.display()
        );
    }
    Ok(ImageSet {
        height: images.dims[1],
        width: images.dims[2],
        images: images.data,
        labels: labels.data,
        classes: 10,
    })
}

/// Random crop after zero padding (in pixels) and random horizontal flips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    pub pad: usize,
    pub flip: bool,
}

/// Builds one NCHW batch (values standardized with `mean`/`std`) and its labels.
/// With `augment`, each image gets its own crop offset and flip drawn from `rng`.
pub fn make_batch(
    set: &ImageSet,
    indices: &[usize],
    (mean, std): (f32, f32),
    augment: Option<(Augment, &mut Rng)>,
) -> (Vec<f32>, Vec<i64>) {
    let (h, w) = (set.height, set.width);
    let mut pixels = vec![0f32; indices.len() * h * w];
    let mut labels = Vec::with_capacity(indices.len());
    let zero = (0.0 - mean) / std;
    let mut augment = augment;
    for (b, &i) in indices.iter().enumerate() {
        labels.push(set.labels[i] as i64);
        let src = &set.images[i * h * w..(i + 1) * h * w];
        let dst = &mut pixels[b * h * w..(b + 1) * h * w];
        let (dy, dx, flip) = match augment.as_mut() {
            Some((a, rng)) => {
                let span = 2 * a.pad as u64 + 1;
                let dy = rng.below(span) as isize - a.pad as isize;
                let dx = rng.below(span) as isize - a.pad as isize;
                (dy, dx, a.flip && rng.below(2) == 1)
            }
            None => (0, 0, false),
        };
        for y in 0..h {
            for x in 0..w {
                let sx = if flip { w - 1 - x } else { x } as isize + dx;
                let sy = y as isize + dy;
                dst[y * w + x] = if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                    zero
                } else {
                    (src[sy as usize * w + sx as usize] as f32 / 255.0 - mean) / std
                };
            }
        }
    }
    (pixels, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_set() -> ImageSet {
        ImageSet {
            images: (0..18).map(|v| v as u8 * 10).collect(),
            labels: vec![3, 7],
            height: 3,
            width: 3,
            classes: 10,
        }
    }

    #[test]
    fn batch_without_augment_is_standardized_pixels() {
        let set = tiny_set();
        let (px, labels) = make_batch(&set, &[1, 0], (0.0, 1.0), None);
        assert_eq!(labels, vec![7, 3]);
        assert!((px[0] - 90.0 / 255.0).abs() < 1e-6);
        assert!((px[9] - 0.0).abs() < 1e-6);
    }

    #[test]
    fn flip_and_shift_move_pixels_where_expected() {
        let set = tiny_set();
        // pad 0 means no shift: only flips can happen; find one flipped sample.
        let mut rng = Rng::new(3);
        let mut flipped = false;
        for _ in 0..20 {
            let (px, _) = make_batch(
                &set,
                &[0],
                (0.0, 1.0),
                Some((Augment { pad: 0, flip: true }, &mut rng)),
            );
            if (px[0] - 20.0 / 255.0).abs() < 1e-6 {
                flipped = true;
                assert!((px[2] - 0.0).abs() < 1e-6);
            } else {
                assert!((px[0] - 0.0).abs() < 1e-6);
            }
        }
        assert!(flipped);
    }

    #[test]
    fn missing_data_set_names_the_package() {
        let err = fashion_mnist(Some(Path::new("/nonexistent")), Split::Train)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("dataset-fashion-mnist"), "{err}");
    }
}
