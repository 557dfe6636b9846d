//! Charts as PNG: the end-of-run chart (training loss, validation loss and learning rate against
//! tokens, from `metrics.jsonl`) and the sweep chart (the metric against each axis).
//!
//! Text is rendered with a font compiled into the binary (Ubuntu Light from
//! `epaint_default_fonts`), so drawing needs no system font stack. Files are drawn under a
//! temporary name and renamed into place.

use std::path::Path;
use std::sync::Once;

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
fn draw_png(path: &Path, (width, height): (u32, u32), draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<(), String>) -> Result<(), String> {
    register_font();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.png", std::process::id()));
    let result = (|| {
        let root = BitMapBackend::new(&tmp, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(&root)?;
        root.present().map_err(|e| e.to_string())
    })();
    match result {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(format!("drawing {}: {e}", path.display()))
        }
    }
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

/// Draws `run_dir/training.png` from `run_dir/metrics.jsonl`.
pub fn plot_run(run_dir: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).map_err(|e| e.to_string())?;
    let (mut loss, mut lr, mut val) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let tokens = v["tokens"].as_f64().unwrap_or(0.0);
        match v["type"].as_str() {
            Some("train") => {
                loss.push((tokens, v["loss"].as_f64().unwrap_or(f64::NAN)));
                lr.push((tokens, v["lr"].as_f64().unwrap_or(0.0)));
            }
            Some("eval") => {
                if let Some(x) = v["eval"]["val_loss"].as_f64() {
                    val.push((tokens, x));
                }
            }
            _ => {}
        }
    }
    if loss.is_empty() {
        return Ok(());
    }
    draw_png(&run_dir.join("training.png"), (900, 600), |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let (top, bottom) = root.split_vertically(400);
        let max_t = loss.last().map_or(1.0, |p| p.0).max(1.0);
        let mut chart = ChartBuilder::on(&top)
            .caption("loss", (FONT, 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..max_t, y_range(loss.iter().chain(&val).map(|p| p.1)))
            .map_err(|x| e(&x))?;
        chart.configure_mesh().x_desc("tokens").draw().map_err(|x| e(&x))?;
        chart
            .draw_series(LineSeries::new(loss.iter().copied().filter(|p| p.1.is_finite()), &BLUE))
            .map_err(|x| e(&x))?
            .label("train loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(PointSeries::of_element(val.iter().copied(), 4, &RED, &|c, s, st| Circle::new(c, s, st.filled())))
            .map_err(|x| e(&x))?
            .label("validation loss (CE)")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, RED.filled()));
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(|x| e(&x))?;
        let max_lr = lr.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-12);
        let mut chart = ChartBuilder::on(&bottom)
            .caption("learning rate", (FONT, 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..max_t, 0.0..max_lr * 1.05)
            .map_err(|x| e(&x))?;
        chart.configure_mesh().x_desc("tokens").draw().map_err(|x| e(&x))?;
        chart.draw_series(LineSeries::new(lr.iter().copied(), &GREEN)).map_err(|x| e(&x))?;
        Ok(())
    })
}

/// One panel per sweep axis: `metric` of every finished run against that axis's value (the
/// values in the order the sweep lists them, as categories).
pub fn plot_sweep(path: &Path, metric: &str, axes: &[(String, Vec<String>)], runs: &[(Vec<String>, f64)]) -> Result<(), String> {
    if runs.is_empty() || axes.is_empty() {
        return Ok(());
    }
    let panel = 320u32;
    draw_png(path, (panel * axes.len() as u32 + 40, 360), |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let y = y_range(runs.iter().map(|r| r.1));
        for (a, area) in root.split_evenly((1, axes.len())).iter().enumerate() {
            let (key, values) = &axes[a];
            let n = values.len().max(1);
            let mut chart = ChartBuilder::on(area)
                .caption(key, (FONT, 16))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(if a == 0 { 60 } else { 40 })
                .build_cartesian_2d(-0.5..(n as f64 - 0.5), y.clone())
                .map_err(|x| e(&x))?;
            let label = |x: &f64| {
                let i = x.round();
                if (x - i).abs() < 1e-9 && i >= 0.0 { values.get(i as usize).cloned().unwrap_or_default() } else { String::new() }
            };
            chart.configure_mesh().x_labels(n).x_label_formatter(&label).y_desc(if a == 0 { metric } else { "" }).disable_x_mesh().draw().map_err(|x| e(&x))?;
            let points = runs.iter().filter(|r| r.1.is_finite()).filter_map(|(vals, m)| Some((values.iter().position(|v| v == &vals[a])? as f64, *m)));
            chart.draw_series(points.map(|p| Circle::new(p, 4, BLUE.filled()))).map_err(|x| e(&x))?;
        }
        Ok(())
    })
}
