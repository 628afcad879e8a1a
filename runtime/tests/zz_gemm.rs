use calib_runtime::Float;
use std::time::Instant;
#[test]
fn gemm_shapes() {
    let a = vec![0.5f32; 144 * 784];
    let b = vec![0.25f32; 144 * 784];
    let mut c = vec![0f32; 144 * 784];
    for _ in 0..2 {
        let t0 = Instant::now();
        for _ in 0..128 { f32::gemm(16, 144, 784, (&a, 144, 1), (&b, 784, 1), 0.0, (&mut c, 784, 1)); }
        eprintln!("fwd  (16,144,784) row-major: {:?}", t0.elapsed());
        let t0 = Instant::now();
        for _ in 0..128 { f32::gemm(16, 784, 144, (&a, 784, 1), (&b, 1, 784), 1.0, (&mut c, 144, 1)); }
        eprintln!("bw1  (16,784,144) B^T: {:?}", t0.elapsed());
        let t0 = Instant::now();
        for _ in 0..128 { f32::gemm(144, 784, 16, (&b, 784, 1), (&a, 1, 784), 1.0, (&mut c, 1, 144)); }
        eprintln!("bw2  (144,784,16) B^T, C^T: {:?}", t0.elapsed());
        let t0 = Instant::now();
        for _ in 0..128 { f32::gemm(16, 784, 144, (&a, 784, 1), (&b, 144, 1), 1.0, (&mut c, 144, 1)); }
        eprintln!("bw3x  (16,784,144) B row-major: {:?}", t0.elapsed());
        let t0 = Instant::now();
        for _ in 0..128 { f32::gemm(144, 784, 16, (&b, 784, 1), (&a, 16, 1), 1.0, (&mut c, 1, 144)); }
        eprintln!("bw4  (144,784,16) B row-major, C^T: {:?}", t0.elapsed());
        let t0 = Instant::now();
        for _ in 0..128 { f32::gemm(144, 16, 784, (&b, 1, 144), (&a, 784, 1), 0.0, (&mut c, 784, 1)); }
        eprintln!("bwd data (144,16,784) A^T: {:?}", t0.elapsed());
    }
}
