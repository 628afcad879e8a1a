//! Cubins assembled ahead of loading: `ptxas` turns a kernel's PTX into machine code for
//! the GPU's exact architecture, and the result is kept in the user's cache, so a first
//! run does not wait for the driver to JIT-compile hundreds of modules one by one, and a
//! later run does not run `ptxas` at all.
//!
//! An entry is keyed by a hash of the PTX text, the architecture and `ptxas --version`:
//! a new compiler, a new GPU or a changed kernel never meets a stale cubin. Entries are
//! written atomically and carry their key, length and a checksum of their contents, so
//! a corrupt or truncated one is detected (and rebuilt) instead of reaching the driver.
//!
//! The cache directory is `$CALIB_CACHE_DIR`, else `$XDG_CACHE_HOME/calib`, else
//! `~/.cache/calib`; cubins live in its `cubin/` folder.

use crate::sim::ptxas::{self, PtxasError};
use crate::write_atomic;
use std::path::{Path, PathBuf};

/// The user's calib cache directory (see the module documentation), if one can be named.
pub fn cache_dir() -> Option<PathBuf> {
    cache_dir_in(|name| std::env::var_os(name))
}

/// [`cache_dir`] with the environment given as a lookup.
fn cache_dir_in(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("CALIB_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("calib")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("calib")))
}

/// Where a cubin came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A valid cache entry.
    Cache,
    /// `ptxas`, just now.
    Assembled,
}

/// Machine code for one module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cubin {
    pub image: Vec<u8>,
    pub origin: Origin,
}

/// A `ptxas` and the cache of what it assembled.
#[derive(Clone, Debug)]
pub struct Assembler {
    ptxas: PathBuf,
    version: String,
    /// The `cubin/` folder of the cache directory; `None`: no cache.
    cache: Option<PathBuf>,
}

/// The first bytes of every cache entry (format version 1).
const MAGIC: &[u8; 12] = b"CALIBCUBIN1\n";
/// Magic, key, payload length, payload checksum.
const HEADER_BYTES: usize = 12 + 16 + 8 + 16;

impl Assembler {
    /// `ptxas` as [`ptxas::find_ptxas`] finds it, caching in [`cache_dir`].
    pub fn find() -> Result<Self, PtxasError> {
        Self::new(ptxas::find_ptxas()?, cache_dir())
    }

    /// A given `ptxas`, caching under `cache_dir` (none: assemble every time).
    pub fn new(ptxas: PathBuf, cache_dir: Option<PathBuf>) -> Result<Self, PtxasError> {
        let version = ptxas::version(&ptxas)?;
        Ok(Assembler {
            ptxas,
            version,
            cache: cache_dir.map(|d| d.join("cubin")),
        })
    }

    pub fn ptxas(&self) -> &Path {
        &self.ptxas
    }

    /// The release line of `ptxas --version` (`Cuda compilation tools, release 12.9,
    /// V12.9.86`), or its last line.
    pub fn version(&self) -> &str {
        let lines = || self.version.lines();
        lines()
            .find(|l| l.contains("release"))
            .or_else(|| lines().last())
            .unwrap_or_default()
    }

    /// The cubin of `ptx` for `arch` (`sm_90`): from the cache when a valid entry is
    /// there, else assembled and stored. A cache that cannot be written is no error (the
    /// cubin is still returned); `stored` says whether it was.
    pub fn cubin(&self, ptx: &str, arch: &str) -> Result<(Cubin, Result<(), String>), PtxasError> {
        let key = fnv128(&[
            b"calib-cubin",
            arch.as_bytes(),
            self.version.as_bytes(),
            ptx.as_bytes(),
        ]);
        let entry = self
            .cache
            .as_ref()
            .map(|d| d.join(format!("{key:032x}.cubin")));
        if let Some(image) = entry
            .as_ref()
            .and_then(|e| std::fs::read(e).ok())
            .and_then(|bytes| decode(key, &bytes))
        {
            let cubin = Cubin {
                image,
                origin: Origin::Cache,
            };
            return Ok((cubin, Ok(())));
        }
        let image = ptxas::assemble_cubin(&self.ptxas, ptx, arch)?;
        let stored = match &entry {
            Some(path) => store(path, &encode(key, &image)),
            None => Err("no cache directory: set CALIB_CACHE_DIR or HOME".into()),
        };
        Ok((
            Cubin {
                image,
                origin: Origin::Assembled,
            },
            stored,
        ))
    }
}

