//! Refits a device's timing coefficients to measured launches and prints the `timing`
//! object to put in its file under `cost/devices/`.
//!
//! ```sh
//! cargo run --release -p calib-cost --example fit -- h200 \
//!     cost/data/h200-2026-12-04-scnet50-b64.launches.json \
//!     ../shared/gpu/h200-2026-12-04-scnet50-b64-kernels.csv [more launches/timing pairs]
//! ```

use calib_cost::data::samples;
use calib_cost::fit::{evaluate, fit};
use calib_cost::Device;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 || args.len().is_multiple_of(2) {
        eprintln!("usage: fit DEVICE LAUNCHES.json TIMINGS.csv [LAUNCHES.json TIMINGS.csv ...]");
        std::process::exit(2);
    }
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let device = Device::load(&args[0])?;
        let mut all = vec![];
        for pair in args[1..].chunks(2) {
            all.extend(samples(Path::new(&pair[0]), Path::new(&pair[1]))?);
        }
        let before = evaluate(&all, &device);
        let fitted = fit(&all, &device, 6000);
        let after = evaluate(&all, &fitted);
        eprintln!("{} launches", all.len());
        for (what, e) in [("stored", before), ("refit", after)] {
            eprintln!(
                "{what}: loss {:.4}, sum predicted/measured {:.3}, {:.1}% of the time within 2x",
                e.loss,
                e.sum_ratio,
                100.0 * e.time_within_2x
            );
        }
        println!("{}", serde_json::to_string_pretty(&fitted.timing)?);
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("fit: {e}");
        std::process::exit(1);
    }
}
