//! A small layered graph layout, drawn as SVG: what the page uses for kernel bodies and
//! for SCBottlenecks before and after fusion, so no Graphviz is needed at view time.
//!
//! Nodes go top to bottom in layers by longest path from a source (every edge points
//! down), then each layer is ordered by the mean position of its neighbours, sweeping
//! down and up a few times (the barycentre heuristic of Sugiyama et al.), which removes
//! most crossings of these mostly tree-shaped graphs. Long edges are drawn as curves
//! through the layers they skip; for graphs of tens of nodes that stays readable.

use super::escape;
use std::fmt::Write;

const NODE_W: f64 = 164.0;
const NODE_H: f64 = 34.0;
const GAP_X: f64 = 18.0;
const GAP_Y: f64 = 34.0;
const MARGIN: f64 = 10.0;
/// Characters of a label that fit in a node at the page's font size.
const LABEL_CHARS: usize = 22;
const SWEEPS: usize = 4;

/// One node to draw.
#[derive(Clone, Debug, Default)]
pub struct DrawNode {
    /// First line (the op).
    pub label: String,
    /// Second, smaller line (a type, a kernel name).
    pub detail: String,
    /// CSS classes (`input`, `anchor`, `calib`, ...), space-separated.
    pub class: String,
    /// Tooltip.
    pub title: String,
    /// Fill colour of a fused group, overriding the class's.
    pub fill: Option<String>,
    /// A `data-kernel` attribute, so a click can open that kernel.
    pub kernel: Option<String>,
}

/// Nodes and edges `(from, to)`; nodes in an order where every edge points forward.
#[derive(Clone, Debug, Default)]
pub struct DrawGraph {
    pub nodes: Vec<DrawNode>,
    pub edges: Vec<(usize, usize)>,
}

/// Where each node landed.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// Top-left corner of each node.
    pub positions: Vec<(f64, f64)>,
    pub width: f64,
    pub height: f64,
}

impl DrawGraph {
    /// Lays the graph out. Edges that do not point forward are ignored (there are none
    /// in a topological order).
    pub fn layout(&self) -> Layout {
        let n = self.nodes.len();
        let edges: Vec<(usize, usize)> = self
            .edges
            .iter()
            .copied()
            .filter(|&(a, b)| a < b && b < n)
            .collect();
        let mut layer = vec![0usize; n];
        for &(a, b) in &edges {
            layer[b] = layer[b].max(layer[a] + 1);
        }
        let layers = layer.iter().max().map_or(0, |m| m + 1);
        let mut rows: Vec<Vec<usize>> = vec![vec![]; layers];
        for (i, &l) in layer.iter().enumerate() {
            rows[l].push(i);
        }
        let mut preds = vec![vec![]; n];
        let mut succs = vec![vec![]; n];
        for &(a, b) in &edges {
            preds[b].push(a);
            succs[a].push(b);
        }
        let mut slot = vec![0.0; n];
        for row in &rows {
            for (j, &i) in row.iter().enumerate() {
                slot[i] = j as f64;
            }
        }
        for sweep in 0..SWEEPS {
            let down = sweep % 2 == 0;
            let order: Vec<usize> = if down {
                (1..layers).collect()
            } else {
                (0..layers.saturating_sub(1)).rev().collect()
            };
            for l in order {
                let neighbours = if down { &preds } else { &succs };
                let key = |i: usize| {
                    let ns = &neighbours[i];
                    if ns.is_empty() {
                        slot[i]
                    } else {
                        ns.iter().map(|&j| slot[j]).sum::<f64>() / ns.len() as f64
                    }
                };
                let mut keyed: Vec<(f64, usize)> = rows[l].iter().map(|&i| (key(i), i)).collect();
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                rows[l] = keyed.into_iter().map(|(_, i)| i).collect();
                for (j, &i) in rows[l].iter().enumerate() {
                    slot[i] = j as f64;
                }
            }
        }
        let widest = rows.iter().map(Vec::len).max().unwrap_or(0) as f64;
        let width = 2.0 * MARGIN + widest * (NODE_W + GAP_X) - GAP_X.min(widest * GAP_X);
        let mut positions = vec![(0.0, 0.0); n];
        for (l, row) in rows.iter().enumerate() {
            let row_width = row.len() as f64 * (NODE_W + GAP_X) - GAP_X;
            let left = (width - row_width) / 2.0;
            for (j, &i) in row.iter().enumerate() {
                positions[i] = (
                    left + j as f64 * (NODE_W + GAP_X),
                    MARGIN + l as f64 * (NODE_H + GAP_Y),
                );
            }
        }
        Layout {
            positions,
            width: width.max(NODE_W + 2.0 * MARGIN),
            height: 2.0 * MARGIN + layers as f64 * (NODE_H + GAP_Y)
                - GAP_Y.min(layers as f64 * GAP_Y),
        }
    }

