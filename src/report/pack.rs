//! Bulky per-kernel text (PTX, drawn bodies, explanations) stored compressed in the page:
//! zlib (what the browser's `DecompressionStream("deflate")` reads) then base64, so a
//! 40 MB PTX listing fits a page that opens quickly; the page inflates a chunk when a
//! kernel of it is opened.

use flate2::write::ZlibEncoder;
use flate2::Compression;
use std::io::Write;

/// `data` deflated in zlib's format and base64-encoded.
pub fn deflate_base64(data: &[u8]) -> String {
    let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
    z.write_all(data).expect("writing to a Vec");
    base64(&z.finish().expect("writing to a Vec"))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648), what the browser's `atob` reads.
pub fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        // RFC 4648, section 10.
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn deflated_text_inflates_back() {
        let text = "ld.global.f32 %f1, [%rd1];\n".repeat(100);
        let packed = deflate_base64(text.as_bytes());
        assert!(packed.len() < text.len() / 4);
        let bytes = decode(&packed);
        let mut back = String::new();
        ZlibDecoder::new(&bytes[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, text);
    }

    /// The inverse of `base64`, for the test.
    fn decode(s: &str) -> Vec<u8> {
        let value = |c: u8| ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        let mut out = vec![];
        for q in s.as_bytes().chunks(4) {
            let n = q
                .iter()
                .enumerate()
                .filter(|(_, &c)| c != b'=')
                .fold(0, |n, (i, &c)| n | value(c) << (18 - 6 * i));
            let len = q.iter().filter(|&&c| c != b'=').count() - 1;
            out.extend_from_slice(&n.to_be_bytes()[1..1 + len]);
        }
        out
    }
}
