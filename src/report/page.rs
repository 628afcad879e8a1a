//! The HTML page: the summary and the sections in the order a reader wants them, the
//! kernel table's data as JSON for `assets/report.js` to render, sort and filter, and
//! each kernel's detail in compressed chunks. CSS and JavaScript are inlined, so the
//! file is the whole report.

use super::bottleneck::blocks;
use super::detail::CHUNK;
use super::diff::Diff;
use super::escape;
use super::model::CompileOutput;
use super::roofline::roofline;
use super::timings::Join;
use anyhow::Result;
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write;

const CSS: &str = include_str!("assets/report.css");
const JS: &str = include_str!("assets/report.js");

/// What a page is made of.
pub struct Parts<'a> {
    pub out: &'a CompileOutput,
    /// The timing table's path and how it joined.
    pub timings: Option<(&'a str, &'a Join)>,
    pub diff: Option<&'a Diff>,
    /// [`super::detail::packed_details`].
    pub chunks: &'a [String],
}

/// The page's HTML.
pub fn render(p: &Parts) -> Result<String> {
    let out = p.out;
    let mut h = String::new();
    let title = format!("calib report — {}", out.dir.display());
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{CSS}</style></head><body>",
        escape(&title)
    );
    let _ = write!(
        h,
        "<header><h1>calib report</h1><p class=\"sub\">{} · planned for the {} · {} kernels</p><nav>\
         <a href=\"#summary\">Summary</a><a href=\"#kernels\">Kernels</a><a href=\"#roofline\">Roofline</a>\
         <a href=\"#blocks\">SCBottlenecks</a>{}</nav></header><main>",
        escape(&out.dir.display().to_string()),
        escape(&out.device.name),
        out.kernels.len(),
        if p.diff.is_some() { "<a href=\"#diff\">Diff</a>" } else { "" }
    );
    h.push_str(&summary(p));
    h.push_str(&kernel_table());
    let (chart, skipped) = roofline(&out.kernels, &out.device);
    let _ = write!(
        h,
        "<section id=\"roofline\"><h2>Roofline</h2><p class=\"note\">Each kernel at its arithmetic \
         intensity (FLOPs over the bytes it must move) and the FLOP rate its time implies: circles \
         predicted by the cost model{}; the ceilings are the {}'s f32 peak and memory bandwidth. \
         Click a point to open its kernel.{}</p><div class=\"legend\">{}</div>{chart}</section>",
        if p.timings.is_some() { ", triangles measured" } else { "" },
        escape(&out.device.name),
        if skipped > 0 { format!(" {skipped} kernels without FLOPs (copies, index maps) are not drawn.") } else { String::new() },
        legend(),
    );
    h.push_str(&bottlenecks(out));
    if let Some(d) = p.diff {
        h.push_str(&diff_section(d));
    }
    h.push_str(
        "</main><aside id=\"detail\" hidden><button id=\"detail-close\" title=\"Close (Esc)\">×</button>\
         <div id=\"detail-body\"></div></aside>",
    );
    let data = json!({
        "chunk": CHUNK,
        "measured": p.timings.is_some(),
        "ptx": out.has_ptx,
        "kernels": out.kernels.iter().map(|k| json!([
            k.name, k.anchor, k.label, k.ops, k.covers.len(), k.flops, k.bytes,
            k.predicted_us, k.measured_us,
            k.ptxas.as_ref().map(|x| x.registers), k.ptxas.as_ref().map(|x| x.spill_bytes),
            k.ptxas.as_ref().map(|x| x.shared_bytes), k.ptxas.as_ref().map(|x| x.occupancy),
        ])).collect::<Vec<_>>(),
    });
    // `</` would end the script element early.
    let _ = write!(
        h,
        "<script type=\"application/json\" id=\"calib-data\">{}</script>",
        serde_json::to_string(&data)?.replace("</", "<\\/")
    );
    for (i, c) in p.chunks.iter().enumerate() {
        let _ = write!(
            h,
            "<script type=\"text/plain\" id=\"chunk-{i}\">{c}</script>"
        );
    }
    let _ = write!(h, "<script>{JS}</script></body></html>");
    Ok(h)
}

/// `value` with an SI prefix: `1.54 T`.
pub fn si(value: f64, unit: &str) -> String {
    let prefixes = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, p) in prefixes {
        if value.abs() >= scale {
            return format!("{:.3} {p}{unit}", value / scale);
        }
    }
    format!("{value:.0} {unit}")
}

fn card(h: &mut String, what: &str, before: &str, after: &str, change: &str) {
    let _ = write!(
        h,
        "<div class=\"card\"><div class=\"what\">{what}</div><div class=\"val\">{}</div>\
         <div class=\"was\">{}</div><div class=\"chg\">{}</div></div>",
        escape(after),
        escape(before),
        escape(change)
    );
}

