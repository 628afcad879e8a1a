//! The memory a run needs at its peak, checked against what the machine has before
//! anything is allocated.
//!
//! A batch or a model too large for the machine must be refused with the figures, not
//! end the process in the allocator ("memory allocation of N bytes failed" is an
//! abort, and on Linux an overcommitted allocation may instead be killed later). Each
//! backend states its plan's peak as a [`Need`]: the reference interpreter its bound
//! tensors, the values live at once and its convolution workspaces; the simulator
//! every buffer of the plan; the GPU executor its arena. [`check`] compares it with
//! the limit of the place it is held: [`host_available`] for host memory, the driver's
//! free memory for a GPU.

use crate::RuntimeError;

/// One part of a peak, for the message: what it is and its bytes.
pub type Part = (&'static str, u64);

/// What a run holds at its peak in one place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    /// What runs (`the reference interpreter's step`), for the message.
    pub what: String,
    /// Its parts; they are all held at once.
    pub parts: Vec<Part>,
}

impl Need {
    /// The peak: every part together (saturating; the IR bounds each tensor to 2^48
    /// bytes, so only absurd plans get near `u64::MAX`).
    pub fn bytes(&self) -> u64 {
        self.parts
            .iter()
            .fold(0u64, |n, (_, b)| n.saturating_add(*b))
    }
}

/// How much memory a place has for a run, and where the figure comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    pub bytes: u64,
    /// `MemAvailable in /proc/meminfo`, `free memory of GPU 0`.
    pub source: String,
}

/// Host memory a new allocation can take without swapping: `MemAvailable` of
/// `/proc/meminfo`. `None` where the kernel does not say (not Linux), and then no
/// check is made.
pub fn host_available() -> Option<Limit> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    mem_available(&text).map(|bytes| Limit {
        bytes,
        source: "MemAvailable in /proc/meminfo".into(),
    })
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// Refuses `need` when it is over `limit`, with both figures and the parts; no limit
/// (the place does not say) lets it pass.
pub fn check(need: &Need, limit: Option<&Limit>) -> Result<(), RuntimeError> {
    let bytes = need.bytes();
    match limit {
        Some(limit) if bytes > limit.bytes => Err(RuntimeError::OutOfMemory {
            what: need.what.clone(),
            required: bytes,
            parts: need
                .parts
                .iter()
                .filter(|(_, b)| *b > 0)
                .map(|(what, b)| format!("{what} {}", human(*b)))
                .collect::<Vec<_>>()
                .join(", "),
            available: limit.bytes,
            limit: limit.source.clone(),
        }),
        _ => Ok(()),
    }
}

/// Checks `need` against host memory ([`host_available`]).
pub fn check_host(need: &Need) -> Result<(), RuntimeError> {
    check(need, host_available().as_ref())
}

/// `1.5 GiB`: bytes for a reader, beside the exact figure.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} bytes"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_read_in_bytes() {
        let text = "MemTotal:       32768000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(mem_available(text), Some(2048 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: lots\n"), None);
        assert_eq!(mem_available("MemAvailable: 5 MB\n"), None);
    }

    #[test]
    fn a_need_over_the_limit_is_refused_with_both_figures() {
        let need = Need {
            what: "the step".into(),
            parts: vec![("values", 3 << 30), ("workspace", 0), ("inputs", 1 << 30)],
        };
        let limit = Limit {
            bytes: 2 << 30,
            source: "the test".into(),
        };
        let e = check(&need, Some(&limit)).unwrap_err().to_string();
        for part in [
            "the step",
            "4294967296 bytes (4.0 GiB",
            "values 3.0 GiB, inputs 1.0 GiB",
            "2147483648 bytes (2.0 GiB) are available (the test)",
        ] {
            assert!(e.contains(part), "`{part}` missing from: {e}");
        }
        assert!(!e.contains("workspace"), "{e}");
        let roomy = Limit {
            bytes: 4 << 30,
            ..limit
        };
        assert_eq!(check(&need, Some(&roomy)), Ok(()));
        assert_eq!(check(&need, None), Ok(()));
        let saturated = Need {
            what: "x".into(),
            parts: vec![("a", u64::MAX), ("b", 1)],
        };
        assert_eq!(saturated.bytes(), u64::MAX);
    }

    #[test]
    fn this_machine_says_how_much_memory_it_has() {
        if cfg!(target_os = "linux") {
            let limit = host_available().expect("Linux has MemAvailable");
            assert!(limit.bytes > 0);
        }
        assert_eq!(human(512), "512 bytes");
        assert_eq!(human(60_211_200_000), "56.1 GiB");
    }
}
