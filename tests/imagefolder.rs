//! Image folder data sets (`--data imagefolder:DIR`): the layout's errors, torchvision's
//! transforms checked on images whose every pixel is known, determinism of the augmented
//! batches, unreadable files skipped and counted, and a tiny model learning the classes.

mod support;

use calib::data::imagefolder::pixels::{MEAN, STD};
use calib::data::imagefolder::{loader_pool, open_splits, ImageFolder};
use calib::data::{Dataset, Draw};
use image::{ImageFormat, Rgb, RgbImage};
use std::path::Path;
use support::calib;
use support::images::make_folder;

fn open(dir: &Path, size: u32, workers: usize) -> anyhow::Result<(ImageFolder, ImageFolder)> {
    open_splits(dir, size, loader_pool(workers).unwrap())
}

fn draw(epoch: u64) -> Draw {
    Draw {
        seed: 5,
        epoch,
        step: 0,
    }
}

/// Writes one lossless image as the only sample of class `a` in both splits.
fn single_image_folder(dir: &Path, img: &RgbImage) {
    for split in ["train", "val"] {
        let folder = dir.join(split).join("a");
        std::fs::create_dir_all(&folder).unwrap();
        img.save_with_format(folder.join("x.png"), ImageFormat::Png)
            .unwrap();
    }
}

fn error_of(dir: &Path) -> String {
    format!("{:#}", open(dir, 32, 1).err().expect("an error"))
}

