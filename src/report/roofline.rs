//! The roofline chart: each kernel at its arithmetic intensity (FLOPs per byte it must
//! move) against the device's ceilings, the f32 peak and memory bandwidth times
//! intensity (Williams, Waterman and Patterson, 2009). A kernel's height is the FLOP
//! rate its time implies: predicted by the cost model, and measured when a timing table
//! was given. A point far below its ceiling is time spent on something other than
//! arithmetic or moving its bytes once.

use super::escape;
use super::model::KernelFacts;
use calib_cost::Device;
use std::fmt::Write;

const W: f64 = 760.0;
const H: f64 = 440.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 44.0;

/// The chart, and how many kernels it could not place (no FLOPs, or no time).
pub fn roofline(kernels: &[KernelFacts], device: &Device) -> (String, usize) {
    let points: Vec<(&KernelFacts, f64)> = kernels
        .iter()
        .filter(|k| k.flops > 0.0 && k.bytes > 0.0 && k.predicted_us > 0.0)
        .map(|k| (k, k.flops / k.bytes))
        .collect();
    let skipped = kernels.len() - points.len();
    let rate = |k: &KernelFacts, us: f64| k.flops / (us * 1e-6);
    let peak = device.peak_flops_f32;
    let bw = device.dram_bandwidth;
    // Axis ranges in whole decades around the points and the ridge.
    let ridge = peak / bw;
    let ais = points.iter().map(|p| p.1).chain([ridge]);
    let x_lo = ais.clone().fold(f64::INFINITY, f64::min).log10().floor();
    let x_hi = ais.fold(0.0, f64::max).log10().ceil().max(x_lo + 1.0);
    let rates = points
        .iter()
        .flat_map(|(k, _)| {
            [
                Some(rate(k, k.predicted_us)),
                k.measured_us.filter(|&m| m > 0.0).map(|m| rate(k, m)),
            ]
        })
        .flatten()
        .chain([peak]);
    let y_lo = rates.clone().fold(f64::INFINITY, f64::min).log10().floor();
    let y_hi = (peak.log10() + 0.3).ceil();
    let x = |ai: f64| LEFT + (ai.log10() - x_lo) / (x_hi - x_lo) * (W - LEFT - RIGHT);
    let y = |r: f64| TOP + (y_hi - r.log10()) / (y_hi - y_lo) * (H - TOP - BOTTOM);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="roofline" width="{W}" height="{H}" viewBox="0 0 {W} {H}">"#
    );
    // Decade grid and labels.
    for d in x_lo as i32..=x_hi as i32 {
        let px = x(10f64.powi(d));
        let _ = write!(
            s,
            r#"<line class="grid" x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}"/><text class="tick" x="{px:.1}" y="{:.1}">10<tspan dy="-6" font-size="9">{d}</tspan></text>"#,
            H - BOTTOM,
            H - BOTTOM + 16.0
        );
    }
    for d in y_lo as i32..=y_hi as i32 {
        let py = y(10f64.powi(d));
        let _ = write!(
            s,
            r#"<line class="grid" x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}"/><text class="tick y" x="{:.1}" y="{:.1}">10<tspan dy="-6" font-size="9">{d}</tspan></text>"#,
            W - RIGHT,
            LEFT - 6.0,
            py + 4.0
        );
    }
    let _ = write!(
        s,
        r#"<text class="axis" x="{:.1}" y="{:.1}">arithmetic intensity (FLOP / byte)</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 6.0
    );
    let _ = write!(
        s,
        r#"<text class="axis" transform="translate(14,{:.1}) rotate(-90)">FLOP/s</text>"#,
        (TOP + H - BOTTOM) / 2.0
    );
    // Ceilings: bandwidth up to the ridge, then the peak.
    let lo_ai = 10f64.powf(x_lo);
    let hi_ai = 10f64.powf(x_hi);
    let start_ai = lo_ai.max(10f64.powf(y_lo) / bw);
    let _ = write!(
        s,
        r#"<polyline class="ceiling" points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}"/>"#,
        x(start_ai),
        y(start_ai * bw),
        x(ridge),
        y(peak),
        x(hi_ai),
        y(peak)
    );
    let _ = write!(
        s,
        r#"<text class="ceiling-label" x="{:.1}" y="{:.1}">f32 peak {:.1} TFLOP/s</text>"#,
        x(ridge) + 6.0,
        y(peak) - 6.0,
        peak / 1e12
    );
    let _ = write!(
        s,
        r#"<text class="ceiling-label" x="{:.1}" y="{:.1}" text-anchor="end">{:.1} TB/s</text>"#,
        x(ridge) - 8.0,
        y(peak) + 16.0,
        bw / 1e12
    );
    for (k, ai) in &points {
        let title = |what: &str, us: f64| {
            format!(
                "{} {} — {what} {us:.1} µs, {:.2} TFLOP/s, {ai:.2} FLOP/B",
                k.name,
                k.label,
                rate(k, us) / 1e12
            )
        };
        let _ = write!(
            s,
            r#"<circle class="pt predicted a-{}" data-kernel="{}" cx="{:.1}" cy="{:.1}" r="3.5"><title>{}</title></circle>"#,
            escape(&k.anchor),
            escape(&k.name),
            x(*ai),
            y(rate(k, k.predicted_us)),
            escape(&title("predicted", k.predicted_us))
        );
        if let Some(m) = k.measured_us.filter(|&m| m > 0.0) {
            let (px, py) = (x(*ai), y(rate(k, m)));
            let _ = write!(
                s,
                r#"<path class="pt measured a-{}" data-kernel="{}" d="M{:.1},{:.1} l4,7 h-8 z"><title>{}</title></path>"#,
                escape(&k.anchor),
                escape(&k.name),
                px,
                py - 4.5,
                escape(&title("measured", m))
            );
        }
    }
    s.push_str("</svg>");
    (s, skipped)
}