    /// The graph as an `<svg>` element with class `graph` and the extra `class`.
    pub fn svg(&self, class: &str) -> String {
        let layout = self.layout();
        let mut s = String::new();
        let (w, h) = (layout.width.ceil(), layout.height.max(0.0).ceil());
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="graph {class}" width="{w}" height="{h}" viewBox="0 0 {w} {h}">"#
        );
        s.push_str("<g class=\"edges\">");
        for &(a, b) in &self.edges {
            let (Some(&(ax, ay)), Some(&(bx, by))) =
                (layout.positions.get(a), layout.positions.get(b))
            else {
                continue;
            };
            if a >= b {
                continue;
            }
            let (x1, y1, x2, y2) = (ax + NODE_W / 2.0, ay + NODE_H, bx + NODE_W / 2.0, by);
            let my = (y1 + y2) / 2.0;
            let _ = write!(
                s,
                r#"<path d="M{x1:.1},{y1:.1} C{x1:.1},{my:.1} {x2:.1},{my:.1} {x2:.1},{y2:.1}"/>"#
            );
        }
        s.push_str("</g>");
        for (node, &(x, y)) in self.nodes.iter().zip(&layout.positions) {
            let kernel = node.kernel.as_ref().map_or(String::new(), |k| {
                format!(r#" data-kernel="{}""#, escape(k))
            });
            let fill = node
                .fill
                .as_ref()
                .map_or(String::new(), |f| format!(r#" style="fill:{}""#, escape(f)));
            let _ = write!(
                s,
                r#"<g class="node {}"{kernel} transform="translate({x:.1},{y:.1})"><title>{}</title><rect width="{NODE_W}" height="{NODE_H}" rx="5"{fill}/><text x="{}" y="14" class="l1">{}</text><text x="{}" y="27" class="l2">{}</text></g>"#,
                escape(&node.class),
                escape(&node.title),
                NODE_W / 2.0,
                escape(&clip(&node.label)),
                NODE_W / 2.0,
                escape(&clip(&node.detail)),
            );
        }
        s.push_str("</svg>");
        s
    }
}

/// `text` cut to what fits in a node, with an ellipsis when cut.
fn clip(text: &str) -> String {
    if text.chars().count() <= LABEL_CHARS {
        text.to_string()
    } else {
        let mut t: String = text.chars().take(LABEL_CHARS - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(n: usize, edges: &[(usize, usize)]) -> DrawGraph {
        DrawGraph {
            nodes: (0..n)
                .map(|i| DrawNode {
                    label: format!("n{i}"),
                    ..Default::default()
                })
                .collect(),
            edges: edges.to_vec(),
        }
    }

    #[test]
    fn every_edge_points_down_and_nodes_never_overlap() {
        // A diamond with a long edge and a second source.
        let g = graph(6, &[(0, 1), (0, 2), (1, 3), (2, 3), (0, 3), (4, 5), (3, 5)]);
        let l = g.layout();
        for &(a, b) in &g.edges {
            assert!(
                l.positions[a].1 < l.positions[b].1,
                "{a} -> {b} points down"
            );
        }
        for i in 0..6 {
            for j in i + 1..6 {
                let (p, q) = (l.positions[i], l.positions[j]);
                let apart = (p.0 - q.0).abs() >= NODE_W || (p.1 - q.1).abs() >= NODE_H;
                assert!(apart, "nodes {i} and {j} overlap");
                assert!(p.0 >= 0.0 && p.0 + NODE_W <= l.width && p.1 + NODE_H <= l.height);
            }
        }
    }

    #[test]
    fn barycentres_uncross_a_crossed_pair() {
        // 0 -> 3 and 1 -> 2: in index order the two edges cross; after the sweeps the
        // child of the left parent is on the left.
        let g = graph(4, &[(0, 3), (1, 2)]);
        let l = g.layout();
        assert_eq!(
            l.positions[0].0 < l.positions[1].0,
            l.positions[3].0 < l.positions[2].0
        );
    }

    #[test]
    fn labels_are_escaped_and_clipped() {
        let mut g = graph(1, &[]);
        g.nodes[0].label = "a<b & a very long label that does not fit".into();
        let svg = g.svg("body");
        assert!(svg.contains("a&lt;b &amp;"));
        assert!(svg.contains('…'));
        assert!(!svg.contains("does not fit"));
    }
}
