//! A program's kernels loaded on a GPU, as few modules as the code allows and each from
//! machine code where possible.
//!
//! Launches whose PTX is identical apart from the entry name and comments (a layer
//! repeated with the same shapes) share one module. Each module is a cubin that `ptxas`
//! assembled for the GPU's exact architecture, from the user's cache or assembled now,
//! modules in parallel ([`super::cubin`]); the driver then only links it. Where `ptxas`
//! is missing or refuses a module, or the driver refuses a cubin, the PTX is loaded
//! instead and the driver JIT-compiles it, and calib says so once on stderr: slower on
//! a GPU's first run (minutes for SCNet-50), never wrong.

use super::cubin::{Assembler, Origin};
use super::{driver_error, driver_present, CudaError};
use crate::sim::ptxas::PtxasError;
use crate::DeviceKernel;
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// For every launch, the first launch with the same code: the one whose module (and
/// entry name) it uses.
pub fn representatives(kernels: &[DeviceKernel]) -> Vec<usize> {
    let mut first: HashMap<String, usize> = HashMap::new();
    kernels
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let code: String = k
                .ptx
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n")
                .replacen(&format!(".entry {}(", k.name), ".entry (", 1);
            *first.entry(code).or_insert(i)
        })
        .collect()
}

/// What one module is loaded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Image {
    /// Machine code for the GPU.
    Cubin(Vec<u8>),
    /// PTX for the driver to JIT-compile.
    Ptx(String),
}

/// How a program's kernels were readied (`calib bench` reports it).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LoadStats {
    pub launches: usize,
    pub modules: usize,
    /// `sm_90` for an H100 or H200.
    pub arch: String,
    /// The `ptxas` release used, if one was.
    pub ptxas: Option<String>,
    pub cubins_from_cache: usize,
    pub cubins_assembled: usize,
    /// Modules left to the driver's JIT (cubins it refused included).
    pub jit_modules: usize,
    /// Seconds to get every image (cache reads and `ptxas` runs, in parallel).
    pub assemble_seconds: f64,
    /// Seconds for the driver to load every module.
    pub load_seconds: f64,
    /// Why anything fell back to the JIT or was not cached.
    pub notes: Vec<String>,
}

/// The image of every module `modules` names (indices into `kernels`): a cubin for
/// `arch` where `assembler` gives one, else the PTX, with the reason in `stats.notes`.
pub fn module_images(
    kernels: &[DeviceKernel],
    modules: &[usize],
    arch: &str,
    assembler: Result<&Assembler, &PtxasError>,
) -> (Vec<Image>, LoadStats) {
    let started = Instant::now();
    let mut stats = LoadStats {
        launches: kernels.len(),
        modules: modules.len(),
        arch: arch.to_string(),
        ..LoadStats::default()
    };
    let assembler = match assembler {
        Ok(a) => a,
        Err(e) => {
            stats.notes.push(format!(
                "no cubins: {e}; the driver JIT-compiles the PTX instead (slow on a GPU's \
                 first run)"
            ));
            stats.jit_modules = modules.len();
            let images = modules
                .iter()
                .map(|&m| Image::Ptx(kernels[m].ptx.clone()))
                .collect();
            return (images, stats);
        }
    };
    stats.ptxas = Some(assembler.version().to_string());
    let results: Vec<_> = modules
        .par_iter()
        .map(|&m| assembler.cubin(&kernels[m].ptx, arch))
        .collect();
    let mut images = Vec::with_capacity(modules.len());
    let mut refused = None;
    for (&m, result) in modules.iter().zip(results) {
        match result {
            Ok((cubin, stored)) => {
                match cubin.origin {
                    Origin::Cache => stats.cubins_from_cache += 1,
                    Origin::Assembled => stats.cubins_assembled += 1,
                }
                if let Err(why) = stored {
                    note_once(
                        &mut stats.notes,
                        format!("{why}; cubins are assembled again next run"),
                    );
                }
                images.push(Image::Cubin(cubin.image));
            }
            Err(e) => {
                stats.jit_modules += 1;
                refused.get_or_insert((m, e));
                images.push(Image::Ptx(kernels[m].ptx.clone()));
            }
        }
    }
    if let Some((m, e)) = refused {
        let why = e.to_string().lines().take(2).collect::<Vec<_>>().join(" ");
        stats.notes.push(format!(
            "ptxas could not assemble {} of {} modules for {arch} (the first, {}: {why}); the \
             driver JIT-compiles their PTX instead",
            stats.jit_modules,
            modules.len(),
            kernels[m].name
        ));
    }
    stats.assemble_seconds = started.elapsed().as_secs_f64();
    (images, stats)
}

fn note_once(notes: &mut Vec<String>, note: String) {
    if !notes.contains(&note) {
        notes.push(note);
    }
}

/// Prints each note once per process on stderr (a training run loads several programs).
fn say_once(notes: &[String]) {
    static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    let said = said.get_or_insert_with(HashSet::new);
    for note in notes {
        if said.insert(note.clone()) {
            eprintln!("calib: cuda: {note}");
        }
    }
}

/// The process's `ptxas` and cubin cache, looked for once.
fn assembler() -> Result<&'static Assembler, &'static PtxasError> {
    static ASSEMBLER: OnceLock<Result<Assembler, PtxasError>> = OnceLock::new();
    ASSEMBLER.get_or_init(Assembler::find).as_ref()
}

/// Every launch's function on one GPU.
pub struct LoadedKernels {
    pub(super) ordinal: usize,
    pub(super) ctx: Arc<CudaContext>,
    /// By launch, in program order.
    pub(super) functions: Vec<CudaFunction>,
    pub(super) stats: LoadStats,
}

