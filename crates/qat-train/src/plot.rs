//! Charts as PNG: the end-of-run chart (training loss, validation loss and learning rate against
//! tokens, from `metrics.jsonl`) and the sweep chart (the metric against each axis).
//!
//! Text is rendered with a font compiled into the binary (Ubuntu Light from
//! `epaint_default_fonts`), so drawing needs no system font stack. Files are drawn under a
//! temporary name and renamed into place.

use std::path::Path;
use std::sync::Once;

use crate::TrainError;
use plotters::coord::Shift;
use plotters::prelude::*;

const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
            .unwrap_or_else(|_| panic!("the embedded font is a valid TTF"));
    });
}

/// Draws a `width`×`height` PNG at `path` with `draw`, atomically.
fn draw_png(path: &Path, (width, height): (u32, u32), draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<(), String>) -> Result<(), TrainError> {
    register_font();
    crate::write_atomically(path, |tmp| {
        let root = BitMapBackend::new(tmp, (width, height)).into_drawing_area();
        let drawn = root.fill(&WHITE).map_err(|e| e.to_string()).and_then(|()| draw(&root)).and_then(|()| root.present().map_err(|e| e.to_string()));
        drawn.map_err(|e| TrainError::Run(format!("drawing {}: {e}", path.display())))
    })
}

/// `(lo, hi)` of the finite values, padded by 5%, or `(0, 1)` when there are none.
fn y_range(ys: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = ys.filter(|y| y.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 1e-3).max(1e-12);
    (lo - pad)..(hi + pad)
}

/// Token counts as axis labels: 51200 → "51K", 2.5e6 → "2.5M".
fn tokens_label(t: &f64) -> String {
    match t.abs() {
        a if a >= 1e6 => format!("{}M", trim_zeros(t / 1e6)),
        a if a >= 1e3 => format!("{}K", trim_zeros(t / 1e3)),
        _ => format!("{t:.0}"),
    }
}

