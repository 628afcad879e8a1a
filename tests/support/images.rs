//! Small image folder data sets made on the fly: each class has a colour of its own and a
//! stripe direction of its own, in JPEG or PNG files of varied sizes, so that a tiny
//! model learns the classes within two epochs and every transform sees odd shapes.

use image::{ImageFormat, Rgb, RgbImage};
use std::path::Path;

/// The colour of class `k` of 10: hues around the circle.
fn class_colour(k: usize) -> [f32; 3] {
    let hue = k as f32 / 10.0 * std::f32::consts::TAU;
    let c = |shift: f32| 0.5 + 0.45 * (hue + shift).cos();
    [c(0.0), c(2.094), c(4.189)]
}

/// One image of class `k`, `w` x `h`, with sample-dependent noise (`n`).
pub fn class_image(k: usize, n: usize, w: u32, h: u32) -> RgbImage {
    let colour = class_colour(k);
    RgbImage::from_fn(w, h, |x, y| {
        // Stripes whose direction depends on the class; brightness varies per sample.
        let phase = if k.is_multiple_of(2) { x } else { y } as f32 * 0.8 + n as f32;
        let stripe = 0.75 + 0.25 * phase.sin();
        let noise = ((x * 7 + y * 13 + n as u32 * 31) % 17) as f32 / 17.0 * 0.1;
        let v = |c: f32| ((c * stripe + noise) * 255.0).clamp(0.0, 255.0) as u8;
        Rgb([v(colour[0]), v(colour[1]), v(colour[2])])
    })
}

/// Writes `DIR/{train,val}/class_K/img_N.{jpg,png}`: `classes` classes, `train` and `val`
/// images each, sizes between 40 and 72 pixels a side.
pub fn make_folder(dir: &Path, classes: usize, train: usize, val: usize) {
    for (split, count) in [("train", train), ("val", val)] {
        for k in 0..classes {
            let folder = dir.join(split).join(format!("class_{k:02}"));
            std::fs::create_dir_all(&folder).unwrap();
            for n in 0..count {
                let (w, h) = (40 + (n * 7 % 33) as u32, 40 + (n * 11 % 29) as u32);
                let img = class_image(k, n + if split == "val" { 1000 } else { 0 }, w, h);
                let (ext, format) = if n % 3 == 2 {
                    ("png", ImageFormat::Png)
                } else {
                    ("jpg", ImageFormat::Jpeg)
                };
                img.save_with_format(folder.join(format!("img_{n:03}.{ext}")), format)
                    .unwrap();
            }
        }
    }
}
