//! A standalone SVG of a [`Graph`], laid out by fixed rules rather than by a
//! graph-layout engine, so the picture is the same on every run and needs
//! nothing installed:
//!
//! - external hosts on top, then each external network as a wide bar;
//! - the nodes as framed columns side by side: `br-ex`, then the routers, then
//!   `br-int` across the whole column, then the `qbr…` bridges and `br-vlan`;
//! - instances below the `qbr…` they hang off;
//! - each physical network as a wide bar at the bottom.
//!
//! Lines are straight; parallel links between the same boxes are spread apart.

use std::collections::BTreeMap;

use super::{ClusterKind, Graph, NodeKind};
use crate::naming::{BR_EX, BR_INT};

const MARGIN: f64 = 20.0;
const CHAR_W: f64 = 6.2;
const LINE_H: f64 = 13.0;
const PAD: f64 = 8.0;
const ROW_GAP: f64 = 72.0;
const COLUMN_GAP: f64 = 30.0;
const HEADER_H: f64 = 2.0 * LINE_H + 14.0;

#[derive(Debug, Clone, Copy)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    /// Lines meet a wide box where they come from, not at its centre.
    wide: bool,
}

impl Rect {
    fn cx(&self) -> f64 {
        self.x + self.w / 2.0
    }
    fn cy(&self) -> f64 {
        self.y + self.h / 2.0
    }
}

fn text_width(lines: &[String]) -> f64 {
    let chars = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    (chars as f64 * CHAR_W + 2.0 * PAD).max(110.0)
}

fn text_height(lines: &[String]) -> f64 {
    lines.len() as f64 * LINE_H + 2.0 * PAD - 3.0
}

/// Where each box and frame goes.
struct Layout {
    nodes: BTreeMap<usize, Rect>,
    clusters: BTreeMap<usize, Rect>,
    width: f64,
    height: f64,
}

/// What a node column holds, by row.
#[derive(Default)]
struct Column {
    top: Vec<usize>,
    routers: Vec<usize>,
    middle: Vec<usize>,
    bottom: Vec<usize>,
    below: Vec<usize>,
}

