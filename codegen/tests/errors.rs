//! What code generation refuses, and how it says so: the kernel and the node.

mod support;

use calib_codegen::{compile, CodegenError};
use calib_ir::Anchor;
use support::{graph, single_kernel};

#[test]
fn an_op_without_a_lowering_names_its_kernel_and_node() {
    let g = graph(
        "graph {
          %0 = input name=\"x\" : f32[4]
          %1 = all_reduce(%0) reduce=\"sum\" replicas=2 : f32[4]
          %2 = exp(%1) : f32[4]
          return y=%2
        }",
    );
    let err = compile(&single_kernel(&g, Anchor::Pointwise)).unwrap_err();
    match &err {
        CodegenError::Unsupported {
            kernel, node, op, ..
        } => {
            assert_eq!((kernel.as_str(), *node, *op), ("k0", 1, "all_reduce"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("kernel k0: node %1 (all_reduce) is not supported"),
        "{err}"
    );
}

#[test]
fn f16_kernels_are_refused_by_name() {
    let g = graph(
        "graph {
          %0 = input name=\"x\" : f16[4]
          %1 = neg(%0) : f16[4]
          return y=%1
        }",
    );
    let err = compile(&single_kernel(&g, Anchor::Pointwise))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kernel k0") && err.contains("f16 kernels are not generated"),
        "{err}"
    );
}

#[test]
fn a_collective_kernel_is_not_ptx() {
    let g = graph(
        "graph {
          %0 = input name=\"x\" : f32[4]
          %1 = all_reduce(%0) reduce=\"mean\" replicas=2 : f32[4]
          return y=%1
        }",
    );
    // A whole program skips it: the executor performs the transfer.
    let program = single_kernel(&g, Anchor::Collective);
    assert!(compile(&program).unwrap().kernels.is_empty());
    // Asked for its PTX directly, codegen refuses and says why.
    let err = calib_codegen::compile_kernel(&program, &program.kernels[0])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kernel k0") && err.contains("collective"),
        "{err}"
    );
}

#[test]
fn tensors_beyond_32_bit_indices_are_refused() {
    let g = graph(
        "graph {
          %0 = input name=\"x\" : f32[65536,32768]
          %1 = neg(%0) : f32[65536,32768]
          return y=%1
        }",
    );
    let err = compile(&single_kernel(&g, Anchor::Pointwise))
        .unwrap_err()
        .to_string();
    assert!(err.contains("2^31 elements"), "{err}");
}