fn trim_zeros(x: f64) -> String {
    let s = format!("{x:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// Width of the legend column right of the loss chart.
const LEGEND_WIDTH: u32 = 290;

/// What `training.png` draws, read from `metrics.jsonl`.
#[derive(Default)]
struct RunCurves {
    /// (tokens, value) per train step.
    ce: Vec<(f64, f64)>,
    kd: Vec<(f64, f64)>,
    lr: Vec<(f64, f64)>,
    /// Validation CE over all sources, and per source (name → points), at each evaluation.
    val: Vec<(f64, f64)>,
    val_by_source: std::collections::BTreeMap<String, Vec<(f64, f64)>>,
    /// Validation CE of the unquantized model and of the quantized one before training.
    fp_val: Option<f64>,
    start_val: Option<f64>,
}

fn read_curves(text: &str) -> RunCurves {
    use crate::metrics::Record;
    let mut c = RunCurves::default();
    for rec in crate::metrics::read(text) {
        match rec {
            Record::Train(t) => {
                c.ce.push((t.tokens as f64, t.ce));
                if let Some(kd) = t.kd {
                    c.kd.push((t.tokens as f64, kd));
                }
                c.lr.push((t.tokens as f64, t.lr));
            }
            Record::EvalFp(e) => c.fp_val = e.eval.val_loss,
            Record::Eval(e) => {
                let tokens = e.tokens as f64;
                if let Some(x) = e.eval.val_loss {
                    if e.step == 0 {
                        c.start_val = Some(x);
                    }
                    c.val.push((tokens, x));
                }
                for (name, x) in &e.eval.val_loss_by_source {
                    c.val_by_source.entry(name.clone()).or_default().push((tokens, *x));
                }
            }
            Record::Skipped { .. } => {}
        }
    }
    c
}

/// The chart's title: how much of the validation gap between the quantized start and the
/// unquantized model training closed, `(start − now) / (start − fp)`.
fn gap_title(run: &str, c: &RunCurves) -> String {
    match (c.fp_val, c.start_val, c.val.last().map(|p| p.1)) {
        (Some(fp), Some(start), Some(now)) if start > fp => format!(
            "{run}: training closed {:.1}% of the validation gap (CE: full precision {fp:.3}, quantized start {start:.3}, now {now:.3})",
            100.0 * (start - now) / (start - fp)
        ),
        (Some(fp), Some(start), Some(now)) => format!("{run}: validation CE full precision {fp:.3}, quantized start {start:.3}, now {now:.3}"),
        _ => format!("{run}: training loss"),
    }
}

/// Draws `run_dir/training.png` from `run_dir/metrics.jsonl`: train CE and validation CE (all
/// sources, and each source) against tokens with the full-precision and starting validation CE
/// as horizontal lines, the gap closed in the title; the distillation loss and the learning
/// rate in their own panels.
pub fn plot_run(run_dir: &Path) -> Result<(), TrainError> {
    let metrics = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).map_err(|e| TrainError::file(&metrics, e))?;
    let c = read_curves(&text);
    if c.ce.is_empty() {
        return Ok(());
    }
    let run = run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let has_kd = !c.kd.is_empty();
    let height = if has_kd { 900 } else { 700 };
    draw_png(&run_dir.join("training.png"), (1000, height), |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let root = root.titled(&gap_title(&run, &c), (FONT, 17)).map_err(|x| e(&x))?;
        let (top, rest) = root.split_vertically(440);
        let (kd_area, lr_area) = if has_kd { rest.split_vertically(rest.dim_in_pixel().1 / 2) } else { rest.split_vertically(0) };
        let max_t = c.ce.last().map_or(1.0, |p| p.0).max(1.0);
        let references: Vec<(f64, &str, RGBColor)> =
            [(c.fp_val, "full precision (validation)", BLACK), (c.start_val, "quantized at step 0 (validation)", RGBColor(200, 0, 0))]
                .into_iter()
                .filter_map(|(v, label, color)| Some((v?, label, color)))
                .collect();
        let ys = c.ce.iter().chain(&c.val).chain(c.val_by_source.values().flatten()).map(|p| p.1).chain(references.iter().map(|r| r.0));
        let mut chart = ChartBuilder::on(&top)
            .caption("cross-entropy (nats/token)", (FONT, 16))
            .margin(10)
            .margin_right(LEGEND_WIDTH)
            .x_label_area_size(30)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..max_t, y_range(ys))
            .map_err(|x| e(&x))?;
        chart.configure_mesh().x_desc("training tokens").x_label_formatter(&tokens_label).draw().map_err(|x| e(&x))?;
        // Legend entries (label, line style), drawn in the column right of the plot where they
        // hide no curve.
        let mut legend: Vec<(String, ShapeStyle)> = Vec::new();
        let train_style = RGBColor(120, 150, 220).stroke_width(1);
        chart.draw_series(LineSeries::new(c.ce.iter().copied().filter(|p| p.1.is_finite()), train_style)).map_err(|x| e(&x))?;
        legend.push(("train CE (per step)".into(), train_style));
        for (value, label, color) in &references {
            let style = color.stroke_width(2);
            chart.draw_series(DashedLineSeries::new([(0.0, *value), (max_t, *value)], 8, 6, style)).map_err(|x| e(&x))?;
            legend.push((format!("{label}: {value:.3}"), style));
        }
        // With one source its curve is the all-sources curve.
        let per_source = if c.val_by_source.len() > 1 { c.val_by_source.iter().collect() } else { Vec::new() };
        for (k, (name, points)) in per_source.into_iter().enumerate() {
            let style = Palette99::pick(k + 2).stroke_width(1);
            chart.draw_series(LineSeries::new(points.iter().copied(), style).point_size(3)).map_err(|x| e(&x))?;
            legend.push((format!("validation CE: {name}"), style));
        }
        let val_style = RGBColor(200, 0, 0).stroke_width(3);
        chart.draw_series(LineSeries::new(c.val.iter().copied(), val_style).point_size(5)).map_err(|x| e(&x))?;
        legend.push(("validation CE: all sources".into(), val_style));
        let x0 = top.dim_in_pixel().0 as i32 - LEGEND_WIDTH as i32 + 5;
        for (i, (label, style)) in legend.iter().enumerate() {
            let y = 45 + 20 * i as i32;
            top.draw(&PathElement::new(vec![(x0, y), (x0 + 24, y)], *style)).map_err(|x| e(&x))?;
            top.draw(&Text::new(label.as_str(), (x0 + 30, y - 7), (FONT, 13))).map_err(|x| e(&x))?;
        }
        if has_kd {
            let finite: Vec<(f64, f64)> = c.kd.iter().copied().filter(|p| p.1.is_finite()).collect();
            step_panel(&kd_area, "distillation loss (KD term, per step)", max_t, y_range(finite.iter().map(|p| p.1)), &finite, MAGENTA, |v| format!("{v:.2}"))?;
        }
        let max_lr = c.lr.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-12);
        step_panel(&lr_area, "learning rate (weights)", max_t, 0.0..max_lr * 1.05, &c.lr, GREEN, |v| format!("{v:.1e}"))?;
        Ok(())
    })
}

