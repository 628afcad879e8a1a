//! `calib bench --data imagefolder:DIR`: the data loader's rate on the training
//! transform (read, decode, RandomResizedCrop, flip, normalize into NCHW floats), with one
//! loader thread (images per second per core) and with all of them (in total).
//!
//! Each measurement first reads every file once untimed, so both rates are of files in
//! the page cache: what is measured is the CPU's work, not the disk's.

use super::loader::LoaderArgs;
use anyhow::{bail, Result};
use calib::data::imagefolder::{loader_pool, open_splits, ImageFolder};
use calib::data::{DataSource, Dataset, Draw};
use std::time::Instant;

/// What one measurement found.
struct Rate {
    workers: usize,
    images: usize,
    seconds: f64,
    skipped: usize,
}

impl Rate {
    fn per_second(&self) -> f64 {
        self.images as f64 / self.seconds.max(1e-9)
    }
}

/// Runs the benchmark of `--data` (an image folder) over its first `images` training
/// samples (spread over the classes) and prints the rates (`json`: as one object).
pub fn run(data: &str, loader: &LoaderArgs, images: usize, json: bool) -> Result<()> {
    let DataSource::ImageFolder { dir, size, workers } =
        DataSource::parse(data, loader.image_size, loader.loader_workers)?
    else {
        bail!("--data {data}: the loader benchmark reads an image folder (imagefolder:DIR)");
    };
    if images == 0 {
        bail!("--images 0: must be at least 1");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all = if workers == 0 { cores } else { workers };
    let open = |workers: usize| -> Result<ImageFolder> {
        let (mut train, _) = open_splits(&dir, size, loader_pool(workers)?)?;
        train.limit(images);
        Ok(train)
    };
    let mut rates = vec![measure(&open(1)?, 1)?];
    if all > 1 {
        rates.push(measure(&open(all)?, all)?);
    }
    let one = &rates[0];
    let best = rates.last().expect("at least one");
    let v = serde_json::json!({
        "data": dir.display().to_string(), "image_size": size, "images": one.images,
        "transform": "read + decode + RandomResizedCrop(bilinear, antialias) + flip + normalize",
        "cores": cores,
        "images_per_second_one_worker": one.per_second(),
        "workers": best.workers,
        "images_per_second": best.per_second(),
        "images_per_second_per_worker": best.per_second() / best.workers as f64,
        "skipped_images": best.skipped,
    });
    if json {
        super::emit(&(serde_json::to_string_pretty(&v)? + "\n"))?;
    } else {
        super::emit(&format!(
            "loader on {} ({} images, {size}x{size}): 1 worker {:.0} images/s; {} workers \
             {:.0} images/s ({:.0} per worker); {cores} cores\n",
            dir.display(),
            one.images,
            one.per_second(),
            best.workers,
            best.per_second(),
            best.per_second() / best.workers as f64,
        ))?;
    }
    Ok(())
}

/// The training transform of every sample of `set`, timed after one untimed pass.
fn measure(set: &ImageFolder, workers: usize) -> Result<Rate> {
    let indices: Vec<usize> = (0..set.len()).collect();
    let draw = |epoch| Draw {
        seed: 0,
        epoch,
        step: 0,
    };
    // Batches of 64, as a training run asks for them; the first pass warms the cache.
    let pass = |epoch| -> Result<()> {
        for chunk in indices.chunks(64) {
            set.batch(chunk, Some(draw(epoch)))?;
        }
        Ok(())
    };
    pass(0)?;
    let t = Instant::now();
    pass(1)?;
    let seconds = t.elapsed().as_secs_f64();
    Ok(Rate {
        workers,
        images: indices.len(),
        seconds,
        skipped: set.skipped(),
    })
}
