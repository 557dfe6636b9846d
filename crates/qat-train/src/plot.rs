//! The end-of-run chart: training loss, learning rate and validation loss against tokens, drawn
//! from `metrics.jsonl` as an SVG (text is SVG text, so no fonts are needed to draw it).

use std::path::Path;

use plotters::prelude::*;

/// Draws `run_dir/training.svg` from `run_dir/metrics.jsonl`.
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
    let path = run_dir.join("training.svg");
    let root = SVGBackend::new(&path, (900, 600)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(400);
    let max_t = loss.last().map_or(1.0, |p| p.0).max(1.0);
    let ys = loss.iter().chain(&val).map(|p| p.1).filter(|y| y.is_finite());
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    let mut chart = ChartBuilder::on(&top)
        .caption("loss", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max_t, (lo * 0.95)..(hi * 1.05))
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc("tokens").draw().map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(loss.iter().copied().filter(|p| p.1.is_finite()), &BLUE))
        .map_err(|e| err(&e))?
        .label("train loss")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(PointSeries::of_element(val.iter().copied(), 4, &RED, &|c, s, st| Circle::new(c, s, st.filled())))
        .map_err(|e| err(&e))?
        .label("validation loss (CE)")
        .legend(|(x, y)| Circle::new((x + 10, y), 4, RED.filled()));
    chart.configure_series_labels().border_style(BLACK).draw().map_err(|e| err(&e))?;
    let max_lr = lr.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-12);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("learning rate", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max_t, 0.0..max_lr * 1.05)
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc("tokens").draw().map_err(|e| err(&e))?;
    chart.draw_series(LineSeries::new(lr, &GREEN)).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
