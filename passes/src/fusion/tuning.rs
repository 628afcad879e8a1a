//! Measured GEMM schedules: what `calib tune` found fastest on a GPU, per device and
//! GEMM shape, for the planner to use instead of the cost model's choice.
//!
//! A GEMM's shape key names what its schedule's speed depends on besides the prologue
//! and epilogue: the op (which operand is contiguous along what), the groups, `m`, `n`,
//! `k`, a lattice or phases, the precision (the instructions it may use), and whether
//! the kernel reads channels-last images (which way its tiles copy). Kernels of one
//! shape share an entry: their prologues differ, and the tuner keeps the schedule
//! fastest over all of them together.

use super::estimate::candidate_schedules;
use calib_cost::Device;
use calib_ir::{gemm_anchor, GemmDims, GemmSchedule, Graph, InputLayouts, Layout, Op, Precision};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The winners of a tuning run on one device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuningCache {
    /// The cost-model device the schedules were measured on (`Device::name`): entries
    /// serve plans for that device only.
    pub device: String,
    /// Where they were measured: the GPU the driver named, the calib commit.
    #[serde(default)]
    pub measured_on: String,
    /// Shape key ([`shape_key`]) to the fastest schedule measured.
    pub entries: BTreeMap<String, TunedSchedule>,
}

/// One shape's winner.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunedSchedule {
    pub schedule: GemmSchedule,
    /// Its measured time in microseconds, summed over the step's kernels of this shape.
    pub measured_us: f64,
    /// How many schedules were measured for the shape.
    pub candidates: usize,
}

impl TuningCache {
    /// Reads a cache file, naming the file and what is wrong with it.
    pub fn read(path: &Path) -> Result<TuningCache, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("tuning cache {}: {e}", path.display()))?;
        let cache: TuningCache = serde_json::from_str(&text)
            .map_err(|e| format!("tuning cache {}: {e}", path.display()))?;
        if cache.device.is_empty() {
            return Err(format!(
                "tuning cache {}: `device` is empty: which device were the schedules measured on?",
                path.display()
            ));
        }
        Ok(cache)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a tuning cache serializes") + "\n"
    }

    /// The measured schedule for GEMM kernel `body` (its inputs laid out as `layouts`
    /// say) on `device` at `precision`, if the cache has one that code generation
    /// accepts for it.
    pub fn lookup(
        &self,
        body: &Graph,
        device: &Device,
        precision: Precision,
        layouts: InputLayouts,
    ) -> Option<TunedSchedule> {
        if self.device != device.name {
            return None;
        }
        let (key, dims) = shape_key(body, precision, layouts)?;
        let tuned = *self.entries.get(&key)?;
        tuned.schedule.check(&dims).is_ok().then_some(tuned)
    }
}

/// The shape key of GEMM kernel `body` at `precision`, its inputs laid out as `layouts`
/// say, with its dimensions: `"conv2d g1 m64x56x56 n64 k64x3x3 tf32"`, and `" nhwc"`
/// after it for a kernel that reads a channels-last input.
pub fn shape_key(
    body: &Graph,
    precision: Precision,
    layouts: InputLayouts,
) -> Option<(String, GemmDims)> {
    let anchor = gemm_anchor(body)?;
    let dims = GemmDims::of(body, anchor)?;
    let node = &body.nodes[anchor.0];
    let op = match &node.op {
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => format!(
            "matmul{}{}",
            if *transpose_a { " ta" } else { "" },
            if *transpose_b { " tb" } else { "" }
        ),
        other => other.name().to_string(),
    };
    let side = |d: &[usize]| {
        d.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join("x")
    };
    let lattice = match (dims.lattice, dims.phases) {
        (Some([h, w]), _) => format!(" lattice{h}x{w}"),
        (_, Some(p)) => format!(" phases{}x{}", p.stride[0], p.stride[1]),
        _ => String::new(),
    };
    let nhwc = match layouts.contains(&Layout::ChannelsLast) {
        true => " nhwc",
        false => "",
    };
    let key = format!(
        "{op} g{} m{} n{} k{}{lattice} {precision}{nhwc}",
        dims.groups,
        side(&dims.m),
        side(&dims.n),
        side(&dims.k)
    );
    Some((key, dims))
}

/// The schedules worth measuring for GEMM kernel `body` (its inputs laid out as
/// `layouts` say): the cost model's `count` fastest candidates, fastest first
/// (distinct, each accepted by code generation).
pub fn ranked_candidates(
    body: &Graph,
    device: &Device,
    precision: Precision,
    count: usize,
    layouts: InputLayouts,
) -> Vec<GemmSchedule> {
    let Some((_, dims)) = shape_key(body, precision, layouts) else {
        return vec![];
    };
    let mut priced: Vec<(f64, GemmSchedule)> = candidate_schedules(&dims, device, precision)
        .into_iter()
        .filter(|s| s.check(&dims).is_ok())
        .map(|s| {
            let schedule = calib_ir::Schedule::gemm(s);
            let anchor = gemm_anchor(body).expect("a GEMM kernel");
            let launches = super::estimate::gemm(body, anchor, &dims, &schedule, layouts).launches;
            (super::estimate::seconds(&launches, device), s)
        })
        .collect();
    priced.sort_by(|a, b| a.0.total_cmp(&b.0));
    priced.into_iter().take(count).map(|(_, s)| s).collect()
}

