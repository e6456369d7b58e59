//! Charts as plain SVG text: grouped bars with min–max whiskers, and
//! small-multiple line panels (throughput over time per link).

use std::fmt::Write;

use crate::stats::Summary;

/// Colours of the series, in order.
pub(crate) const PALETTE: &[&str] = &[
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#e15759", "#76b7b2", "#edc948", "#9c755f",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG document's opening: size, white background, centred title.
fn header(w: f64, h: f64, title: &str) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="16">{}</text>
"#,
        w / 2.0,
        esc(title)
    );
    o
}

/// A "nice" upper bound and tick step for an axis reaching `max`.
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn fmt_tick(v: f64) -> String {
    if v == v.round() {
        format!("{v:.0}")
    } else if (v * 10.0) == (v * 10.0).round() {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One group of bars (e.g. "download, 1 flow"), one bar per series.
pub(crate) struct Group {
    pub(crate) label: String,
    pub(crate) bars: Vec<Option<Summary>>,
}

/// Grouped bars: the bar is the median, the whisker min–max.
pub(crate) fn bar_chart(title: &str, unit: &str, series: &[String], groups: &[Group]) -> String {
    let (w, h) = (900.0, 420.0);
    let (left, right, top, bottom) = (70.0, 20.0, 50.0, 90.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let max = groups
        .iter()
        .flat_map(|g| g.bars.iter().flatten())
        .map(|s| s.max)
        .fold(0.0, f64::max);
    let (ymax, step) = nice_axis(max);
    let y = |v: f64| top + plot_h - v / ymax * plot_h;
    let mut o = header(w, h, title);
    let mut v = 0.0;
    while v <= ymax + 1e-9 {
        let yy = y(v);
        let _ = writeln!(
            o,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            w - right,
            left - 6.0,
            yy + 4.0,
            fmt_tick(v)
        );
        v += step;
    }
    let _ = writeln!(
        o,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        esc(unit)
    );
    let gw = plot_w / groups.len().max(1) as f64;
    let bw = (gw * 0.8) / series.len().max(1) as f64;
    for (gi, g) in groups.iter().enumerate() {
        let gx = left + gi as f64 * gw + gw * 0.1;
        for (si, bar) in g.bars.iter().enumerate() {
            let x = gx + si as f64 * bw;
            let color = PALETTE[si % PALETTE.len()];
            match bar {
                Some(s) => {
                    let _ = writeln!(
                        o,
                        r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{}: {}</title></rect>"#,
                        y(s.median),
                        bw * 0.9,
                        (y(0.0) - y(s.median)).max(0.0),
                        esc(&series[si]),
                        s.show(2)
                    );
                    if s.runs.len() > 1 {
                        let cx = x + bw * 0.45;
                        let _ = writeln!(
                            o,
                            r##"<line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke="#333"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
                            y(s.min),
                            y(s.max),
                            cx - 4.0,
                            y(s.min),
                            cx + 4.0,
                            y(s.min),
                            cx - 4.0,
                            y(s.max),
                            cx + 4.0,
                            y(s.max)
                        );
                    }
                }
                None => {
                    let _ = writeln!(
                        o,
                        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#999">n/a</text>"##,
                        x + bw * 0.45,
                        y(0.0) - 4.0
                    );
                }
            }
        }
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + gw * 0.4,
            top + plot_h + 18.0,
            esc(&g.label)
        );
    }
    let _ = writeln!(
        o,
        r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        y(0.0),
        w - right,
        y(0.0)
    );
    legend(&mut o, series, left, h - 40.0, w - left - right);
    o.push_str("</svg>\n");
    o
}

fn legend(o: &mut String, series: &[String], x0: f64, y0: f64, width: f64) {
    let per_row = 3usize;
    let col = width / per_row as f64;
    for (i, s) in series.iter().enumerate() {
        let x = x0 + (i % per_row) as f64 * col;
        let y = y0 + (i / per_row) as f64 * 16.0;
        let _ = writeln!(
            o,
            r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{y:.1}">{}</text>"#,
            y - 9.0,
            PALETTE[i % PALETTE.len()],
            x + 14.0,
            esc(s)
        );
    }
}

/// One line of a panel.
pub(crate) struct Line {
    pub(crate) name: String,
    pub(crate) color: &'static str,
    pub(crate) points: Vec<(f64, f64)>,
}

/// One small multiple: lines over time and vertical markers.
pub(crate) struct Panel {
    pub(crate) title: String,
    pub(crate) lines: Vec<Line>,
    pub(crate) markers: Vec<(f64, String)>,
}

/// Panels stacked vertically, sharing the time and value axes.
pub(crate) fn line_panels(title: &str, unit: &str, panels: &[Panel]) -> String {
    let w = 900.0;
    let ph = 150.0;
    let (left, right, top) = (70.0, 20.0, 50.0);
    let gap = 40.0;
    let h = top + panels.len() as f64 * (ph + gap) + 30.0;
    let tmax = panels
        .iter()
        .flat_map(|p| p.lines.iter().flat_map(|l| l.points.iter().map(|q| q.0)))
        .fold(0.0, f64::max);
    let vmax = panels
        .iter()
        .flat_map(|p| p.lines.iter().flat_map(|l| l.points.iter().map(|q| q.1)))
        .fold(0.0, f64::max);
    let (tmax, tstep) = nice_axis(tmax);
    let (vmax, vstep) = nice_axis(vmax);
    let plot_w = w - left - right;
    let mut o = header(w, h, title);
    for (pi, p) in panels.iter().enumerate() {
        let y0 = top + pi as f64 * (ph + gap);
        let x = |t: f64| left + t / tmax * plot_w;
        let y = |v: f64| y0 + ph - v / vmax * ph;
        let _ = writeln!(
            o,
            r#"<text x="{left}" y="{:.1}" font-weight="bold">{}</text>"#,
            y0 - 6.0,
            esc(&p.title)
        );
        let mut v = 0.0;
        while v <= vmax + 1e-9 {
            let _ = writeln!(
                o,
                r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                y(v),
                w - right,
                y(v),
                left - 6.0,
                y(v) + 4.0,
                fmt_tick(v)
            );
            v += vstep;
        }
        let mut t = 0.0;
        while t <= tmax + 1e-9 {
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x(t),
                y0 + ph + 14.0,
                fmt_tick(t)
            );
            t += tstep;
        }
        for (t, label) in &p.markers {
            let _ = writeln!(
                o,
                r##"<line x1="{:.1}" y1="{y0:.1}" x2="{:.1}" y2="{:.1}" stroke="#c00" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" fill="#c00">{}</text>"##,
                x(*t),
                x(*t),
                y0 + ph,
                x(*t) + 3.0,
                y0 + 12.0,
                esc(label)
            );
        }
        for (li, l) in p.lines.iter().enumerate() {
            let pts: Vec<String> = l
                .points
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                .collect();
            let _ = writeln!(
                o,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
                l.color,
                pts.join(" ")
            );
            let _ = writeln!(
                o,
                r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                w - right - 200.0 + li as f64 * 100.0,
                y0 - 16.0,
                l.color,
                w - right - 186.0 + li as f64 * 100.0,
                y0 - 7.0,
                esc(&l.name)
            );
        }
        let _ = writeln!(
            o,
            r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
            y0 + ph,
            w - right,
            y0 + ph
        );
    }
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{:.1}" text-anchor="middle">seconds ({})</text>"#,
        left + plot_w / 2.0,
        h - 8.0,
        esc(unit)
    );
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        assert_eq!(nice_axis(38.2), (40.0, 10.0));
        assert_eq!(nice_axis(0.9), (1.0, 0.2));
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
    }

    #[test]
    fn charts_are_well_formed_svg_with_every_series() {
        let s = bar_chart(
            "t <1>",
            "Mbit/s",
            &["a".into(), "b".into()],
            &[Group {
                label: "g".into(),
                bars: vec![Summary::of(&[1.0, 2.0, 3.0]), None],
            }],
        );
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert!(s.contains("t &lt;1&gt;") && s.contains("n/a") && s.contains(">b<"));
        let l = line_panels(
            "x",
            "Mbit/s",
            &[Panel {
                title: "p".into(),
                lines: vec![Line {
                    name: "dsl".into(),
                    color: PALETTE[0],
                    points: vec![(0.0, 1.0), (1.0, 2.0)],
                }],
                markers: vec![(0.5, "cut".into())],
            }],
        );
        assert!(l.contains("<polyline") && l.contains("cut"));
    }
}
