//! `CALIB_GEMM_MAX_REGISTERS` replaces a GEMM launch's register cap (a measuring knob:
//! the same plan at another cap) and nothing else; a value out of range is refused by
//! name. One test in its own binary: it sets the process's environment.

mod support;

use calib_codegen::compile;
use calib_ir::{Anchor, GemmSchedule, Schedule};
use support::{graph, single_kernel};

const CONV: &str = "graph {
  %0 = input name=\"x\" : f32[2,8,6,6]
  %1 = param name=\"w\" : f32[16,8,3,3]
  %2 = conv2d(%0, %1) stride=[1,1] padding=[1,1] dilation=[1,1] groups=1 : f32[2,16,6,6]
  return y=%2
}";

#[test]
fn the_variable_replaces_the_gemm_register_cap_and_bad_values_are_named() {
    let mut program = single_kernel(&graph(CONV), Anchor::Convolution);
    let schedule = GemmSchedule {
        block_m: 64,
        block_n: 64,
        block_k: GemmSchedule::depth(64, 64),
        split_k: 1,
        instruction: Default::default(),
        stages: 2,
    };
    program.kernels[0].schedule = Some(Schedule::gemm(schedule));
    let cap = |ptx: &str| {
        ptx.lines()
            .find_map(|l| l.trim().strip_prefix(".maxnreg ").map(str::to_owned))
    };
    let ptx = |program| compile(program).map(|c| c.kernels[0].ptx.clone());

    std::env::remove_var("CALIB_GEMM_MAX_REGISTERS");
    let default = ptx(&program).unwrap();
    assert_eq!(
        cap(&default),
        schedule.register_cap().map(|r| r.to_string())
    );

    std::env::set_var("CALIB_GEMM_MAX_REGISTERS", "255");
    let wide = ptx(&program).unwrap();
    assert_eq!(cap(&wide).as_deref(), Some("255"));
    // Nothing but the cap changes.
    assert_eq!(
        wide.replace(".maxnreg 255", ""),
        default.replace(&format!(".maxnreg {}", cap(&default).unwrap()), "")
    );

    for bad in ["0", "256", "lots"] {
        std::env::set_var("CALIB_GEMM_MAX_REGISTERS", bad);
        let err = ptx(&program).unwrap_err().to_string();
        assert!(
            err.contains("CALIB_GEMM_MAX_REGISTERS") && err.contains(bad),
            "{bad}: {err}"
        );
    }
    std::env::remove_var("CALIB_GEMM_MAX_REGISTERS");
}
