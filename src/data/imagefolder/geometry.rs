//! The geometry of torchvision's ImageNet transforms, as pure functions of the image size
//! (and, for the random crop, of a generator), so that they can be checked by hand.
//!
//! Training: `RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))`, then a
//! horizontal flip with p = 0.5. Validation: `Resize(size * 256 / 224)` of the shorter
//! side, then `CenterCrop(size)`. Python's `round` (ties to even) and `int` (truncation)
//! are reproduced where torchvision uses them, so the boxes are the same integers.

use crate::data::rng::Rng;

/// torchvision's defaults for `RandomResizedCrop`.
pub const SCALE: (f64, f64) = (0.08, 1.0);
pub const RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// A box of source pixels: rows `top..top + height`, columns `left..left + width`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crop {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

/// torchvision's `RandomResizedCrop.get_params`: ten tries at an area fraction drawn
/// uniformly from `SCALE` and an aspect ratio drawn log-uniformly from `RATIO`; if none
/// fits, the largest centred box whose ratio is clamped to `RATIO`.
pub fn random_resized_crop(width: u32, height: u32, rng: &mut Rng) -> Crop {
    let area = width as f64 * height as f64;
    let (log_lo, log_hi) = (RATIO.0.ln(), RATIO.1.ln());
    for _ in 0..10 {
        let target = area * uniform(rng, SCALE.0, SCALE.1);
        let aspect = uniform(rng, log_lo, log_hi).exp();
        let w = (target * aspect).sqrt().round_ties_even();
        let h = (target / aspect).sqrt().round_ties_even();
        if w > 0.0 && w <= width as f64 && h > 0.0 && h <= height as f64 {
            let (w, h) = (w as u32, h as u32);
            // torch.randint(0, height - h + 1): every top row that keeps the box inside.
            let top = rng.below((height - h) as u64 + 1) as u32;
            let left = rng.below((width - w) as u64 + 1) as u32;
            return Crop {
                top,
                left,
                height: h,
                width: w,
            };
        }
    }
    centre_fallback(width, height)
}

/// The fallback of `get_params`: the whole image if its ratio is within `RATIO`, else the
/// full height or width with the other side cut to the nearest end of the range.
pub fn centre_fallback(width: u32, height: u32) -> Crop {
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < RATIO.0 {
        let h = (width as f64 / RATIO.0).round_ties_even() as u32;
        (width, h.clamp(1, height))
    } else if in_ratio > RATIO.1 {
        let w = (height as f64 * RATIO.1).round_ties_even() as u32;
        (w.clamp(1, width), height)
    } else {
        (width, height)
    };
    Crop {
        top: (height - h) / 2,
        left: (width - w) / 2,
        height: h,
        width: w,
    }
}

/// The side the validation transform resizes the shorter side to: `size * 256 / 224`
/// (256 for the usual 224), truncated as `int(size / 0.875)` is in the reference scripts.
pub fn resize_side(size: u32) -> u32 {
    (size as u64 * 256 / 224) as u32
}

/// torchvision's `Resize(side)` of an image: the shorter side becomes `side`, the longer
/// `int(side * long / short)` (truncated, at least 1).
pub fn resized_shape(width: u32, height: u32, side: u32) -> (u32, u32) {
    let (short, long) = (width.min(height) as u64, width.max(height) as u64);
    let new_long = ((side as u64 * long) / short.max(1)).max(1) as u32;
    if width <= height {
        (side, new_long)
    } else {
        (new_long, side)
    }
}

/// torchvision's `CenterCrop(size)` box within a `width` x `height` image:
/// `round((h - size) / 2)` with ties to even. Both sides must be at least `size`
/// (the resize above guarantees it).
pub fn centre_crop(width: u32, height: u32, size: u32) -> Crop {
    let offset = |extent: u32| ((extent - size) as f64 / 2.0).round_ties_even() as u32;
    Crop {
        top: offset(height),
        left: offset(width),
        height: size,
        width: size,
    }
}

/// Uniform in `[lo, hi)`, as `torch.empty(1).uniform_(lo, hi)`.
fn uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.unit_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_boxes_stay_inside_and_within_scale_and_ratio() {
        let mut rng = Rng::new(11);
        for (w, h) in [(500, 375), (375, 500), (64, 48), (7, 300), (1, 1)] {
            for _ in 0..500 {
                let c = random_resized_crop(w, h, &mut rng);
                assert!(c.width >= 1 && c.height >= 1, "{c:?}");
                assert!(
                    c.left + c.width <= w && c.top + c.height <= h,
                    "{c:?} in {w}x{h}"
                );
                let fallback = centre_fallback(w, h);
                if c != fallback {
                    // A drawn box: the area and ratio before rounding were in range, so
                    // after rounding each side by at most half a pixel they are close.
                    let area = (c.width * c.height) as f64 / (w * h) as f64;
                    let slack = (c.width + c.height) as f64 / (w * h) as f64;
                    assert!(area >= SCALE.0 - slack && area <= 1.0 + slack, "{c:?}");
                    let ratio = c.width as f64 / c.height as f64;
                    let lo = (c.width as f64 - 0.5) / (c.height as f64 + 0.5);
                    let hi = (c.width as f64 + 0.5) / (c.height as f64 - 0.5).max(0.5);
                    assert!(hi >= RATIO.0 && lo <= RATIO.1, "ratio {ratio} of {c:?}");
                }
            }
        }
    }

    #[test]
    fn fallback_clamps_the_ratio_and_centres() {
        // 1000x100 is wider than 4/3: full height, width round(100 * 4/3) = 133.
        let c = centre_fallback(1000, 100);
        assert_eq!(
            c,
            Crop {
                top: 0,
                left: 433,
                height: 100,
                width: 133
            }
        );
        // 100x1000 is taller than 3/4: full width, height round(100 / 0.75) = 133.
        let c = centre_fallback(100, 1000);
        assert_eq!(
            c,
            Crop {
                top: 433,
                left: 0,
                height: 133,
                width: 100
            }
        );
        assert_eq!(
            centre_fallback(40, 40),
            Crop {
                top: 0,
                left: 0,
                height: 40,
                width: 40
            }
        );
    }

    #[test]
    fn validation_geometry_matches_torchvision() {
        assert_eq!(resize_side(224), 256);
        assert_eq!(resize_side(32), 36);
        // 500x375 landscape: the height becomes 256, the width int(256 * 500 / 375) = 341.
        assert_eq!(resized_shape(500, 375, 256), (341, 256));
        assert_eq!(resized_shape(375, 500, 256), (256, 341));
        // (341 - 224) / 2 = 58.5 rounds to even: 58; (256 - 224) / 2 = 16.
        assert_eq!(
            centre_crop(341, 256, 224),
            Crop {
                top: 16,
                left: 58,
                height: 224,
                width: 224
            }
        );
        // 59.5 rounds to 60.
        assert_eq!(centre_crop(343, 224, 224).left, 60);
    }
}
