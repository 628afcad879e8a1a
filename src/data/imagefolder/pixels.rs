//! From an image file to the normalized NCHW floats of one sample: decoding (the `image`
//! crate, JPEG and PNG only), the crop-and-resize (fast_image_resize's bilinear
//! convolution, which widens the filter by the scale factor when shrinking, as PIL and
//! torchvision's `antialias=True` do), the flip, `/255` and the per-channel normalization.
//!
//! torchvision crops and then resizes the cropped image, so the filter near the box's
//! edge sees only pixels inside the box; a `CroppedImage` view gives the resizer exactly
//! that image without copying it.

use super::geometry::Crop;
use anyhow::{anyhow, bail, Context, Result};
use fast_image_resize::images::{CroppedImage, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use std::cell::RefCell;
use std::path::Path;

/// ImageNet's per-channel mean and standard deviation (of pixels scaled to [0, 1]), the
/// normalization every torchvision ImageNet model is trained with.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A decoded image, 8-bit RGB, rows top to bottom.
pub struct Rgb {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// Decodes `bytes` (the file `path`, named in errors) to RGB, as PIL's `convert("RGB")`:
/// grey, grey with alpha, 16-bit and RGBA images are converted (alpha dropped).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Rgb> {
    let image = image::load_from_memory(bytes)
        .with_context(|| format!("cannot decode {}", path.display()))?;
    let rgb = image.into_rgb8();
    let (width, height) = rgb.dimensions();
    if width == 0 || height == 0 {
        bail!("{} has no pixels ({width}x{height})", path.display());
    }
    Ok(Rgb {
        width,
        height,
        data: rgb.into_raw(),
    })
}

thread_local! {
    // The resizer keeps buffers between calls; one per worker thread avoids allocating
    // them for every image.
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// The `crop` of `image` resized to `width` x `height` with the bilinear filter.
pub fn crop_resize(image: &Rgb, crop: Crop, width: u32, height: u32) -> Result<Rgb> {
    let src = ImageRef::new(image.width, image.height, &image.data, PixelType::U8x3)
        .map_err(|e| anyhow!("image buffer: {e}"))?;
    let view =
        CroppedImage::new(&src, crop.left, crop.top, crop.width, crop.height).map_err(|e| {
            anyhow!(
                "crop {crop:?} of a {}x{} image: {e}",
                image.width,
                image.height
            )
        })?;
    let mut dst = Image::new(width, height, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    RESIZER
        .with(|r| r.borrow_mut().resize(&view, &mut dst, &options))
        .map_err(|e| anyhow!("resize to {width}x{height}: {e}"))?;
    Ok(Rgb {
        width,
        height,
        data: dst.into_vec(),
    })
}

/// Writes `image` into one sample's planes of a batch (`out`: 3 x h x w, channel-major),
/// scaled to [0, 1] and normalized by [`MEAN`] and [`STD`], mirrored left to right when
/// `flip`.
pub fn write_normalized(image: &Rgb, flip: bool, out: &mut [f32]) {
    let (w, h) = (image.width as usize, image.height as usize);
    debug_assert_eq!(out.len(), 3 * w * h);
    // (v / 255 - mean) / std = v * a + b, folded once per channel.
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * STD[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| -MEAN[c] / STD[c]);
    let (r, rest) = out.split_at_mut(w * h);
    let (g, b) = rest.split_at_mut(w * h);
    for y in 0..h {
        let row = &image.data[y * w * 3..(y + 1) * w * 3];
        for x in 0..w {
            let px = &row[x * 3..x * 3 + 3];
            let at = y * w + if flip { w - 1 - x } else { x };
            r[at] = px[0] as f32 * scale[0] + shift[0];
            g[at] = px[1] as f32 * scale[1] + shift[1];
            b[at] = px[2] as f32 * scale[2] + shift[2];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_planes_are_channel_major_and_flip_mirrors_columns() {
        // 2x1 image: a red pixel, then a blue one.
        let image = Rgb {
            width: 2,
            height: 1,
            data: vec![255, 0, 0, 0, 0, 255],
        };
        let norm = |v: f32, c: usize| (v / 255.0 - MEAN[c]) / STD[c];
        let mut out = [0f32; 6];
        write_normalized(&image, false, &mut out);
        let want = [
            norm(255., 0),
            norm(0., 0),
            norm(0., 1),
            norm(0., 1),
            norm(0., 2),
            norm(255., 2),
        ];
        for (got, want) in out.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{out:?}");
        }
        write_normalized(&image, true, &mut out);
        assert!((out[0] - norm(0., 0)).abs() < 1e-6 && (out[5] - norm(0., 2)).abs() < 1e-6);
    }

    #[test]
    fn a_uniform_image_stays_uniform_through_any_resize() {
        let image = Rgb {
            width: 50,
            height: 37,
            data: [10u8, 130, 250].repeat(50 * 37),
        };
        let crop = Crop {
            top: 3,
            left: 5,
            height: 30,
            width: 41,
        };
        for (w, h) in [(7, 9), (41, 30), (100, 64)] {
            let out = crop_resize(&image, crop, w, h).unwrap();
            assert!(out.data.chunks(3).all(|p| p == [10, 130, 250]), "{w}x{h}");
        }
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let err = decode(Path::new("x/y.jpg"), b"not an image").err().unwrap();
        assert!(format!("{err:#}").contains("x/y.jpg"));
    }
}
