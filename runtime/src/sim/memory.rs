//! Simulated device global memory: allocations at distinct fake addresses, shared by all
//! blocks of a launch while they run in parallel.
//!
//! Each allocation is a run of `AtomicU64` words. An aligned access of 1, 2, 4 or 8 bytes
//! lies inside one word, so loads and stores are single atomic operations (sub-word stores
//! update their bytes with a compare-and-swap loop) and atomics are read-modify-write on
//! one word. Loads acquire and stores release, so a block that observes another block's
//! atomic also observes the writes that preceded it, as a `membar.gl` would guarantee.

use super::error::MemoryError;
use std::sync::atomic::{AtomicU64, Ordering};

/// The first allocation's address: far from zero so null and small integers never look
/// like pointers.
const BASE: u64 = 0x0000_7f00_0000_0000;
/// The end of the simulated global address space.
const LIMIT: u64 = 0x0000_7fff_ffff_0000;
/// Allocation alignment, as `cudaMalloc` gives; an unmapped gap of the same size
/// separates allocations so that running off the end never lands in a neighbour.
const GRANULE: u64 = 256;

struct Allocation {
    base: u64,
    len: usize,
    words: Box<[AtomicU64]>,
}

/// Device global memory for simulated launches.
#[derive(Default)]
pub struct GlobalMemory {
    /// Sorted by base address.
    allocations: Vec<Allocation>,
}

/// Where an access falls, or why it falls nowhere.
pub(crate) type Located<'a> = Result<(&'a [AtomicU64], usize), String>;

impl GlobalMemory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Allocates `bytes` zeroed bytes and returns their device address.
    pub fn alloc(&mut self, bytes: usize) -> Result<u64, MemoryError> {
        let base = match self.allocations.last() {
            Some(a) => (a.base + a.len as u64).next_multiple_of(GRANULE) + GRANULE,
            None => BASE,
        };
        if base.saturating_add(bytes as u64) > LIMIT {
            return Err(MemoryError::Exhausted { bytes });
        }
        let words = (0..bytes.div_ceil(8)).map(|_| AtomicU64::new(0)).collect();
        self.allocations.push(Allocation {
            base,
            len: bytes,
            words,
        });
        Ok(base)
    }

    /// Allocates a buffer holding `values` and returns its device address.
    pub fn upload<T: DeviceValue>(&mut self, values: &[T]) -> Result<u64, MemoryError> {
        let ptr = self.alloc(values.len() * T::BYTES)?;
        self.write(ptr, values)?;
        Ok(ptr)
    }

    /// Writes `values` at device address `ptr`.
    pub fn write<T: DeviceValue>(&mut self, ptr: u64, values: &[T]) -> Result<(), MemoryError> {
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|v| v.to_bits().to_le_bytes().into_iter().take(T::BYTES))
            .collect();
        self.write_bytes(ptr, &bytes)
    }

    /// Reads `count` values of type `T` from device address `ptr`.
    pub fn read<T: DeviceValue>(&self, ptr: u64, count: usize) -> Result<Vec<T>, MemoryError> {
        let bytes = self.read_bytes(ptr, count * T::BYTES)?;
        Ok(bytes
            .chunks_exact(T::BYTES)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..T::BYTES].copy_from_slice(c);
                T::from_bits(u64::from_le_bytes(b))
            })
            .collect())
    }

    pub fn write_bytes(&mut self, ptr: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        let (words, offset) = self.host_range(ptr, bytes.len())?;
        for (i, &b) in bytes.iter().enumerate() {
            store(words, offset + i, 1, b as u64);
        }
        Ok(())
    }

    pub fn read_bytes(&self, ptr: u64, len: usize) -> Result<Vec<u8>, MemoryError> {
        let (words, offset) = self.host_range(ptr, len)?;
        Ok((0..len).map(|i| load(words, offset + i, 1) as u8).collect())
    }

    fn host_range(&self, ptr: u64, len: usize) -> Result<(&[AtomicU64], usize), MemoryError> {
        self.locate(ptr, len).map_err(|_| MemoryError::OutOfBounds {
            addr: ptr,
            bytes: len,
        })
    }

    /// The words and byte offset holding `[addr, addr + bytes)`, or a description of why
    /// no allocation contains it.
    pub(crate) fn locate(&self, addr: u64, bytes: usize) -> Located<'_> {
        let i = self.allocations.partition_point(|a| a.base <= addr);
        let Some(a) = i.checked_sub(1).map(|i| &self.allocations[i]) else {
            return Err("below every allocation".into());
        };
        let offset = addr - a.base;
        if offset
            .checked_add(bytes as u64)
            .is_some_and(|end| end <= a.len as u64)
        {
            return Ok((&a.words, offset as usize));
        }
        let end = a.base + a.len as u64;
        Err(if offset < a.len as u64 {
            format!(
                "runs past the end of the {}-byte allocation at {:#x}",
                a.len, a.base
            )
        } else {
            format!(
                "{} bytes past the end of the {}-byte allocation at {:#x}",
                addr - end,
                a.len,
                a.base
            )
        })
    }
}

