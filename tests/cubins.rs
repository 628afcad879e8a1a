//! Cubins for the `cuda` backend, checked without a GPU: a training step's kernels
//! assembled by `ptxas` for sm_90 and sm_80, a second load served by the cache without
//! running `ptxas`, a damaged cache entry rebuilt, and a missing or failing `ptxas`
//! leaving the PTX to the driver with the reason stated. Needs the `.venv` ptxas
//! (`scripts/setup.sh`); `CALIB_SKIP_PTXAS=1` skips what assembles.

mod support;

use calib::device::compile_graph;
use calib::ir::{DType, Mode};
use calib::models::build;
use calib::passes::fusion::FusionOptions;
use calib::passes::{train_step, TrainConfig};
use calib::runtime::cuda::cubin::Assembler;
use calib::runtime::cuda::modules::{module_images, representatives, Image};
use calib::runtime::sim::ptxas;
use calib::runtime::DeviceKernel;
use calib::{resolve_model, with_batch};
use std::path::{Path, PathBuf};
use std::time::Instant;
use support::fixture;

/// The real ptxas, or `None` where `CALIB_SKIP_PTXAS=1` says to skip assembling.
fn real_ptxas() -> Option<PathBuf> {
    if std::env::var("CALIB_SKIP_PTXAS").is_ok_and(|v| v == "1") {
        return None;
    }
    Some(
        ptxas::find_ptxas().unwrap_or_else(|e| {
            panic!("{e}\n(set CALIB_SKIP_PTXAS=1 to skip assembling with ptxas)")
        }),
    )
}

/// A ptxas that logs every assembly (not `--version` or `--help`) to `log`, then runs
/// `real`; or, if `refuse`, fails every assembly.
fn counting_ptxas(dir: &Path, real: &Path, log: &Path, refuse: bool) -> PathBuf {
    let script = dir.join(if refuse { "refusing-ptxas" } else { "ptxas" });
    let assemble = match refuse {
        true => "echo 'ptxas fatal : refused by the test' >&2; exit 1".to_string(),
        false => format!("exec '{}' \"$@\"", real.display()),
    };
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in --version|--help) exec '{}' \"$1\";; esac\necho run >> '{}'\n{assemble}\n",
            real.display(),
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// An assembler over [`counting_ptxas`] with a cache in `dir`: it, the log of ptxas
/// runs, and the cache directory.
fn counting_assembler(dir: &Path, real: &Path) -> (Assembler, PathBuf, PathBuf) {
    let log = dir.join("runs.log");
    let ptxas = counting_ptxas(dir, real, &log, false);
    let cache = dir.join("cache");
    let assembler = Assembler::new(ptxas, Some(cache.clone())).unwrap();
    (assembler, log, cache)
}

fn runs(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |s| s.lines().count())
}

/// The launches of `model`'s training step at `batch`, and its distinct modules.
fn step_kernels(model: &str, batch: Option<usize>) -> (Vec<DeviceKernel>, Vec<usize>) {
    let source = resolve_model(model).unwrap();
    let shape = with_batch(source.input_shape.clone(), batch).unwrap();
    let forward = build(&source.spec, &shape, Mode::Train, DType::F32).unwrap();
    let step = train_step(&forward.graph, &TrainConfig::default()).unwrap();
    let plan = compile_graph(&step.graph, Some(&FusionOptions::default())).unwrap();
    let mut modules = representatives(&plan.kernels);
    modules.sort_unstable();
    modules.dedup();
    (plan.kernels, modules)
}

fn tiny_step() -> (Vec<DeviceKernel>, Vec<usize>) {
    step_kernels(fixture("tiny_scnet").to_str().unwrap(), Some(2))
}

fn cubins(images: &[Image]) -> usize {
    images
        .iter()
        .filter(|i| matches!(i, Image::Cubin(c) if c.starts_with(b"\x7fELF")))
        .count()
}

#[test]
fn step_kernels_assemble_for_sm_90_and_sm_80_and_come_back_from_the_cache() {
    let Some(real) = real_ptxas() else { return };
    let (kernels, modules) = tiny_step();
    let dir = tempfile::tempdir().unwrap();
    let (assembler, log, cache) = counting_assembler(dir.path(), &real);
    for arch in ["sm_90", "sm_80"] {
        let before = runs(&log);
        let (images, stats) = module_images(&kernels, &modules, arch, Ok(&assembler));
        assert_eq!(cubins(&images), modules.len(), "{arch}: {:?}", stats.notes);
        assert_eq!(stats.cubins_assembled, modules.len());
        assert_eq!(
            runs(&log) - before,
            modules.len(),
            "one ptxas run per module"
        );
        assert!(stats.notes.is_empty(), "{:?}", stats.notes);
        let version = stats.ptxas.unwrap_or_default();
        assert!(version.contains("release"), "ptxas version: {version}");

        let before = runs(&log);
        let (again, stats) = module_images(&kernels, &modules, arch, Ok(&assembler));
        assert_eq!(
            again, images,
            "{arch}: the cache gives back the same cubins"
        );
        assert_eq!(stats.cubins_from_cache, modules.len());
        assert_eq!(runs(&log), before, "{arch}: no ptxas run for cached cubins");
    }
    let entries = std::fs::read_dir(cache.join("cubin")).unwrap().count();
    assert_eq!(
        entries,
        2 * modules.len(),
        "one entry per module and architecture"
    );
}