fn store(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().expect("entries are in a folder");
    std::fs::create_dir_all(dir)
        .and_then(|()| write_atomic(path, bytes))
        .map_err(|e| format!("cannot write the cubin cache {}: {e}", dir.display()))
}

/// An entry: magic, key, payload length, payload checksum, payload.
fn encode(key: u128, image: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + image.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&(image.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv128(&[image]).to_le_bytes());
    out.extend_from_slice(image);
    out
}

/// The payload of a whole, uncorrupted entry for `key`; `None` for anything else.
fn decode(key: u128, bytes: &[u8]) -> Option<Vec<u8>> {
    let header = bytes.get(..HEADER_BYTES)?;
    let payload = &bytes[HEADER_BYTES..];
    let field = |range: std::ops::Range<usize>| &header[range];
    let stored_key = u128::from_le_bytes(field(12..28).try_into().ok()?);
    let length = u64::from_le_bytes(field(28..36).try_into().ok()?);
    let checksum = u128::from_le_bytes(field(36..52).try_into().ok()?);
    let whole = &header[..12] == MAGIC
        && stored_key == key
        && length == payload.len() as u64
        && checksum == fnv128(&[payload])
        && payload.starts_with(b"\x7fELF");
    whole.then(|| payload.to_vec())
}

/// 128-bit FNV-1a over `parts`, each followed by a separator byte so that part
/// boundaries count. Not cryptographic: it names and checks the user's own cache.
fn fnv128(parts: &[&[u8]]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = OFFSET;
    for part in parts {
        for &b in part.iter().chain(&[0xff]) {
            h ^= b as u128;
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_and_any_damage_is_detected() {
        let image = b"\x7fELF and some machine code".to_vec();
        let entry = encode(7, &image);
        assert_eq!(decode(7, &entry), Some(image.clone()));
        assert_eq!(decode(8, &entry), None, "another key");
        assert_eq!(decode(7, &entry[..entry.len() - 1]), None, "truncated");
        assert_eq!(decode(7, &entry[..HEADER_BYTES - 1]), None, "header cut");
        for at in [0, 20, 30, 40, HEADER_BYTES + 3] {
            let mut bad = entry.clone();
            bad[at] ^= 0x10;
            assert_eq!(decode(7, &bad), None, "byte {at} flipped");
        }
        let not_elf = encode(7, b"plain text");
        assert_eq!(decode(7, &not_elf), None);
    }

    #[test]
    fn part_boundaries_change_the_hash() {
        assert_ne!(fnv128(&[b"ab", b"c"]), fnv128(&[b"a", b"bc"]));
        assert_ne!(fnv128(&[b"sm_80", b"x"]), fnv128(&[b"sm_90", b"x"]));
    }

    #[test]
    fn the_cache_directory_follows_the_environment() {
        let dir = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            cache_dir_in(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.into()))
        };
        let all = [
            ("CALIB_CACHE_DIR", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(dir(&all), Some(PathBuf::from("/c")));
        assert_eq!(
            dir(&[
                ("CALIB_CACHE_DIR", ""),
                ("XDG_CACHE_HOME", "/x"),
                ("HOME", "/h")
            ]),
            Some(PathBuf::from("/x/calib"))
        );
        assert_eq!(dir(&all[2..]), Some(PathBuf::from("/h/.cache/calib")));
        assert_eq!(dir(&[]), None);
    }
}