impl LoadedKernels {
    /// Loads every launch of `kernels` on GPU `ordinal`.
    pub fn load(ordinal: usize, kernels: &[DeviceKernel]) -> Result<Arc<Self>, CudaError> {
        if !driver_present() {
            return Err(CudaError::NoDriver);
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| driver_error(&format!("opening GPU {ordinal}"), e))?;
        // The executor orders its streams with its own events (the arena is one
        // allocation, so cudarc's per-allocation tracking would serialize everything,
        // and its events would leak into graph captures).
        // SAFETY: every cross-stream use in the executor waits on an explicit event.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| driver_error("reading the compute capability", e))?;
        let arch = format!("sm_{major}{minor}");
        let representative = representatives(kernels);
        let mut modules: Vec<usize> = representative.clone();
        modules.sort_unstable();
        modules.dedup();
        let (images, mut stats) = module_images(kernels, &modules, &arch, assembler());
        let started = Instant::now();
        let loaded: Vec<(Arc<CudaModule>, Option<String>)> = modules
            .par_iter()
            .zip(images)
            .map(|(&m, image)| load_module(&ctx, &kernels[m], image))
            .collect::<Result<_, _>>()?;
        for note in loaded.iter().filter_map(|(_, note)| note.as_ref()) {
            stats.jit_modules += 1;
            note_once(&mut stats.notes, note.clone());
        }
        // Above 48 KiB, dynamic shared memory must be asked for per function: the most
        // any launch sharing the function uses.
        let mut shared: HashMap<usize, u32> = HashMap::new();
        for (k, &r) in kernels.iter().zip(&representative) {
            let s = shared.entry(r).or_default();
            *s = (*s).max(k.shared_bytes);
        }
        ctx.bind_to_thread()
            .map_err(|e| driver_error("making the GPU current", e))?;
        let mut by_module: HashMap<usize, CudaFunction> = HashMap::new();
        for (&m, (module, _)) in modules.iter().zip(&loaded) {
            let name = &kernels[m].name;
            let function = module
                .load_function(name)
                .map_err(|e| driver_error(&format!("finding entry {name}"), e))?;
            if shared[&m] > DEFAULT_SHARED_LIMIT {
                function
                    .set_attribute(
                        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        shared[&m] as i32,
                    )
                    .map_err(|e| {
                        driver_error(
                            &format!("allowing {} bytes of shared memory for {name}", shared[&m]),
                            e,
                        )
                    })?;
            }
            by_module.insert(m, function);
        }
        stats.load_seconds = started.elapsed().as_secs_f64();
        say_once(&stats.notes);
        let functions = representative
            .iter()
            .map(|r| by_module[r].clone())
            .collect();
        Ok(Arc::new(LoadedKernels {
            ordinal,
            ctx,
            functions,
            stats,
        }))
    }

    pub fn stats(&self) -> &LoadStats {
        &self.stats
    }
}

/// Dynamic shared memory every kernel may use without opting in.
const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;

/// Loads one module; a cubin the driver refuses is replaced by the PTX (with a note).
fn load_module(
    ctx: &Arc<CudaContext>,
    kernel: &DeviceKernel,
    image: Image,
) -> Result<(Arc<CudaModule>, Option<String>), CudaError> {
    let from_ptx = |ctx: &Arc<CudaContext>| {
        ctx.load_module(Ptx::from_src(kernel.ptx.clone()))
            .map_err(|e| driver_error(&format!("loading the PTX of kernel {}", kernel.name), e))
    };
    match image {
        Image::Ptx(_) => Ok((from_ptx(ctx)?, None)),
        Image::Cubin(bytes) => match ctx.load_module(Ptx::from_binary(bytes)) {
            Ok(module) => Ok((module, None)),
            Err(e) => {
                let note = format!(
                    "the driver refused ptxas's cubins ({e:?}: is ptxas newer than the \
                     driver?); it JIT-compiles their PTX instead"
                );
                Ok((from_ptx(ctx)?, Some(note)))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LaunchInfo;

    fn kernel(name: &str, body: &str) -> DeviceKernel {
        DeviceKernel {
            name: name.into(),
            kernel: name.into(),
            ptx: format!("// {name}: a comment naming it\n.visible .entry {name}(\n{body}\n}}\n"),
            grid: [1, 1, 1],
            block: [32, 1, 1],
            shared_bytes: 0,
            params: vec![],
            info: LaunchInfo::default(),
        }
    }

    #[test]
    fn kernels_that_differ_only_in_name_and_comments_share_a_module() {
        let kernels = [
            kernel("k0", "ret;"),
            kernel("k1", "add;"),
            kernel("k2", "ret;"),
            kernel("k3", "add;"),
            kernel("k4", "mul;"),
        ];
        assert_eq!(representatives(&kernels), vec![0, 1, 0, 1, 4]);
    }

    #[test]
    fn without_ptxas_every_module_is_left_to_the_driver_and_the_reason_given() {
        let kernels = [kernel("k0", "ret;"), kernel("k1", "add;")];
        let missing = PtxasError::NotFound {
            searched: vec!["PATH".into()],
        };
        let (images, stats) = module_images(&kernels, &[0, 1], "sm_90", Err(&missing));
        assert_eq!(
            images,
            vec![
                Image::Ptx(kernels[0].ptx.clone()),
                Image::Ptx(kernels[1].ptx.clone())
            ]
        );
        assert_eq!((stats.jit_modules, stats.cubins_assembled), (2, 0));
        assert_eq!(stats.notes.len(), 1);
        assert!(
            stats.notes[0].contains("ptxas not found") && stats.notes[0].contains("JIT"),
            "{:?}",
            stats.notes
        );
    }
}
