//! `calib fixture`: a fixture directory for any spec, computed by the f64 interpreter,
//! on the first drawn state and batch whose ReLU and max-pool decisions are clear of
//! f32 noise (see `calib::differential::conditioning`), so that f32 backends can be
//! held to the fixtures' tolerances on it.

use anyhow::{bail, Result};
use calib::differential::{self, case::case, conditioning::with_kinks, specs::Shape};
use calib::models::load_spec_file;
use calib::verify::{protocol, write::write_fixture};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A spec file (a fixture's `meta.json`, a model file or a bare spec).
    spec: PathBuf,
    /// Input shape N,C,H,W (default: the file's input shape, else the spec's default).
    #[arg(long, value_delimiter = ',')]
    input: Option<Vec<usize>>,
    /// Seed of the initial state and of the batch (the next draws are tried when its
    /// case sits too close to a ReLU or max-pool kink).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory to write (created; files in it are replaced).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let file = load_spec_file(&args.spec)?;
    let input = match &args.input {
        Some(dims) if dims.len() != 4 => {
            bail!(
                "--input must be N,C,H,W (4 sizes), got {} sizes",
                dims.len()
            )
        }
        Some(dims) => dims.clone(),
        None => file.input_shape_or_default(),
    };
    let shape = Shape {
        spec: file.spec,
        input,
    };
    eprintln!("computing the fixture in f64 ...");
    let mut last = None;
    for seed in differential::case_seeds(args.seed) {
        let case = case(&shape, seed)?;
        let (files, kink) = with_kinks(|b| protocol::run(&case, b))?;
        if let Some(kink) = kink {
            eprintln!("case seed {seed}: {kink}; drawing again");
            last = Some(kink);
            continue;
        }
        write_fixture(
            &args.out,
            &case,
            &files,
            &format!("calib fixture (f64 reference interpreter), case seed {seed}"),
        )?;
        eprintln!("wrote {} (case seed {seed})", args.out.display());
        return Ok(ExitCode::SUCCESS);
    }
    bail!(
        "every case drawn for this shape has a decision too close to call in f32 (last: {}); \
         a smaller batch or input makes such kinks rarer",
        last.map_or_else(String::new, |k| k.to_string())
    )
}