fn layout(graph: &Graph) -> Layout {
    let node_clusters: Vec<usize> = (0..graph.clusters.len())
        .filter(|&c| graph.clusters[c].kind == ClusterKind::Node)
        .collect();
    let mut columns: BTreeMap<usize, Column> = node_clusters
        .iter()
        .map(|&c| (c, Column::default()))
        .collect();
    let mut hosts = Vec::new();
    let mut loose = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let column = node
            .cluster
            .or(node.anchor)
            .and_then(|c| columns.get_mut(&c));
        match (node.kind, column) {
            (NodeKind::Switch, _) => {}
            (NodeKind::ExternalHost, _) => hosts.push(i),
            (NodeKind::OvsBridge, Some(col)) if node.label[0] == BR_EX => col.top.push(i),
            (NodeKind::OvsBridge, Some(col)) if node.label[0] == BR_INT => col.middle.push(i),
            (NodeKind::OvsBridge | NodeKind::LinuxBridge, Some(col)) => col.bottom.push(i),
            (NodeKind::Router, Some(col)) => col.routers.push(i),
            (NodeKind::Instance, Some(col)) => col.below.push(i),
            _ => loose.push(i),
        }
    }
    // Linux bridges left to right, the other bridges (br-vlan) at the right.
    for col in columns.values_mut() {
        col.bottom
            .sort_by_key(|&i| graph.nodes[i].kind == NodeKind::OvsBridge);
    }

    let label = |i: usize| &graph.nodes[i].label;
    let slot_w = hosts
        .iter()
        .map(|&i| text_width(label(i)))
        .fold(180.0, f64::max)
        + 50.0;
    let row_h = |items: &mut dyn Iterator<Item = usize>| {
        items.map(|i| text_height(label(i))).fold(0.0, f64::max)
    };

    let mut nodes = BTreeMap::new();
    let mut clusters = BTreeMap::new();
    let mut y = MARGIN + 30.0;

    // External hosts, then the external networks.
    if !hosts.is_empty() {
        let h = row_h(&mut hosts.iter().copied());
        for (k, &i) in hosts.iter().enumerate() {
            let w = text_width(label(i));
            let x = MARGIN + slot_w * (k as f64 + 0.5) - w / 2.0;
            nodes.insert(i, rect(x, y, w, h));
        }
        y += h + ROW_GAP;
    }
    let bars = |kind: ClusterKind| -> Vec<(usize, usize)> {
        graph
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.kind == NodeKind::Switch)
            .filter_map(|(i, n)| n.cluster.map(|c| (c, i)))
            .filter(|&(c, _)| graph.clusters[c].kind == kind)
            .collect()
    };
    let bar_h = 2.0 * LINE_H + 2.0 * PAD;
    let mut bar_rows = Vec::new();
    for (c, i) in bars(ClusterKind::ExternalNetwork) {
        bar_rows.push((c, i, y));
        y += bar_h + ROW_GAP;
    }

    // The node columns.
    let cols: Vec<(usize, &Column)> = columns.iter().map(|(&c, col)| (c, col)).collect();
    let all = |pick: fn(&Column) -> &Vec<usize>| -> Vec<usize> {
        cols.iter().flat_map(|(_, col)| pick(col).clone()).collect()
    };
    let frame_top = y;
    y += HEADER_H;
    let row_y = |items: Vec<usize>, y: &mut f64| -> f64 {
        let at = *y;
        if !items.is_empty() {
            *y += row_h(&mut items.into_iter()) + ROW_GAP;
        }
        at
    };
    let top_y = row_y(all(|c| &c.top), &mut y);
    let router_y = row_y(all(|c| &c.routers), &mut y);
    let middle_y = y;
    let middle_h = row_h(&mut all(|c| &c.middle).into_iter()).max(LINE_H + 2.0 * PAD);
    y += middle_h + ROW_GAP;
    let bottom_y = y;
    let bottom_h = row_h(&mut all(|c| &c.bottom).into_iter());
    y += bottom_h + 16.0;
    let frame_bottom = y;
    y += ROW_GAP;
    let below_y = row_y(all(|c| &c.below), &mut y);

    let mut x = MARGIN;
    for (c, col) in &cols {
        let slots = [col.top.len(), col.routers.len(), col.bottom.len(), 1]
            .into_iter()
            .max()
            .unwrap_or(1);
        // Slots as wide as this column's widest box (a router's namespace is long).
        let slot_w = [&col.top, &col.routers, &col.bottom, &col.below]
            .into_iter()
            .flatten()
            .map(|&i| text_width(label(i)))
            .fold(180.0, f64::max)
            + 50.0;
        let col_w = slots as f64 * slot_w;
        let slot_x = |k: usize| x + slot_w * (k as f64 + 0.5);
        let place = |i: usize, k: usize, y: f64, nodes: &mut BTreeMap<usize, Rect>| {
            let w = text_width(label(i));
            let h = text_height(label(i));
            nodes.insert(i, rect(slot_x(k) - w / 2.0, y, w, h));
        };
        for (k, &i) in col.top.iter().enumerate() {
            place(i, k, top_y, &mut nodes);
        }
        for (k, &i) in col.routers.iter().enumerate() {
            place(i, k, router_y, &mut nodes);
        }
        for &i in &col.middle {
            let mut r = rect(x + 16.0, middle_y, col_w - 32.0, middle_h);
            r.wide = true;
            nodes.insert(i, r);
        }
        for (k, &i) in col.bottom.iter().enumerate() {
            place(i, k, bottom_y, &mut nodes);
        }
        // An instance goes below the bridge it hangs off, or the next free slot.
        let mut free = 0;
        for &i in &col.below {
            let slot = graph
                .edges
                .iter()
                .filter_map(|e| match (e.from == i, e.to == i) {
                    (true, _) => Some(e.to),
                    (_, true) => Some(e.from),
                    _ => None,
                })
                .find_map(|other| col.bottom.iter().position(|&b| b == other));
            let k = slot.unwrap_or_else(|| {
                free += 1;
                col.bottom.len() + free - 1
            });
            place(i, k, below_y, &mut nodes);
        }
        clusters.insert(*c, rect(x, frame_top, col_w, frame_bottom - frame_top));
        x += col_w + COLUMN_GAP;
    }
    let mut width = (x - COLUMN_GAP + MARGIN).max(MARGIN * 2.0 + slot_w * hosts.len() as f64);

    for (c, i) in bars(ClusterKind::PhysicalNetwork) {
        bar_rows.push((c, i, y));
        y += bar_h + ROW_GAP;
    }
    for (k, &i) in loose.iter().enumerate() {
        let w = text_width(label(i));
        let h = text_height(label(i));
        nodes.insert(i, rect(MARGIN + slot_w * k as f64, y, w, h));
        width = width.max(MARGIN * 2.0 + slot_w * (k + 1) as f64);
    }
    if !loose.is_empty() {
        y += row_h(&mut loose.iter().copied()) + ROW_GAP;
    }
    let bar_w = (width - 2.0 * MARGIN).max(300.0);
    for (c, i, bar_y) in bar_rows {
        let mut r = rect(MARGIN, bar_y, bar_w, bar_h);
        r.wide = true;
        nodes.insert(i, r);
        clusters.insert(c, r);
    }
    Layout {
        nodes,
        clusters,
        width: width.max(bar_w + 2.0 * MARGIN),
        height: y - ROW_GAP + MARGIN + 10.0,
    }
}

