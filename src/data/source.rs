//! Which data set a run trains on (`--data`, the `data` field of `config.json`) and
//! opening its two splits as [`Dataset`]s.

use super::dataset::{Dataset, GreyImages};
use super::imagefolder::{loader_pool, open_splits, ImageFolder};
use super::{fashion_mnist, ImageSet, Split};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// ImageNet models' input side.
pub const DEFAULT_SIZE: u32 = 224;

/// A run's data set. Configs written before image folders existed have no `data` field
/// and mean Fashion-MNIST.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSource {
    /// Fashion-MNIST's IDX files (from the run's `data_dir`, else Debian's package).
    #[default]
    FashionMnist,
    /// torchvision's `ImageFolder` layout under `dir` (`train/` and `val/`), images
    /// cropped and resized to `size` x `size`, decoded on `workers` threads (0: a thread
    /// per core; the batches do not depend on it).
    ImageFolder {
        dir: PathBuf,
        size: u32,
        workers: usize,
    },
}

impl DataSource {
    /// Parses `--data`: `fashion-mnist` or `imagefolder:DIR`, with `--image-size`
    /// (default [`DEFAULT_SIZE`]) and `--loader-workers` (default 0: one per core), which
    /// only an image folder takes.
    pub fn parse(text: &str, size: Option<u32>, workers: Option<usize>) -> Result<Self> {
        if text == "fashion-mnist" {
            if size.is_some() || workers.is_some() {
                bail!(
                    "--image-size and --loader-workers apply to --data imagefolder:DIR; \
                     Fashion-MNIST's images are 28x28, in memory"
                );
            }
            return Ok(DataSource::FashionMnist);
        }
        match text.strip_prefix("imagefolder:") {
            Some("") => bail!("--data imagefolder: needs a directory, as imagefolder:DIR"),
            Some(dir) => Ok(DataSource::ImageFolder {
                dir: dir.into(),
                size: size.unwrap_or(DEFAULT_SIZE),
                workers: workers.unwrap_or(0),
            }),
            None => bail!("--data `{text}`: expected `fashion-mnist` or `imagefolder:DIR`"),
        }
    }
}

/// A run's training and evaluation splits.
pub struct Splits {
    pub train: Arc<dyn Dataset>,
    pub test: Arc<dyn Dataset>,
}

/// Opens both splits of `source`, keeping the first `train_limit` / `test_limit` samples
/// (for an image folder, that many spread over the whole split).
pub fn open(
    source: &DataSource,
    fashion_dir: Option<&Path>,
    train_limit: Option<usize>,
    test_limit: Option<usize>,
) -> Result<Splits> {
    match source {
        DataSource::FashionMnist => {
            let train = limit(fashion_mnist(fashion_dir, Split::Train)?, train_limit);
            let test = limit(fashion_mnist(fashion_dir, Split::Test)?, test_limit);
            let stats = train.pixel_stats();
            Ok(Splits {
                train: Arc::new(GreyImages { set: train, stats }),
                test: Arc::new(GreyImages { set: test, stats }),
            })
        }
        DataSource::ImageFolder { dir, size, workers } => {
            let (mut train, mut test) = open_splits(dir, *size, loader_pool(*workers)?)?;
            let cut = |set: &mut ImageFolder, n: Option<usize>| {
                if let Some(n) = n {
                    set.limit(n)
                }
            };
            cut(&mut train, train_limit);
            cut(&mut test, test_limit);
            Ok(Splits {
                train: Arc::new(train),
                test: Arc::new(test),
            })
        }
    }
}

fn limit(mut set: ImageSet, n: Option<usize>) -> ImageSet {
    if let Some(n) = n.filter(|&n| n < set.len()) {
        set.labels.truncate(n);
        set.images.truncate(n * set.height * set.width);
    }
    set
}