/// A per-step curve against training tokens in its own panel, aligned with the loss chart above
/// (the same right margin for the legend column).
fn step_panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    caption: &str,
    max_t: f64,
    y: std::ops::Range<f64>,
    points: &[(f64, f64)],
    color: RGBColor,
    y_label: impl Fn(&f64) -> String,
) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 15))
        .margin(10)
        .margin_right(LEGEND_WIDTH)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..max_t, y)
        .map_err(|x| e(&x))?;
    chart.configure_mesh().x_desc("training tokens").x_label_formatter(&tokens_label).y_label_formatter(&y_label).draw().map_err(|x| e(&x))?;
    chart.draw_series(LineSeries::new(points.iter().copied(), color)).map_err(|x| e(&x))?;
    Ok(())
}

/// A sweep value as a short axis label: TOML inline tables and strings without their
/// punctuation (`{ bits = 2, scheme = "seq" }` → `bits=2, scheme=seq`).
fn compact(value: &str) -> String {
    value.trim_start_matches('{').trim_end_matches('}').trim().replace(" = ", "=").replace('"', "")
}

/// One panel per sweep axis: `metric` of every finished run against that axis's value (the
/// values in the order the sweep lists them, as categories), under `title`, with the unquantized
/// model's value as a dashed line when every run shares it.
pub fn plot_sweep(
    path: &Path,
    title: &str,
    metric: &str,
    reference: Option<f64>,
    axes: &[(String, Vec<String>)],
    runs: &[(Vec<String>, f64)],
) -> Result<(), TrainError> {
    if runs.is_empty() || axes.is_empty() {
        return Ok(());
    }
    // Wide enough for each axis's value labels side by side.
    let widths: Vec<u32> = axes.iter().map(|(_, values)| (values.iter().map(|v| compact(v).len() as u32 * 7 + 20).sum::<u32>() + 80).max(340)).collect();
    draw_png(path, ((widths.iter().sum::<u32>() + 40).max(700), 420), |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let root = root.titled(title, (FONT, 16)).map_err(|x| e(&x))?;
        let (root, footer) = root.split_vertically(root.dim_in_pixel().1 - 22);
        let y = y_range(runs.iter().map(|r| r.1).chain(reference));
        let breaks: Vec<u32> = widths
            .iter()
            .scan(0, |x, w| {
                *x += w;
                Some(*x)
            })
            .collect();
        for (a, area) in root.split_by_breakpoints(&breaks[..breaks.len() - 1], &[] as &[u32]).iter().enumerate() {
            let (key, values) = &axes[a];
            let n = values.len().max(1);
            let mut chart = ChartBuilder::on(area)
                .caption(key, (FONT, 15))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(if a == 0 { 60 } else { 40 })
                .build_cartesian_2d(-0.5..(n as f64 - 0.5), y.clone())
                .map_err(|x| e(&x))?;
            let label = |x: &f64| {
                let i = x.round();
                if (x - i).abs() < 1e-9 && i >= 0.0 { values.get(i as usize).map(|v| compact(v)).unwrap_or_default() } else { String::new() }
            };
            chart.configure_mesh().x_labels(n).x_label_formatter(&label).y_desc(if a == 0 { metric } else { "" }).disable_x_mesh().draw().map_err(|x| e(&x))?;
            if let Some(r) = reference {
                chart.draw_series(DashedLineSeries::new([(-0.5, r), (n as f64 - 0.5, r)], 8, 6, BLACK.stroke_width(2))).map_err(|x| e(&x))?;
            }
            let points = runs.iter().filter(|r| r.1.is_finite()).filter_map(|(vals, m)| Some((values.iter().position(|v| v == &vals[a])? as f64, *m)));
            chart.draw_series(points.map(|p| Circle::new(p, 4, BLUE.filled()))).map_err(|x| e(&x))?;
        }
        let note = match reference {
            Some(r) => format!("each dot: one run's final {metric}; dashed: the unquantized model ({r:.4})"),
            None => format!("each dot: one run's final {metric}"),
        };
        footer.draw(&Text::new(note, (12, 2), (FONT, 13))).map_err(|x| e(&x))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"{"type":"eval_fp","step":0,"tokens":0,"eval":{"val_loss":2.0,"val_loss/a":1.5,"val_loss/b":2.5}}
{"type":"eval","step":0,"tokens":0,"eval":{"val_loss":4.0,"val_loss/a":3.5,"val_loss/b":4.5}}
{"type":"train","step":1,"tokens":1000,"loss":5.5,"ce":4.5,"kd":1.0,"lr":0.001,"grad_norm":1.0,"tokens_per_second":10.0,"step_seconds":100.0,"category_tokens":{"text":1000}}
{"type":"train","step":2,"tokens":2000,"loss":4.0,"ce":3.5,"kd":0.5,"lr":0.002,"grad_norm":1.0,"tokens_per_second":10.0,"step_seconds":100.0,"category_tokens":{"text":2000}}
{"type":"eval","step":2,"tokens":2000,"eval":{"val_loss":3.0,"val_loss/a":2.5,"val_loss/b":3.5}}
"#;

    #[test]
    fn run_chart_reads_ce_kd_sources_and_references() {
        let c = read_curves(METRICS);
        assert_eq!(c.ce, [(1000.0, 4.5), (2000.0, 3.5)], "CE apart from KD, not the summed loss");
        assert_eq!(c.kd, [(1000.0, 1.0), (2000.0, 0.5)]);
        assert_eq!((c.fp_val, c.start_val), (Some(2.0), Some(4.0)));
        assert_eq!(c.val_by_source["b"], [(0.0, 4.5), (2000.0, 3.5)], "per source, without the unquantized model's values");
        // (4 − 3) / (4 − 2): half the gap.
        assert!(gap_title("r", &c).starts_with("r: training closed 50.0% of the validation gap"), "{}", gap_title("r", &c));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("metrics.jsonl"), METRICS).unwrap();
        plot_run(dir.path()).unwrap();
        let png = std::fs::read(dir.path().join("training.png")).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    }

    #[test]
    fn labels_are_short() {
        assert_eq!([51200.0, 2.5e6, 999.0].map(|t| tokens_label(&t)), ["51.2K", "2.5M", "999"]);
        assert_eq!(tokens_label(&40000.0), "40K");
        assert_eq!(compact(r#"{ bits = 2, scheme = "seq" }"#), "bits=2, scheme=seq");
    }
}