fn rect(x: f64, y: f64, w: f64, h: f64) -> Rect {
    Rect {
        x,
        y,
        w,
        h,
        wide: false,
    }
}

/// XML character data and attribute values (XML 1.0 §2.4).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn colours(kind: NodeKind) -> (&'static str, &'static str) {
    match kind {
        NodeKind::OvsBridge => ("#dbeafe", "#1d4ed8"),
        NodeKind::LinuxBridge => ("#dcfce7", "#15803d"),
        NodeKind::Switch => ("#e5e7eb", "#374151"),
        NodeKind::Instance => ("#ffedd5", "#c2410c"),
        NodeKind::Router => ("#fef9c3", "#a16207"),
        NodeKind::ExternalHost => ("#fce7f3", "#be185d"),
        NodeKind::Device => ("#ffffff", "#6b7280"),
    }
}

/// Lines of text starting at `(x, y)`, one `<text>` element each.
fn texts(out: &mut String, lines: &[String], x: f64, y: f64, anchor: &str, extra: &str) {
    for (k, line) in lines.iter().enumerate() {
        let weight = if k == 0 { " font-weight=\"bold\"" } else { "" };
        out.push_str(&format!(
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\"{weight}{extra}>{}</text>\n",
            y + LINE_H * (k as f64 + 1.0) - 3.0,
            escape(line)
        ));
    }
}

pub fn render(graph: &Graph) -> String {
    render_with(graph, false)
}

/// Opens a group that names what it draws, when the picture is for a page
/// (`interactive`): `<g class="box" data-box="3">`. Plain pictures stay as
/// they were.
fn open_group(out: &mut String, interactive: bool, class: &str, attribute: &str, i: usize) {
    if interactive {
        out.push_str(&format!("<g class=\"{class}\" {attribute}=\"{i}\">\n"));
    }
}

fn close_group(out: &mut String, interactive: bool) {
    if interactive {
        out.push_str("</g>\n");
    }
}