/// Loads `bytes` (1, 2, 4 or 8, aligned) at byte `offset` of `words`, zero-extended.
pub(crate) fn load(words: &[AtomicU64], offset: usize, bytes: usize) -> u64 {
    let word = words[offset / 8].load(Ordering::Acquire);
    (word >> ((offset % 8) * 8)) & mask(bytes)
}

/// Stores the low `bytes` of `value` at byte `offset` of `words`.
pub(crate) fn store(words: &[AtomicU64], offset: usize, bytes: usize, value: u64) {
    if bytes == 8 {
        words[offset / 8].store(value, Ordering::Release);
    } else {
        rmw(words, offset, bytes, |_| value);
    }
}

/// Atomically replaces the value at `offset` by `f(old)` and returns `old`.
pub(crate) fn rmw(words: &[AtomicU64], offset: usize, bytes: usize, f: impl Fn(u64) -> u64) -> u64 {
    let shift = (offset % 8) * 8;
    let m = mask(bytes) << shift;
    let prev = words[offset / 8]
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
            let old = (w & m) >> shift;
            Some((w & !m) | ((f(old) << shift) & m))
        })
        .expect("the update closure always succeeds");
    (prev & m) >> shift
}

fn mask(bytes: usize) -> u64 {
    if bytes >= 8 {
        u64::MAX
    } else {
        (1u64 << (bytes * 8)) - 1
    }
}

/// Host values that can be copied to and from device memory (little-endian bits).
pub trait DeviceValue: Copy {
    const BYTES: usize;
    fn to_bits(self) -> u64;
    fn from_bits(bits: u64) -> Self;
}

macro_rules! device_int {
    ($($t:ty),*) => {$(
        impl DeviceValue for $t {
            const BYTES: usize = std::mem::size_of::<$t>();
            fn to_bits(self) -> u64 {
                self as u64
            }
            fn from_bits(bits: u64) -> Self {
                bits as $t
            }
        }
    )*};
}

macro_rules! device_float {
    ($($t:ty => $bits:ty),*) => {$(
        impl DeviceValue for $t {
            const BYTES: usize = std::mem::size_of::<$t>();
            fn to_bits(self) -> u64 {
                <$t>::to_bits(self) as u64
            }
            fn from_bits(bits: u64) -> Self {
                <$t>::from_bits(bits as $bits)
            }
        }
    )*};
}

device_int!(u8, i8, u16, i16, u32, i32, u64, i64);
device_float!(f32 => u32, f64 => u64, half::f16 => u16, half::bf16 => u16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_separate_and_round_trip() {
        let mut mem = GlobalMemory::new();
        let a = mem.upload(&[1.5f32, -2.0, 3.25]).unwrap();
        let b = mem.upload(&[7u8; 5]).unwrap();
        assert_eq!(a % 256, 0);
        assert_eq!(b % 256, 0);
        assert!(b >= a + 12 + 256, "a gap separates allocations");
        assert_eq!(mem.read::<f32>(a, 3).unwrap(), vec![1.5, -2.0, 3.25]);
        assert_eq!(mem.read::<u8>(b + 1, 4).unwrap(), vec![7; 4]);
        mem.write(a + 4, &[9i32]).unwrap();
        assert_eq!(mem.read::<i32>(a + 4, 1).unwrap(), vec![9]);
        assert_eq!(
            mem.read::<f32>(a, 1).unwrap(),
            vec![1.5],
            "neighbours untouched"
        );
    }

    #[test]
    fn accesses_outside_allocations_are_described() {
        let mut mem = GlobalMemory::new();
        let a = mem.alloc(16).unwrap();
        assert!(mem.locate(a + 12, 4).is_ok());
        assert!(mem
            .locate(a + 14, 4)
            .unwrap_err()
            .contains("runs past the end"));
        assert!(mem
            .locate(a + 20, 4)
            .unwrap_err()
            .contains("4 bytes past the end"));
        assert!(mem.locate(8, 4).unwrap_err().contains("below"));
        assert_eq!(
            mem.read::<u32>(a + 16, 1),
            Err(MemoryError::OutOfBounds {
                addr: a + 16,
                bytes: 4
            })
        );
    }

    #[test]
    fn sub_word_updates_keep_their_neighbours() {
        let words: Vec<AtomicU64> = (0..2).map(|_| AtomicU64::new(0)).collect();
        store(&words, 2, 2, 0xbeef);
        store(&words, 4, 4, 0x1234_5678);
        assert_eq!(load(&words, 2, 2), 0xbeef);
        assert_eq!(load(&words, 0, 8), 0x1234_5678_beef_0000);
        assert_eq!(rmw(&words, 4, 4, |old| old + 1), 0x1234_5678);
        assert_eq!(load(&words, 4, 4), 0x1234_5679);
    }
}
