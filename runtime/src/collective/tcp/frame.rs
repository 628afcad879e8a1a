//! The wire format of calib's process groups: every message is one frame,
//!
//! ```text
//! magic "CLB1" (4 bytes) | kind (1 byte) | payload length (u64 LE) | payload
//! ```
//!
//! A reader never trusts the length: the payload is read as it arrives (nothing is
//! allocated up front from a number off the wire), and a stream that ends inside a
//! frame, a wrong magic, an unknown kind or an absurd length is a [`FrameError`] naming
//! what was wrong, never a panic. A stream that ends cleanly *between* frames is
//! [`FrameError::Closed`]: the peer went away.

use crate::Storage;
use std::io::{self, Read, Write};

/// Identifies calib's protocol (and its version) at the start of every frame, so that
/// a stray connection to the rendezvous port is recognised as such.
pub const MAGIC: [u8; 4] = *b"CLB1";

/// No single message is larger: a broadcast state of the largest model calib trains
/// (with momentum) is a few GiB, and a larger number is a corrupt header.
pub const MAX_PAYLOAD: u64 = 1 << 40;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A rank introduces itself to rank 0: `rank: u64, world: u64`.
    Hello = 1,
    /// Rank 0 to every rank: the whole group has arrived.
    Welcome = 2,
    /// Rank 0 refuses or gives up on the group: a UTF-8 message saying why.
    Refuse = 3,
    /// One all-reduce's tensor: `round: u64`, element type, elements (LE).
    Tensor = 4,
    /// A broadcast's bytes.
    Bytes = 5,
    /// Rank 0 abandons a collective because a peer failed: `peer: u64, round: u64,
    /// why: u8` (0: it left, 1: it timed out).
    Abort = 6,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        [
            Kind::Hello,
            Kind::Welcome,
            Kind::Refuse,
            Kind::Tensor,
            Kind::Bytes,
            Kind::Abort,
        ]
        .into_iter()
        .find(|k| *k as u8 == b)
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the connection was closed")]
    Closed,
    #[error("the connection ended inside a message ({got} of {expected} bytes)")]
    Truncated { got: u64, expected: u64 },
    #[error("not calib's protocol (the message starts with {0:02x?}, not \"CLB1\")")]
    BadMagic([u8; 4]),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("a message of {0} bytes is larger than any calib sends ({MAX_PAYLOAD})")]
    TooLarge(u64),
    #[error("nothing arrived within the time limit")]
    TimedOut,
    #[error("{0}")]
    Io(io::Error),
    #[error("malformed {kind:?} message: {why}")]
    Malformed { kind: Kind, why: String },
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FrameError::TimedOut,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => FrameError::Closed,
            _ => FrameError::Io(e),
        }
    }
}