/// The picture; `interactive` wraps each box, frame, line and line label in
/// a group carrying its index in the [`Graph`] (`data-box`, `data-cluster`,
/// `data-edge`), so a page can find, mark and explain each object.
pub fn render_with(graph: &Graph, interactive: bool) -> String {
    let layout = layout(graph);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" \
         viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"monospace\" font-size=\"10\">\n",
        w = layout.width,
        h = layout.height
    );
    out.push_str(&format!(
        "<title>{}</title>\n<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n",
        escape(&format!("ovslab lab {}", graph.lab))
    ));
    out.push_str(&format!(
        "<text x=\"{MARGIN}\" y=\"{:.1}\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
        MARGIN + 8.0,
        escape(&format!("ovslab lab {}", graph.lab))
    ));

    // Node frames (bars are drawn as their switch box).
    for (&c, r) in &layout.clusters {
        let cluster = &graph.clusters[c];
        if cluster.kind != ClusterKind::Node {
            continue;
        }
        open_group(&mut out, interactive, "frame", "data-cluster", c);
        out.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"10\" \
             fill=\"#f8fafc\" stroke=\"#64748b\" stroke-dasharray=\"6 3\"/>\n",
            r.x, r.y, r.w, r.h
        ));
        texts(
            &mut out,
            &cluster.label(),
            r.x + 10.0,
            r.y + 4.0,
            "start",
            "",
        );
        close_group(&mut out, interactive);
    }

    // Lines under the boxes, labels on top of everything.
    let mut pairs: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for e in &graph.edges {
        *pairs
            .entry((e.from.min(e.to), e.from.max(e.to)))
            .or_default() += 1;
    }
    let mut seen: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut labels = String::new();
    for (index, e) in graph.edges.iter().enumerate() {
        let (Some(a), Some(b)) = (layout.nodes.get(&e.from), layout.nodes.get(&e.to)) else {
            continue;
        };
        let key = (e.from.min(e.to), e.from.max(e.to));
        let n = pairs.get(&key).copied().unwrap_or(1);
        let k = seen.entry(key).or_default();
        let offset = (*k as f64 - (n as f64 - 1.0) / 2.0) * 18.0;
        let left = n > 1 && *k == 0;
        *k += 1;
        let (upper, lower) = if a.cy() <= b.cy() { (a, b) } else { (b, a) };
        let end_x = |r: &Rect, other: &Rect| {
            if r.wide {
                (other.cx() + offset).clamp(r.x + 12.0, r.x + r.w - 12.0)
            } else {
                r.cx() + offset
            }
        };
        let (x1, x2) = if upper.wide && !lower.wide {
            let x2 = end_x(lower, upper);
            (x2.clamp(upper.x + 12.0, upper.x + upper.w - 12.0), x2)
        } else if lower.wide && !upper.wide {
            let x1 = end_x(upper, lower);
            (x1, x1.clamp(lower.x + 12.0, lower.x + lower.w - 12.0))
        } else {
            (end_x(upper, lower), end_x(lower, upper))
        };
        let (y1, y2) = (upper.y + upper.h, lower.y);
        let id = if interactive {
            format!(" class=\"edge\" data-edge=\"{index}\"")
        } else {
            String::new()
        };
        out.push_str(&format!(
            "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" \
             stroke=\"#334155\" stroke-width=\"1.5\"{id}/>\n"
        ));
        let (mx, my) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        let top = my - e.label.len() as f64 * LINE_H / 2.0;
        let (lx, anchor) = if left {
            (mx - 5.0, "end")
        } else {
            (mx + 5.0, "start")
        };
        open_group(&mut labels, interactive, "edge-label", "data-edge", index);
        texts(
            &mut labels,
            &e.label,
            lx,
            top,
            anchor,
            " fill=\"#0f172a\" stroke=\"#ffffff\" stroke-width=\"3\" paint-order=\"stroke\"",
        );
        close_group(&mut labels, interactive);
    }

    for (&i, r) in &layout.nodes {
        let node = &graph.nodes[i];
        let (fill, stroke) = colours(node.kind);
        open_group(&mut out, interactive, "box", "data-box", i);
        let rx = match node.kind {
            NodeKind::Instance | NodeKind::Router | NodeKind::ExternalHost => 10,
            _ => 3,
        };
        out.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"{rx}\" \
             fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.5\"/>\n",
            r.x, r.y, r.w, r.h
        ));
        let mut lines = node.label.clone();
        if node.kind == NodeKind::Switch
            && let Some(c) = node.cluster
        {
            lines = vec![
                graph.clusters[c].object.clone(),
                format!("Linux bridge in {}", graph.clusters[c].namespace),
            ];
        }
        if r.wide {
            texts(&mut out, &lines, r.cx(), r.y + PAD - 3.0, "middle", "");
        } else {
            texts(&mut out, &lines, r.x + PAD, r.y + PAD - 3.0, "start", "");
        }
        close_group(&mut out, interactive);
    }
    out.push_str(&labels);
    out.push_str("</svg>\n");
    out
}
