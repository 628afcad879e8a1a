//! `calib report`: one self-contained HTML page about a `calib compile --out DIR`
//! output, for reading a plan rather than grepping it. The page has a summary, the
//! kernel table (sortable, filterable), a detail view per kernel (its body drawn, the
//! nodes it covers, egg's explanation, its PTX), each SCBottleneck before and after
//! fusion, a roofline chart and, against another compile, a diff.
//!
//! One concept per file: [`model`] reads the compile output, [`timings`] joins a
//! measured table, [`layout`] draws graphs, [`body`] and [`bottleneck`] say what to
//! draw, [`detail`] packs per-kernel text (with egg's explanations) ([`pack`]: compressed,
//! the page inflates it on demand), [`roofline`], [`diff`], and [`page`] assembles the HTML with the CSS
//! and JavaScript of `assets/`. No network is needed to view it.

pub mod body;
pub mod bottleneck;
pub mod detail;
pub mod diff;
pub mod layout;
pub mod model;
pub mod pack;
pub mod page;
pub mod roofline;
pub mod timings;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// What goes into a report besides the compile output itself.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// A per-kernel timing table (`calib bench --per-kernel`, or the Nsight tables of
    /// `shared/gpu/`).
    pub timings: Option<PathBuf>,
    /// Another compile output to compare with.
    pub against: Option<PathBuf>,
}

/// Writes `dir/report.html` and returns its path and size in bytes.
pub fn write_report(dir: &Path, options: &Options) -> Result<(PathBuf, u64)> {
    let mut out = model::CompileOutput::load(dir)?;
    let join = match &options.timings {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the timing table {}", path.display()))?;
            let table = crate::kernel_times::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Some((
                path.display().to_string(),
                timings::join(&mut out.kernels, &table),
            ))
        }
        None => None,
    };
    let other = match &options.against {
        Some(d) => Some(
            model::CompileOutput::load(d).with_context(|| format!("--against {}", d.display()))?,
        ),
        None => None,
    };
    let diff = other.as_ref().map(|o| diff::diff(&out, o));
    let chunks = detail::packed_details(&out)?;
    let html = page::render(&page::Parts {
        out: &out,
        timings: join.as_ref().map(|(p, j)| (p.as_str(), j)),
        diff: diff.as_ref(),
        chunks: &chunks,
    })?;
    let path = dir.join("report.html");
    std::fs::write(&path, &html).with_context(|| format!("writing {}", path.display()))?;
    Ok((path, html.len() as u64))
}

/// `text` with `& < > " '` escaped for HTML and SVG, in text and in attributes.
pub fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&#39;"),
            c => s.push(c),
        }
    }
    s
}