/// The winners of a tuning run: for each shape, the schedule whose measured times,
/// summed over the shape's kernels, are least. `measured` holds, per shape key, each
/// schedule tried with the times of every kernel of that shape under it.
pub fn winners(
    measured: &BTreeMap<String, Vec<(GemmSchedule, Vec<f64>)>>,
) -> BTreeMap<String, TunedSchedule> {
    measured
        .iter()
        .filter_map(|(key, tries)| {
            let total = |times: &Vec<f64>| times.iter().sum::<f64>();
            let (schedule, times) = tries
                .iter()
                .filter(|(_, t)| !t.is_empty() && t.iter().all(|x| x.is_finite()))
                .min_by(|a, b| total(&a.1).total_cmp(&total(&b.1)))?;
            Some((
                key.clone(),
                TunedSchedule {
                    schedule: *schedule,
                    measured_us: total(times),
                    candidates: tries.len(),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use calib_ir::GemmInstruction;

    fn conv_body() -> Graph {
        calib_ir::text::parse(
            "graph {
              %0 = input name=\"in0\" : f32[8,16,14,14]
              %1 = input name=\"in1\" : f32[32,16,3,3]
              %2 = conv2d(%0, %1) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[8,32,14,14]
              return out0=%2
            }",
        )
        .unwrap()
    }

    fn schedule(block_m: usize, split_k: usize) -> GemmSchedule {
        GemmSchedule {
            block_m,
            block_n: 64,
            block_k: 16,
            split_k,
            instruction: GemmInstruction::Fma,
            stages: 2,
        }
    }

    #[test]
    fn the_key_names_op_shape_and_precision() {
        let (key, _) = shape_key(&conv_body(), Precision::Tf32, &[]).unwrap();
        assert_eq!(key, "conv2d g1 m8x14x14 n32 k3x3x16 tf32");
        // A kernel over channels-last images copies its tiles another way.
        let nhwc = [Layout::ChannelsLast, Layout::RowMajor];
        let (key, _) = shape_key(&conv_body(), Precision::Tf32, &nhwc).unwrap();
        assert_eq!(key, "conv2d g1 m8x14x14 n32 k3x3x16 tf32 nhwc");
    }

    #[test]
    fn the_least_total_time_over_a_shapes_kernels_wins() {
        let mut measured = BTreeMap::new();
        measured.insert(
            "k".to_string(),
            vec![
                (schedule(64, 1), vec![10.0, 10.0]),
                (schedule(128, 1), vec![4.0, 12.0]),
                (schedule(64, 2), vec![f64::NAN, 1.0]),
            ],
        );
        let w = winners(&measured);
        assert_eq!(w["k"].schedule, schedule(128, 1));
        assert_eq!(w["k"].measured_us, 16.0);
        assert_eq!(w["k"].candidates, 3);
    }

    #[test]
    fn entries_serve_their_device_and_valid_schedules_only() {
        let body = conv_body();
        let device = Device::default();
        let (key, _) = shape_key(&body, Precision::F32, &[]).unwrap();
        let tuned = TunedSchedule {
            schedule: schedule(128, 1),
            measured_us: 3.0,
            candidates: 4,
        };
        let mut cache = TuningCache {
            device: device.name.clone(),
            measured_on: String::new(),
            entries: [(key.clone(), tuned)].into(),
        };
        let f32 = Precision::F32;
        assert_eq!(cache.lookup(&body, &device, f32, &[]), Some(tuned));
        assert_eq!(cache.lookup(&body, &device, Precision::Tf32, &[]), None);
        // Measured over row-major images: no entry for the kernel over channels-last ones.
        assert_eq!(
            cache.lookup(&body, &device, f32, &[Layout::ChannelsLast]),
            None
        );
        cache.device = "another GPU".into();
        assert_eq!(cache.lookup(&body, &device, f32, &[]), None);
        cache.device = device.name.clone();
        // A split of more slices than there are k steps is refused by code generation.
        cache.entries.get_mut(&key).unwrap().schedule.split_k = 1000;
        assert_eq!(cache.lookup(&body, &device, f32, &[]), None);
    }

    #[test]
    fn ranked_candidates_come_fastest_first_and_valid() {
        let body = conv_body();
        let device = Device::default();
        let ranked = ranked_candidates(&body, &device, Precision::Bf16, 6, &[]);
        assert_eq!(ranked.len(), 6);
        let (_, dims) = shape_key(&body, Precision::Bf16, &[]).unwrap();
        assert!(ranked.iter().all(|s| s.check(&dims).is_ok()));
        let best = super::super::estimate::best_schedule(&body, &device, Precision::Bf16, &[])
            .unwrap()
            .0
            .gemm
            .unwrap();
        assert_eq!(ranked[0], best);
    }

    #[test]
    fn a_bad_file_is_named_with_its_problem() {
        let dir = std::env::temp_dir().join(format!("calib-tuning-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.json");
        std::fs::write(
            &path,
            "{\"device\": \"x\", \"entries\": {\"k\": {\"schedule\": 3}}}",
        )
        .unwrap();
        let e = TuningCache::read(&path).unwrap_err();
        assert!(
            e.contains("bad.json") && (e.contains("schedule") || e.contains("invalid")),
            "{e}"
        );
        std::fs::write(&path, "{\"device\": \"\", \"entries\": {}}").unwrap();
        assert!(TuningCache::read(&path)
            .unwrap_err()
            .contains("`device` is empty"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