fn change(before: f64, after: f64) -> String {
    if before == 0.0 {
        return String::new();
    }
    let r = (after - before) / before * 100.0;
    format!("{}{r:.1}%", if r > 0.0 { "+" } else { "" })
}

fn summary(p: &Parts) -> String {
    let out = p.out;
    let s = &out.summary;
    let mut h = String::from("<section id=\"summary\"><h2>Summary</h2><div class=\"cards\">");
    card(
        &mut h,
        "kernels",
        &format!("{} ops unfused", s.kernels_before),
        &s.kernels_after.to_string(),
        &change(s.kernels_before as f64, s.kernels_after as f64),
    );
    card(
        &mut h,
        "bytes moved",
        &format!("{} unfused", si(s.bytes_before, "B")),
        &si(s.bytes_after, "B"),
        &change(s.bytes_before, s.bytes_after),
    );
    card(
        &mut h,
        "FLOPs",
        &format!("{} unfused", si(s.flops_before, "FLOP")),
        &si(s.flops_after, "FLOP"),
        &change(s.flops_before, s.flops_after),
    );
    card(
        &mut h,
        "predicted step",
        &format!(
            "{:.2} ms unfused (fusion's estimate)",
            s.seconds_before * 1e3
        ),
        &format!("{:.2} ms", out.step_ms),
        &format!("{:.2} ms in kernels, the rest launch gaps", out.kernel_ms()),
    );
    let mut notes: Vec<String> = vec![];
    if let Some((path, j)) = p.timings {
        let matched: f64 = out.kernels.iter().filter_map(|k| k.measured_us).sum();
        card(
            &mut h,
            "measured kernels",
            &format!("{:.2} ms matched to this plan's kernels", matched / 1e3),
            &format!("{:.2} ms", j.table_us / 1e3),
            path.rsplit('/').next().unwrap_or(path),
        );
        notes.extend(j.note(out.kernels.len()));
    } else {
        notes.push("No timing table: give one with --timings FILE (calib bench --per-kernel, or an Nsight table of shared/gpu/) to see measured times.".into());
    }
    h.push_str("</div>");
    if !out.has_ptx {
        notes.push("This compile ran without --emit-ptx: no PTX, registers, spills, shared memory or occupancy (compile again with --emit-ptx).".into());
    }
    if !s.disabled_rules.is_empty() {
        notes.push(format!(
            "Rules off in this compile: {}.",
            s.disabled_rules.join(", ")
        ));
    }
    for n in notes {
        let _ = write!(h, "<p class=\"note\">{}</p>", escape(&n));
    }
    // Time per anchor family: where the step goes.
    let mut fam: BTreeMap<&str, (usize, f64, f64)> = BTreeMap::new();
    for k in &out.kernels {
        let e = fam.entry(&k.anchor).or_default();
        e.0 += 1;
        e.1 += k.predicted_us;
        e.2 += k.measured_us.unwrap_or(0.0);
    }
    let total: f64 = out
        .kernels
        .iter()
        .map(|k| k.predicted_us)
        .sum::<f64>()
        .max(1e-9);
    h.push_str("<table class=\"families\"><thead><tr><th>anchor</th><th class=\"num\">kernels</th><th class=\"num\">predicted ms</th><th>share of predicted</th>");
    if p.timings.is_some() {
        h.push_str("<th class=\"num\">measured ms</th>");
    }
    h.push_str("</tr></thead><tbody>");
    for (a, (n, pred, meas)) in fam {
        let _ = write!(
            h,
            "<tr><td><span class=\"dot a-{a}\"></span>{a}</td><td class=\"num\">{n}</td><td class=\"num\">{:.2}</td>\
             <td><div class=\"bar\"><span style=\"width:{:.1}%\"></span></div></td>",
            pred / 1e3,
            pred / total * 100.0
        );
        if p.timings.is_some() {
            let _ = write!(h, "<td class=\"num\">{:.2}</td>", meas / 1e3);
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></section>");
    h
}

/// The table's frame; `report.js` fills the rows from the data.
fn kernel_table() -> String {
    let cols = [
        ("name", "kernel", ""),
        ("anchor", "anchor", ""),
        ("label", "label (layer)", ""),
        ("ops", "ops", "num"),
        ("covers", "nodes", "num"),
        ("flops", "FLOPs", "num"),
        ("bytes", "bytes", "num"),
        ("ai", "FLOP/B", "num"),
        ("predicted", "predicted µs", "num"),
        ("measured", "measured µs", "num"),
        ("registers", "regs", "num"),
        ("spills", "spill B", "num"),
        ("shared", "smem B", "num"),
        ("occupancy", "occupancy", "num"),
    ];
    let mut h = String::from(
        "<section id=\"kernels\"><h2>Kernels</h2><div class=\"controls\"><input id=\"kernel-filter\" type=\"search\" \
         placeholder=\"filter: k12, conv2d, layer1.0.scconv, reduction … (all words must match)\" autocomplete=\"off\">\
         <span id=\"kernel-count\"></span></div><div class=\"table-wrap\"><table id=\"kernel-table\"><thead><tr>",
    );
    for (key, label, class) in cols {
        let _ = write!(
            h,
            "<th data-key=\"{key}\" class=\"{class}\" title=\"sort by {label}\">{label}</th>"
        );
    }
    h.push_str("</tr></thead><tbody></tbody></table></div><p class=\"note\">Click a column to sort, a row to open the kernel. Registers, spills and shared memory are ptxas's for sm_90 (the most of any of the kernel's launches); occupancy is that of its longest launch.</p></section>");
    h
}

fn legend() -> String {
    ["convolution", "matmul", "reduction", "pool", "pointwise"]
        .iter()
        .map(|a| format!("<span><span class=\"dot a-{a}\"></span>{a}</span>"))
        .collect()
}

fn bottlenecks(out: &CompileOutput) -> String {
    let views = blocks(out);
    let mut h = String::from("<section id=\"blocks\"><h2>SCBottlenecks</h2>");
    if views.is_empty() {
        h.push_str("<p class=\"note\">This model has no SCBottleneck (no scope with an scconv).</p></section>");
        return h;
    }
    h.push_str(
        "<p class=\"note\">The forward pass of a block before fusion (one node per op, each BatchNorm as one) and the kernels \
         that compute it, each fused group in its own colour. Outlined in red: the self-calibration branch (k2's average \
         pool, convolution and BatchNorm, the upsampling, add, sigmoid and the gate's product). Click a node to open its kernel.</p>\
         <div class=\"controls\"><label>block <select id=\"block-select\">",
    );
    for (i, v) in views.iter().enumerate() {
        let _ = write!(h, "<option value=\"{i}\">{}</option>", escape(&v.scope));
    }
    h.push_str("</select></label></div>");
    for (i, v) in views.iter().enumerate() {
        let _ = write!(
            h,
            "<div class=\"block\" id=\"block-{i}\"{}><div class=\"side\"><h3>before: {} ops</h3>{}</div>\
             <div class=\"side\"><h3>after: {} kernels</h3>{}</div></div>",
            if i == 0 { "" } else { " hidden" },
            v.ops,
            v.before_svg,
            v.kernels,
            v.after_svg
        );
    }
    h.push_str("</section>");
    h
}

fn diff_section(d: &Diff) -> String {
    let mut h = format!(
        "<section id=\"diff\"><h2>Diff against {}</h2><p class=\"note\">Kernels matched by {}: {} in both, {} only here, {} only there.</p>\
         <table class=\"diff\"><thead><tr><th></th><th class=\"num\">this</th><th class=\"num\">other</th><th class=\"num\">change</th></tr></thead><tbody>",
        escape(&d.other_dir),
        d.matched_by,
        d.common,
        d.gained.len(),
        d.lost.len()
    );
    for t in &d.totals {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            t.what,
            fmt_total(t.this),
            fmt_total(t.other),
            change(t.other, t.this)
        );
    }
    h.push_str("</tbody></table>");
    for (title, list, id) in [
        ("Only in this compile (gained)", &d.gained, "gained"),
        ("Only in the other (lost)", &d.lost, "lost"),
    ] {
        let _ = write!(h, "<h3>{title}: {}</h3><table class=\"diff-list\" id=\"diff-{id}\"><thead><tr><th>kernel</th><th>label</th><th class=\"num\">nodes</th><th class=\"num\">predicted µs</th></tr></thead><tbody>", list.len());
        for k in list.iter().take(50) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}</td></tr>",
                escape(&k.name),
                escape(&k.label),
                k.covers.len(),
                k.predicted_us
            );
        }
        h.push_str("</tbody></table>");
        if list.len() > 50 {
            let _ = write!(h, "<p class=\"note\">… and {} more.</p>", list.len() - 50);
        }
    }
    h.push_str("</section>");
    h
}

fn fmt_total(v: f64) -> String {
    if v.fract() == 0.0 && v < 1e6 {
        format!("{v:.0}")
    } else if v >= 1e6 {
        si(v, "")
    } else {
        format!("{v:.3}")
    }
}
