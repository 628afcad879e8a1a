//! BatchNorm statistics in fused plans stay accurate when a channel's mean dwarfs its
//! spread: channels with mean about 1e3 times their standard deviation, on the fused
//! plan run by the reference interpreter and as PTX on the simulator, against the
//! unfused graph in f64. `E[y^2] - E[y]^2` would lose every bit of the variance here.

use calib::ir::{ConvSpec, DType, Graph, GraphBuilder, Mode};
use calib::runtime::{Backend, Bindings, HostTensor, Reference, TensorMap};
use calib::verify::Fused;
use calib::Sim;

const SHAPE: [usize; 4] = [4, 3, 16, 16];

/// `bn(x)` or `bn(conv(x))` in train mode.
fn graph(with_conv: bool) -> Graph {
    let mut b = GraphBuilder::new(Mode::Train, DType::F32);
    let x = b.input("input", DType::F32, SHAPE.to_vec()).unwrap();
    let y = if with_conv {
        // No padding: zeros at the border would make the outputs' spread as large as
        // their mean.
        b.conv_layer("conv", x, &ConvSpec::new(4, 3)).unwrap()
    } else {
        x
    };
    let y = b.batch_norm("bn", y).unwrap();
    b.output("output", y).unwrap();
    b.finish()
}

/// A tiny deterministic generator (the tests need spread, not statistical quality).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn state(channels: usize, with_conv: bool) -> TensorMap {
    let vec = |v: f32| HostTensor::from_f32(vec![channels], vec![v; channels]).unwrap();
    let mut map = TensorMap::new();
    map.insert("bn.weight".into(), vec(1.0));
    map.insert("bn.bias".into(), vec(0.0));
    map.insert("bn.running_mean".into(), vec(0.0));
    // Zero, so that the new running variance is 0.1 times the batch's (unbiased).
    map.insert("bn.running_var".into(), vec(0.0));
    map.insert(
        "bn.num_batches_tracked".into(),
        HostTensor::from_i64(Vec::<usize>::new(), vec![0]).unwrap(),
    );
    if with_conv {
        // Positive weights keep the input's offset: the output's mean is ~1e3 times its
        // standard deviation too.
        let w: Vec<f32> = noise(4 * 3 * 9, 7)
            .iter()
            .map(|v| 0.05 + 0.05 * v.abs())
            .collect();
        map.insert(
            "conv.weight".into(),
            HostTensor::from_f32(vec![4, 3, 3, 3], w).unwrap(),
        );
    }
    map
}

fn check(with_conv: bool) {
    let g = graph(with_conv);
    let channels = if with_conv { 4 } else { 3 };
    let n: usize = SHAPE.iter().product();
    let x: Vec<f32> = noise(n, 1)
        .iter()
        .map(|v| 1000.0 + (v * 16.0).round() / 16.0)
        .collect();
    let x = HostTensor::from_f32(SHAPE.to_vec(), x).unwrap();
    let params = state(channels, with_conv);
    let bindings = Bindings::new().params(&params).input("input", &x);
    let exact = Reference::f64().run(&g, &bindings).unwrap();
    let want = exact["bn.running_var"].to_f64_vec();
    let mean = exact["bn.running_mean"].to_f64_vec();
    for (i, (m, v)) in mean.iter().zip(&want).enumerate() {
        let ratio = (m / 0.1).abs() / (v / 0.1).sqrt();
        assert!(ratio > 500.0, "channel {i}: mean/std is only {ratio}");
    }
    // Without a convolution the inputs are the data and f32 must reach its own
    // precision. After one, every f32 backend starts from f32 convolution outputs the f64
    // run does not see, and the bound is the error of the unfused graph's textbook
    // two-pass statistics on the f32 interpreter (twice it, for other summation orders).
    let floor: Vec<f64> = if with_conv {
        let two_pass = Reference::new().run(&g, &bindings).unwrap();
        let two_pass = two_pass["bn.running_var"].to_f64_vec();
        two_pass
            .iter()
            .zip(&want)
            .map(|(t, w)| 2.0 * (t - w).abs())
            .collect()
    } else {
        vec![0.0; channels]
    };
    for backend in [&Fused::default() as &dyn Backend, &Sim::new()] {
        let got = backend.run(&g, &bindings).unwrap();
        let got = got["bn.running_var"].to_f64_vec();
        for (c, (g, w)) in got.iter().zip(&want).enumerate() {
            let bound = (1e-6 * w).max(floor[c]);
            assert!(
                (g - w).abs() <= bound,
                "{}: channel {c}: variance {g} against {w} (error {:.2e}, bound {bound:.2e})",
                backend.name(),
                (g - w).abs()
            );
        }
    }
}

#[test]
fn variance_of_a_channel_with_a_large_mean_is_exact_to_f32_precision() {
    check(false);
}

#[test]
fn variance_of_a_convolution_with_a_large_mean_is_as_exact_as_two_passes() {
    check(true);
}