/// Writes one frame.
pub fn write_frame(mut to: impl Write, kind: Kind, payload: &[u8]) -> Result<(), FrameError> {
    let mut header = [0u8; 13];
    header[..4].copy_from_slice(&MAGIC);
    header[4] = kind as u8;
    header[5..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    to.write_all(&header)?;
    to.write_all(payload)?;
    to.flush()?;
    Ok(())
}

/// Reads one frame: its kind and payload.
pub fn read_frame(mut from: impl Read) -> Result<(Kind, Vec<u8>), FrameError> {
    let mut header = [0u8; 13];
    let got = read_up_to(&mut from, &mut header)?;
    if got == 0 {
        return Err(FrameError::Closed);
    }
    let seen = got.min(MAGIC.len());
    if header[..seen] != MAGIC[..seen] {
        let mut magic = [0u8; 4];
        magic[..seen].copy_from_slice(&header[..seen]);
        return Err(FrameError::BadMagic(magic));
    }
    if got < header.len() {
        return Err(FrameError::Truncated {
            got: got as u64,
            expected: header.len() as u64,
        });
    }
    let kind = Kind::from_byte(header[4]).ok_or(FrameError::UnknownKind(header[4]))?;
    let len = u64::from_le_bytes(header[5..].try_into().expect("8 bytes"));
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    // Grown as the bytes arrive, never allocated from the untrusted length.
    let mut payload = Vec::new();
    let got = (&mut from).take(len).read_to_end(&mut payload)? as u64;
    if got < len {
        return Err(FrameError::Truncated {
            got: header.len() as u64 + got,
            expected: header.len() as u64 + len,
        });
    }
    Ok((kind, payload))
}

/// Reads until `buf` is full or the stream ends; how many bytes were read.
fn read_up_to(from: &mut impl Read, buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match from.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

/// Little-endian `u64`s at the start of a payload, and the rest.
pub fn split_u64s<const N: usize>(
    kind: Kind,
    payload: &[u8],
) -> Result<([u64; N], &[u8]), FrameError> {
    if payload.len() < 8 * N {
        return Err(FrameError::Malformed {
            kind,
            why: format!("{} bytes, expected at least {}", payload.len(), 8 * N),
        });
    }
    let mut values = [0u64; N];
    for (i, v) in values.iter_mut().enumerate() {
        *v = u64::from_le_bytes(payload[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    }
    Ok((values, &payload[8 * N..]))
}

/// A tensor frame's payload: `round`, an element-type byte, the elements.
pub fn encode_tensor(round: u64, data: &Storage) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + data.len() * 8);
    out.extend_from_slice(&round.to_le_bytes());
    match data {
        Storage::F32(v) => {
            out.push(0);
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        Storage::F64(v) => {
            out.push(1);
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        Storage::I64(v) => {
            out.push(2);
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
    }
    out
}

/// The round and tensor of a tensor frame's payload.
pub fn decode_tensor(payload: &[u8]) -> Result<(u64, Storage), FrameError> {
    let malformed = |why: String| FrameError::Malformed {
        kind: Kind::Tensor,
        why,
    };
    let ([round], rest) = split_u64s::<1>(Kind::Tensor, payload)?;
    let (&dtype, bytes) = rest
        .split_first()
        .ok_or_else(|| malformed("no element type".into()))?;
    let width = match dtype {
        0 => 4,
        1 | 2 => 8,
        other => return Err(malformed(format!("unknown element type {other}"))),
    };
    if bytes.len() % width != 0 {
        return Err(malformed(format!(
            "{} bytes of elements is not a whole number of {width}-byte elements",
            bytes.len()
        )));
    }
    let storage = match dtype {
        0 => Storage::F32(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
        ),
        1 => Storage::F64(
            bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        ),
        _ => Storage::I64(
            bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        ),
    };
    Ok((round, storage))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![];
        write_frame(&mut out, kind, payload).unwrap();
        out
    }

    #[test]
    fn frames_read_back_as_written_one_after_another() {
        let mut wire = frame(Kind::Bytes, b"abc");
        wire.extend(frame(Kind::Welcome, b""));
        let mut reader = wire.as_slice();
        assert_eq!(
            read_frame(&mut reader).unwrap(),
            (Kind::Bytes, b"abc".to_vec())
        );
        assert_eq!(read_frame(&mut reader).unwrap(), (Kind::Welcome, vec![]));
        assert!(matches!(read_frame(&mut reader), Err(FrameError::Closed)));
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_truncated_at_every_cut() {
        let wire = frame(Kind::Bytes, b"payload");
        for cut in 1..wire.len() {
            match read_frame(&wire[..cut]) {
                Err(FrameError::Truncated { got, expected }) => {
                    assert!(
                        got == cut as u64 && got < expected,
                        "cut {cut}: {got}/{expected}"
                    )
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn garbage_is_refused_by_its_magic_kind_or_length() {
        assert!(matches!(
            read_frame(&b"GET / HTTP/1.1\r\n"[..]),
            Err(FrameError::BadMagic(m)) if &m == b"GET "
        ));
        let mut wire = frame(Kind::Bytes, b"");
        wire[4] = 99;
        assert!(matches!(
            read_frame(wire.as_slice()),
            Err(FrameError::UnknownKind(99))
        ));
        let mut wire = frame(Kind::Bytes, b"");
        wire[5..13].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            read_frame(wire.as_slice()),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn tensors_round_trip_with_their_type_and_round() {
        for data in [
            Storage::F32(vec![1.5, -0.0, f32::NAN]),
            Storage::F64(vec![-2.25]),
            Storage::I64(vec![7, -9]),
        ] {
            let (round, back) = decode_tensor(&encode_tensor(41, &data)).unwrap();
            assert_eq!(round, 41);
            assert_eq!(back.kind(), data.kind());
            assert_eq!(encode_tensor(41, &back), encode_tensor(41, &data));
        }
    }

    #[test]
    fn a_malformed_tensor_is_an_error() {
        let mut payload = encode_tensor(0, &Storage::F32(vec![1.0]));
        payload.pop();
        assert!(matches!(
            decode_tensor(&payload),
            Err(FrameError::Malformed { .. })
        ));
        assert!(matches!(
            decode_tensor(&[1, 2, 3]),
            Err(FrameError::Malformed { .. })
        ));
        let mut payload = encode_tensor(0, &Storage::F32(vec![]));
        payload[8] = 7;
        assert!(matches!(
            decode_tensor(&payload),
            Err(FrameError::Malformed { .. })
        ));
    }
}
