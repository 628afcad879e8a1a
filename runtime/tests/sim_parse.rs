//! The PTX parser's boundaries: what it accepts (scopes, module-level shared memory,
//! every literal spelling) and the clear errors for unsupported and malformed PTX and for
//! launches that do not fit the kernel.

mod sim_support;

use calib_runtime::sim::{self, GlobalMemory, KernelArg, SimError};
use sim_support::{module, parse_text, ptr, Launch};

const HEADER: &str = ".version 7.8\n.target sm_80\n.address_size 64\n";

/// A kernel `k(.param .u64 out)` with 32-bit registers %r0..%r7, f32 %f0..%f3 and
/// predicates %p0..%p1 around `body`; the body's first line is line 9.
fn kernel(body: &str) -> String {
    format!(
        "{HEADER}.visible .entry k(.param .u64 out)\n{{\n.reg .b32 %r<8>;\n.reg .f32 %f<4>;\n\
         .reg .pred %p<2>;\n{body}\nret;\n}}\n"
    )
}

fn parse_error(text: &str) -> sim::ParseError {
    match sim::parse(text) {
        Err(e) => e,
        Ok(_) => panic!("expected a parse error for:\n{text}"),
    }
}

#[test]
fn unsupported_instructions_and_modifiers_name_line_and_instruction() {
    let cases = [
        (
            "prmt.b32 %r1, %r2, %r3, 0x3210;",
            "unsupported instruction `prmt`",
        ),
        (
            "add.rz.f32 %f1, %f2, %f3;",
            "unsupported rounding modifier `.rz`",
        ),
        ("add.cc.u32 %r1, %r2, %r3;", "unsupported modifier `.cc`"),
        (
            "ld.local.u32 %r1, [%r2];",
            "the .local state space is not supported",
        ),
        ("div.f32 %f1, %f2, %f3;", "needs one of .rn, .approx, .full"),
        ("cvt.s32.f32 %r1, %f1;", "float-to-integer cvt needs .rni"),
        ("add.f16 %r1, %r2, %r3;", ".f16 arithmetic is not supported"),
        (
            "shfl.down.b32 %r1, %r2, 1, 31;",
            "only shfl.sync is supported",
        ),
        (
            "bar.sync 0, 64;",
            "barriers with a thread count are not supported",
        ),
        (
            "mov.u32 %r1, %clock;",
            "unsupported special register %clock",
        ),
    ];
    for (line, message) in cases {
        let e = parse_error(&kernel(line));
        assert_eq!(e.line, 9, "{line}");
        assert_eq!(e.text, line);
        assert!(e.message.contains(message), "{line}: {}", e.message);
        assert!(
            e.to_string().starts_with(&format!("line 9: `{line}`:")),
            "{e}"
        );
    }
}

#[test]
fn malformed_ptx_is_rejected_with_its_line() {
    let cases: [(String, usize, &str); 12] = [
        (kernel("mov.u32 %r1, 1"), 9, "expected `,`, found `ret`"),
        (kernel(".pragma nounroll;"), 9, "`.pragma` takes a string"),
        (
            kernel(".pragma \"nounroll;"),
            9,
            "unterminated string literal",
        ),
        (kernel("mov.u32 %r9, 1;"), 9, "undeclared register %r9"),
        (kernel("bra NOWHERE;"), 9, "undefined label"),
        (
            kernel("mov.u32 %r1, 12abc;"),
            9,
            "malformed numeric literal",
        ),
        (
            kernel("mov.u32 %r1, 0x100000000;"),
            9,
            "literal 4294967296 does not fit .u32",
        ),
        (
            kernel("add.f32 %f1, %p1, %f2;"),
            9,
            "register %p1 is .pred, the instruction needs .f32",
        ),
        (
            kernel("mov.f64 %f1, 1.0;"),
            9,
            "register %f1 is .f32, the instruction needs .f64",
        ),
        (kernel("add.s32 %r1, %r2;"), 9, "takes 3 operands, found 2"),
        (kernel("/* never closed"), 9, "unterminated block comment"),
        (
            format!("{HEADER}.visible .entry k()\n{{\n  ret;\n"),
            6,
            "`}` closing the kernel body",
        ),
    ];
    for (text, line, message) in cases {
        let e = parse_error(&text);
        assert_eq!(e.line, line, "{e}");
        assert!(e.message.contains(message), "{e}");
    }
    assert!(parse_error(".target sm_80\n")
        .message
        .contains("missing .version"));
    assert!(parse_error(&format!("{HEADER}.func f()\n{{\nret;\n}}\n"))
        .message
        .contains(".func"));
    assert!(parse_error(&format!("{HEADER}.global .u32 g;\n"))
        .message
        .contains("unsupported module-level directive"));
}

#[test]
fn pragmas_are_hints_that_execute_nothing() {
    let text = kernel("L1:\n.pragma \"nounroll\";\nmov.u32 %r1, 1;");
    assert!(sim::parse(&text).is_ok());
}

