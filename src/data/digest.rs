//! A digest of a training batch as the step received it (pixels after augmentation,
//! and labels), reported per metrics line: two runs whose lines carry the same digests
//! trained on the same samples in the same order with the same crops and flips, which
//! is what a resumed run promises and what a user comparing loaders or machines asks.
//!
//! FNV-1a over 64-bit lanes (each pixel's f32 bits, then each label): cheap enough for
//! the loader thread, which computes it while the step runs, and any change of one bit
//! in any image changes it. A line covering several steps chains their digests in step
//! order. Not cryptographic.
//!
//! A batch split among data-parallel replicas is digested shard by shard, the shards'
//! digests chained in rank order ([`sharded_digest`]; one shard: the batch's own
//! digest), so a group of processes, each of which only ever holds its own shard, reports
//! the digest that `--replicas N` threads report for the whole batch.

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// The digest of one batch.
pub fn batch_digest(pixels: &[f32], labels: &[i64]) -> u64 {
    let mut h = OFFSET;
    for p in pixels {
        h = (h ^ u64::from(p.to_bits())).wrapping_mul(PRIME);
    }
    for &l in labels {
        h = (h ^ l as u64).wrapping_mul(PRIME);
    }
    h
}

/// The digest of a batch split into `shards` equal shards of rows (labels and pixels
/// alike): their digests chained in order. `shards` must divide the rows.
pub fn sharded_digest(pixels: &[f32], labels: &[i64], shards: usize) -> u64 {
    let shards = shards.max(1);
    let (rows, per_row) = (labels.len() / shards, pixels.len() / labels.len().max(1));
    (0..shards)
        .fold(None, |h, r| {
            let pixels = &pixels[r * rows * per_row..(r + 1) * rows * per_row];
            Some(chain(
                h,
                batch_digest(pixels, &labels[r * rows..(r + 1) * rows]),
            ))
        })
        .expect("at least one shard")
}

/// The digest of the batches digested `earlier` followed by one digested `next`.
pub fn chain(earlier: Option<u64>, next: u64) -> u64 {
    match earlier {
        None => next,
        // FNV continued over `next`'s bytes: `(a ^ b) * P` alone would be symmetric,
        // and two batches swapped would go unnoticed.
        Some(h) => next
            .to_le_bytes()
            .iter()
            .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME)),
    }
}

/// How a digest is written in `metrics.jsonl`: 16 hexadecimal digits.
pub fn show(digest: u64) -> String {
    format!("{digest:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_changes_with_any_pixel_label_or_order() {
        let (pixels, labels) = (vec![0.5f32, -1.0, 2.0, 0.0], vec![1i64, 3]);
        let base = batch_digest(&pixels, &labels);
        assert_eq!(base, batch_digest(&pixels, &labels));
        let mut flipped = pixels.clone();
        flipped.swap(0, 1);
        let mut negative_zero = pixels.clone();
        negative_zero[3] = -0.0;
        for (p, l) in [
            (flipped, labels.clone()),
            (negative_zero, labels.clone()),
            (pixels.clone(), vec![3, 1]),
        ] {
            assert_ne!(batch_digest(&p, &l), base);
        }
        // Chained: two batches in the other order differ; one alone is its own digest.
        let other = batch_digest(&[1.0; 4], &[0, 0]);
        assert_ne!(chain(Some(base), other), chain(Some(other), base));
        assert_eq!(chain(None, other), other);
        assert_eq!(show(0xab), "00000000000000ab");
    }

    #[test]
    fn a_sharded_digest_chains_the_shards_and_one_shard_is_the_batch() {
        let pixels: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let labels = vec![0i64, 1, 2, 3];
        assert_eq!(
            sharded_digest(&pixels, &labels, 1),
            batch_digest(&pixels, &labels)
        );
        let halves = chain(
            Some(batch_digest(&pixels[..6], &labels[..2])),
            batch_digest(&pixels[6..], &labels[2..]),
        );
        assert_eq!(sharded_digest(&pixels, &labels, 2), halves);
        assert_ne!(halves, batch_digest(&pixels, &labels));
    }
}