#[test]
fn a_truncated_or_corrupted_entry_is_rebuilt() {
    let Some(real) = real_ptxas() else { return };
    let (kernels, modules) = tiny_step();
    let dir = tempfile::tempdir().unwrap();
    let (assembler, log, cache) = counting_assembler(dir.path(), &real);
    let (good, _) = module_images(&kernels, &modules, "sm_90", Ok(&assembler));
    let mut entries: Vec<PathBuf> = std::fs::read_dir(cache.join("cubin"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let truncated = std::fs::read(&entries[0]).unwrap();
    std::fs::write(&entries[0], &truncated[..truncated.len() / 2]).unwrap();
    let mut flipped = std::fs::read(&entries[1]).unwrap();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    std::fs::write(&entries[1], &flipped).unwrap();

    let before = runs(&log);
    let (rebuilt, stats) = module_images(&kernels, &modules, "sm_90", Ok(&assembler));
    assert_eq!(rebuilt, good);
    assert_eq!(
        runs(&log) - before,
        2,
        "the two damaged entries are assembled again"
    );
    assert_eq!(stats.cubins_assembled, 2);
    assert_eq!(
        std::fs::read(&entries[0]).unwrap(),
        truncated,
        "rewritten whole"
    );
}

#[test]
fn without_a_working_ptxas_the_driver_gets_the_ptx_and_the_reason() {
    let (kernels, modules) = tiny_step();
    let missing = Assembler::new(PathBuf::from("/nonexistent/ptxas"), None).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/ptxas"),
        "{missing}"
    );
    let (images, stats) = module_images(&kernels, &modules, "sm_90", Err(&missing));
    assert_eq!(cubins(&images), 0);
    assert_eq!(stats.jit_modules, modules.len());
    assert!(stats.notes[0].contains("JIT"), "{:?}", stats.notes);

    let Some(real) = real_ptxas() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let refusing = counting_ptxas(dir.path(), &real, &log, true);
    let assembler = Assembler::new(refusing, Some(dir.path().join("cache"))).unwrap();
    let (images, stats) = module_images(&kernels, &modules, "sm_90", Ok(&assembler));
    assert_eq!(cubins(&images), 0);
    assert!(images
        .iter()
        .zip(&modules)
        .all(|(i, &m)| *i == Image::Ptx(kernels[m].ptx.clone())));
    assert_eq!(stats.jit_modules, modules.len());
    assert_eq!(
        stats.notes.len(),
        1,
        "one note, not one per module: {:?}",
        stats.notes
    );
    assert!(
        stats.notes[0].contains("refused by the test") && stats.notes[0].contains("JIT"),
        "{:?}",
        stats.notes
    );
}

/// The figures for issue 10: how long the SCNet-50 training step's kernels (batch 64)
/// take to assemble, cold and from the cache. Slow: run with
/// `cargo test --release --test cubins -- --ignored --nocapture`.
#[test]
#[ignore]
fn scnet50_step_assembly_cold_and_cached() {
    let Some(real) = real_ptxas() else { return };
    let started = Instant::now();
    let (kernels, modules) = step_kernels("scnet50", Some(64));
    let compile = started.elapsed().as_secs_f64();
    let dir = tempfile::tempdir().unwrap();
    let assembler = Assembler::new(real, Some(dir.path().to_path_buf())).unwrap();
    for (run, arch) in [("cold", "sm_90"), ("cached", "sm_90")] {
        let (images, stats) = module_images(&kernels, &modules, arch, Ok(&assembler));
        assert_eq!(cubins(&images), modules.len(), "{:?}", stats.notes);
        eprintln!(
            "scnet50 b64 step, {arch}, {run}: {} launches, {} modules, {} assembled, {} cached, \
             {:.2} s on {} threads (fusion and codegen {compile:.2} s)",
            stats.launches,
            stats.modules,
            stats.cubins_assembled,
            stats.cubins_from_cache,
            stats.assemble_seconds,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
    }
}
