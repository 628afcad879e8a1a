//! The launch estimator on kernel bodies the planner meets while it extracts a plan.

use calib_ir::text;
use calib_passes::fusion::estimate::best_schedule;
use calib_passes::fusion::Device;

/// SCNet-50's layer4 at batch 1: a 3x3 conv on a 1x1 map and BatchNorm's statistics of
/// it. The statistics have the conv's element count but reduce it, so no output is the
/// GEMM's own result; a split-K candidate must still sum the slices.
const STATISTICS_ONLY: &str = r#"graph {
  %0 = input name="in0" : f32[1,256,1,1]
  %1 = input name="in1" : f32[256,256,3,3]
  %2 = conv2d(%0, %1) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[1,256,1,1]
  %3 = reduce_mean(%2) axes=[0,2,3] keepdims=true : f32[1,256,1,1]
  %4 = sub(%2, %3) : f32[1,256,1,1]
  %5 = mul(%4, %4) : f32[1,256,1,1]
  %6 = reduce_mean(%5) axes=[0,2,3] keepdims=true : f32[1,256,1,1]
  return out0=%3, out1=%6
}
"#;

#[test]
fn a_gemm_whose_outputs_all_reduce_it_is_estimated() {
    let body = text::parse(STATISTICS_ONLY).unwrap();
    let (_, seconds) =
        best_schedule(&body, &Device::default(), Default::default()).expect("a GEMM kernel");
    assert!(seconds.is_finite() && seconds > 0.0, "{seconds}");
}