#[test]
fn layout_errors_name_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(error_of(dir).contains(&dir.join("train").display().to_string()));
    std::fs::create_dir_all(dir.join("train")).unwrap();
    std::fs::create_dir_all(dir.join("val")).unwrap();
    let err = error_of(dir);
    assert!(err.contains("has no class folders"), "{err}");
    make_folder(dir, 2, 1, 1);
    std::fs::create_dir_all(dir.join("train/class_09")).unwrap();
    std::fs::write(dir.join("train/class_09/notes.txt"), "not an image").unwrap();
    let err = error_of(dir);
    assert!(
        err.contains("class_09") && err.contains("holds no images"),
        "{err}"
    );
    std::fs::remove_dir_all(dir.join("train/class_09")).unwrap();
    std::fs::create_dir_all(dir.join("train/class_10")).unwrap();
    let some_image = dir.join("train/class_00/img_000.jpg");
    std::fs::copy(some_image, dir.join("train/class_10/a.JPEG")).unwrap();
    let err = error_of(dir);
    assert!(err.contains("differ") && err.contains("class_10"), "{err}");
    // The command line reports it as a clean error.
    let out = tmp.path().join("run");
    let o = calib(&[
        "train",
        "--data",
        &format!("imagefolder:{}", dir.display()),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("differ") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn validation_is_resize_then_centre_crop_then_normalize() {
    let tmp = tempfile::tempdir().unwrap();
    // 32 wide, 40 high; size 28 resizes the shorter side to 28 * 256 / 224 = 32, which
    // leaves the image as it is, and the centre crop starts at round(4 / 2) = 2 across
    // and round(12 / 2) = 6 down.
    let img = RgbImage::from_fn(32, 40, |x, y| Rgb([(x * 7) as u8, (y * 5) as u8, 200]));
    single_image_folder(tmp.path(), &img);
    let (_, val) = open(tmp.path(), 28, 1).unwrap();
    let batch = val.batch(&[0], None).unwrap();
    assert_eq!(batch.labels, vec![0]);
    let plane = 28 * 28;
    for (y, x) in [(0, 0), (27, 27), (3, 20)] {
        let src = img.get_pixel(x + 2, y + 6);
        for c in 0..3 {
            let want = (src[c] as f32 / 255.0 - MEAN[c]) / STD[c];
            let got = batch.pixels[c * plane + y as usize * 28 + x as usize];
            assert!(
                (got - want).abs() < 1e-5,
                "({x},{y}) channel {c}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn training_crops_are_flipped_half_the_time_and_differ_by_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    // Red grows left to right: a flipped crop has it falling.
    let img = RgbImage::from_fn(64, 48, |x, _| Rgb([(x * 4) as u8, 90, 30]));
    single_image_folder(tmp.path(), &img);
    let (train, _) = open(tmp.path(), 16, 1).unwrap();
    let (mut rising, mut falling) = (0, 0);
    let mut seen = std::collections::HashSet::new();
    for epoch in 0..40 {
        let b = train.batch(&[0], Some(draw(epoch))).unwrap();
        let row = &b.pixels[8 * 16..9 * 16];
        if row[15] > row[0] {
            rising += 1;
        } else {
            falling += 1;
        }
        seen.insert(b.pixels.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        // Green and blue are constant in the source: every resized pixel keeps them.
        let g = (90.0 / 255.0 - MEAN[1]) / STD[1];
        assert!(b.pixels[256..512].iter().all(|v| (v - g).abs() < 1e-5));
    }
    assert!(
        rising >= 8 && falling >= 8,
        "{rising} rising, {falling} falling"
    );
    assert!(
        seen.len() >= 35,
        "only {} distinct crops in 40 epochs",
        seen.len()
    );
}

#[test]
fn batches_are_a_function_of_seed_epoch_and_sample() {
    let tmp = tempfile::tempdir().unwrap();
    make_folder(tmp.path(), 3, 6, 2);
    let (one, _) = open(tmp.path(), 24, 1).unwrap();
    let (two, _) = open(tmp.path(), 24, 2).unwrap();
    let indices = [4, 0, 17, 9, 3];
    let a = one.batch(&indices, Some(draw(1))).unwrap();
    assert_eq!(a, one.batch(&indices, Some(draw(1))).unwrap());
    assert_eq!(a, two.batch(&indices, Some(draw(1))).unwrap());
    assert_ne!(a.pixels, one.batch(&indices, Some(draw(2))).unwrap().pixels);
    // A sample's augmentation does not depend on the batch it falls in.
    let alone = one.batch(&[17], Some(draw(1))).unwrap();
    let per = 3 * 24 * 24;
    assert_eq!(alone.pixels, a.pixels[2 * per..3 * per]);
    assert_eq!(a.labels, vec![0, 0, 2, 1, 0]);
    // A data-parallel process's shard: those rows' bytes, its samples alone decoded.
    let shard = one.shard(&indices, Some(draw(1)), 1..4).unwrap();
    assert_eq!(shard.pixels, a.pixels[per..4 * per]);
    assert_eq!(shard.labels, a.labels[1..4]);
}

#[test]
fn unreadable_images_are_replaced_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    make_folder(tmp.path(), 2, 4, 2);
    let bad = tmp.path().join("train/class_00/img_001.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff not really a JPEG").unwrap();
    let (train, _) = open(tmp.path(), 16, 2).unwrap();
    let b = train.batch(&[1, 1, 5], Some(draw(0))).unwrap();
    assert_eq!(train.skipped(), 1);
    // Sample 1 was replaced by sample 2, of the same class, in both of its slots.
    assert_eq!(b.labels, vec![0, 0, 1]);
    assert!(b.pixels.iter().all(|v| v.is_finite()));
}

#[test]
fn a_tiny_model_learns_the_classes_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_folder(&data, 10, 24, 6);
    std::fs::write(data.join("train/class_03/img_999.jpg"), b"broken").unwrap();
    let data_arg = format!("imagefolder:{}", data.display());
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            &data_arg,
            "--image-size",
            "32",
            "--batch",
            "24",
            "--epochs",
            "2",
            "--lr",
            "0.2",
            "--warmup-epochs",
            "0.2",
            "--eval-batch",
            "60",
            "--log-every",
            "5",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        let o = calib(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let whole = tmp.path().join("whole");
    run(&whole, &[]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(whole.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last_eval = lines
        .iter()
        .rev()
        .find(|l| l.get("test_accuracy").is_some());
    let accuracy = last_eval.unwrap()["test_accuracy"].as_f64().unwrap();
    eprintln!("validation accuracy after 2 epochs: {accuracy}");
    assert!(
        accuracy > 0.3,
        "validation accuracy {accuracy} (chance: 0.1)"
    );
    let skipped = lines
        .iter()
        .filter_map(|l| l["skipped_images"].as_u64())
        .max();
    assert!(skipped >= Some(1), "{lines:?}");
    // Stopped at step 7 of 20 and resumed: the same model, byte for byte.
    let parts = tmp.path().join("parts");
    run(&parts, &["--max-steps", "7"]);
    let o = calib(&["train", "--resume", parts.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = |p: &Path| std::fs::read(p.join("model.safetensors")).unwrap();
    assert!(model(&whole) == model(&parts), "resumed model differs");
}

#[test]
fn the_loader_benchmark_reports_rates_and_bad_data_flags_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    make_folder(tmp.path(), 2, 5, 1);
    let data = format!("imagefolder:{}", tmp.path().display());
    let o = calib(&[
        "bench",
        "--data",
        &data,
        "--images",
        "8",
        "--image-size",
        "32",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["images"], 8);
    assert!(
        v["images_per_second_one_worker"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert!(v["images_per_second"].as_f64().unwrap() > 0.0, "{v}");
    for (args, needle) in [
        (
            vec!["train", "--data", "cifar"],
            "expected `fashion-mnist` or `imagefolder:DIR`",
        ),
        (vec!["train", "--data", "imagefolder:"], "needs a directory"),
        (
            vec!["train", "--image-size", "32"],
            "apply to --data imagefolder:DIR",
        ),
        (
            vec!["bench", "--data", &data, "--image-size", "0"],
            "--image-size 0",
        ),
    ] {
        let o = calib(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle) && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}
