//! Reader for the IDX format of (Fashion-)MNIST, gzipped or plain.
//!
//! The header's dimensions are the file's claim, not a size to allocate: their product
//! is counted without overflow and checked against host memory, and the data is read as
//! it arrives, so a short or lying file is an error before it costs memory.

use anyhow::{bail, Context, Result};
use calib_runtime::memory::{check_host, Need};
use flate2::read::GzDecoder;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// An IDX array: its dimensions and its unsigned-byte elements.
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes (type code 0x08), decompressing `.gz` files.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut file = BufReader::new(file);
    let gzipped = file
        .fill_buf()
        .with_context(|| format!("reading {}", path.display()))?
        .starts_with(&[0x1f, 0x8b]);
    let context = || match gzipped {
        true => format!("parsing IDX file {} (gzipped)", path.display()),
        false => format!("parsing IDX file {}", path.display()),
    };
    if gzipped {
        parse_idx(GzDecoder::new(file)).with_context(context)
    } else {
        parse_idx(file).with_context(context)
    }
}

/// Fills `buf` from `r` with the `what` of the file.
fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => anyhow::anyhow!("the file ends inside the {what}"),
        _ => anyhow::Error::new(e).context(format!("reading the {what}")),
    })
}

fn parse_idx(mut r: impl Read) -> Result<IdxArray> {
    let mut magic = [0u8; 4];
    read_exact(&mut r, &mut magic, "4-byte IDX magic number")?;
    if magic[0] != 0 || magic[1] != 0 {
        bail!("missing IDX magic number");
    }
    if magic[2] != 0x08 {
        bail!("element type 0x{:02x} is not unsigned byte", magic[2]);
    }
    let mut header = vec![0u8; 4 * magic[3] as usize];
    read_exact(&mut r, &mut header, "IDX header (the dimensions)")?;
    let dims: Vec<usize> = header
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let Some(count) = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) else {
        bail!("dims {dims:?} hold more elements than a 64-bit count");
    };
    check_host(&Need {
        what: format!("an IDX array of dims {dims:?}"),
        parts: vec![("elements", count as u64)],
    })?;
    // One byte more than the header claims, to tell trailing bytes from none.
    let mut data = Vec::new();
    r.take(count as u64 + 1)
        .read_to_end(&mut data)
        .context("reading the data")?;
    if data.len() != count {
        bail!(
            "expected {count} data bytes for dims {dims:?}, found {}",
            match data.len() > count {
                true => "more".to_string(),
                false => format!("{} (truncated?)", data.len()),
            }
        );
    }
    Ok(IdxArray { dims, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<IdxArray> {
        parse_idx(bytes)
    }

    fn error(bytes: &[u8]) -> String {
        format!("{:#}", parse(bytes).err().expect("must be refused"))
    }

    #[test]
    fn parses_a_small_array_and_rejects_bad_ones() {
        let mut b = vec![0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        b.extend([1, 2, 3, 4, 5, 6]);
        let a = parse(&b).unwrap();
        assert_eq!(a.dims, vec![2, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
        let err = error(&b[..b.len() - 1]);
        assert!(
            err.contains("expected 6 data bytes") && err.contains("found 5"),
            "{err}"
        );
        let mut long = b.clone();
        long.push(7);
        assert!(error(&long).contains("found more"));
        let mut wrong = b.clone();
        wrong[2] = 0x0d;
        assert!(error(&wrong).contains("0x0d"));
        assert!(error(&b[..6]).contains("ends inside the IDX header"));
        assert!(error(&[0, 0]).contains("ends inside the 4-byte IDX magic number"));
    }

    #[test]
    fn claimed_dims_are_counted_without_overflow_and_checked_before_reading() {
        // Four dims of 2^16 are 2^64 elements: a wrapping product would claim 0.
        let mut b = vec![0, 0, 8, 4];
        for _ in 0..4 {
            b.extend(65536u32.to_be_bytes());
        }
        let err = error(&b);
        assert!(err.contains("64-bit count"), "{err}");
        // 2^48 bytes are counted, then checked against memory, where they never fit.
        let mut b = vec![0, 0, 8, 3];
        for d in [65536u32, 65536, 65536] {
            b.extend(d.to_be_bytes());
        }
        let err = error(&b);
        assert!(err.contains("not enough memory"), "{err}");
    }
}