#[test]
fn scopes_shadow_registers_and_module_shared_memory_is_visible() {
    let text = format!(
        "{HEADER}.shared .align 4 .u32 table[4];\n\
         .visible .entry k(.param .u64 out)\n.maxntid 32\n{{\n\
         .reg .b32 %r<3>;\n.reg .b64 %rd1;\n\
         mov.u32 %r1, 1;\n\
         {{\n  .reg .b32 %r1;\n  mov.u32 %r1, 1000; // shadows the outer %r1\n  add.s32 %r2, %r1, 1;\n}}\n\
         add.s32 %r2, %r2, %r1; /* 1001 + 1 */\n\
         st.shared.u32 [table+8], %r2;\n\
         ld.shared.u32 %r0, [table+8];\n\
         ld.param.u64 %rd1, [out];\n\
         st.global.u32 [%rd1], %r0;\n\
         ret;\n}}\n"
    );
    let m = parse_text(&text);
    let k = m.kernel("k").unwrap();
    assert_eq!(k.max_ntid, Some([32, 1, 1]));
    assert_eq!(
        k.registers.len(),
        5,
        "the inner %r1 is a register of its own"
    );
    assert_eq!(k.static_shared_bytes, 16);
    let mut mem = GlobalMemory::new();
    let out = mem.alloc(4).unwrap();
    Launch::new("k", 1, 1, vec![ptr(out)]).run(&m, &mut mem);
    assert_eq!(mem.read::<u32>(out, 1).unwrap(), vec![1002]);
}

#[test]
fn launches_that_do_not_fit_the_kernel_are_refused() {
    let m = module("matmul.ptx");
    let mut mem = GlobalMemory::new();
    let args = || {
        vec![
            ptr(0),
            ptr(0),
            ptr(0),
            KernelArg::U32(16),
            KernelArg::U32(16),
        ]
    };
    let refuse = |launch: Launch, mem: &mut GlobalMemory, message: &str| match launch.try_run(
        &m,
        mem,
        &Default::default(),
    ) {
        Err(e @ (SimError::Launch { .. } | SimError::NoKernel { .. })) => {
            assert!(e.to_string().contains(message), "{e}")
        }
        other => panic!("expected a launch error containing `{message}`, got {other:?}"),
    };
    let square = |block: [u32; 3], args| Launch {
        kernel: "matmul_tiled",
        grid: [1, 1, 1],
        block,
        shared: 0,
        args,
    };
    refuse(square([8, 8, 1], args()), &mut mem, "differs from .reqntid");
    refuse(
        square([16, 16, 1], args()[..4].to_vec()),
        &mut mem,
        "4 arguments given for 5 parameters",
    );
    let mut wrong = args();
    wrong[0] = KernelArg::F32(1.0);
    refuse(
        square([16, 16, 1], wrong),
        &mut mem,
        "argument 0 (`A`) is a f32 (4 bytes) but the parameter is .u64",
    );
    let mut big = square([16, 16, 1], args());
    big.shared = 300 * 1024;
    refuse(big, &mut mem, "exceed the limit");
    let mut zero = square([16, 16, 1], args());
    zero.grid = [0, 1, 1];
    refuse(zero, &mut mem, "at least 1");
    let mut missing = square([16, 16, 1], args());
    missing.kernel = "matmul";
    refuse(
        missing,
        &mut mem,
        "no kernel `matmul` in the module (kernels: matmul_tiled)",
    );
    let v = module("vector_add.ptx");
    let too_many = Launch::new(
        "vector_add",
        1,
        512,
        vec![ptr(0), ptr(0), ptr(0), KernelArg::U32(0)],
    );
    match too_many.try_run(&v, &mut mem, &Default::default()) {
        Err(SimError::Launch { reason, .. }) => assert!(reason.contains(".maxntid"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hostile_inputs_get_errors_not_panics() {
    let e = parse_error(&kernel(".reg .b32 %big<100000000>;"));
    assert!(e.message.contains("more than 16384 registers"), "{e}");
    let nested = format!("{}{}", "{".repeat(100), "}".repeat(100));
    assert!(parse_error(&kernel(&nested))
        .message
        .contains("nested too deeply"));
    let huge = ".shared .b8 s[4294967295][4294967295][4294967295];";
    assert!(parse_error(&kernel(huge)).message.contains("too large"));
    // Addresses that wrap around the address space fault instead of overflowing.
    let m = parse_text(&kernel(
        ".reg .b64 %rd<2>;\nmov.u64 %rd1, 0;\nld.global.u32 %r1, [%rd1+-4];\nld.shared.u32 %r2, [%rd1+-4];",
    ));
    let f = Launch::new("k", 1, 1, vec![ptr(0)]).fault(&m, &mut GlobalMemory::new());
    assert!(
        f.to_string()
            .contains("out-of-bounds global load of 4 bytes at 0xfffffffffffffffc"),
        "{f}"
    );
}
