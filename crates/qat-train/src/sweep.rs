//! `qat sweep SWEEP.toml`: many short runs of one base config over a grid or a random sample
//! of config values, each in its own run directory; then a ranked table and a plot of the
//! metric against each axis. Runs go one after another, or, with several devices, one per device
//! at a time (each device takes the next point as soon as its run ends).
//!
//! A finished run (its `summary.json` exists) is skipped when the sweep is started again; an
//! interrupted one resumes from its last checkpoint; a failed one is recorded (`failed.txt` in
//! its run directory) and the sweep goes on. On a cluster, [`crate::slurm`] submits the points
//! as a job array whose tasks each run [`run_task`]; [`collect`] builds the same results from
//! the run directories.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::config::{RunConfig, apply_override};
use crate::train::{RunOptions, RunSummary, save_final, train};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepMode {
    Grid,
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    Min,
    Max,
}

/// One swept config key: explicit values, or (random mode) a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axis {
    pub key: String,
    #[serde(default)]
    pub values: Vec<toml::Value>,
    /// Range for random sampling (instead of values).
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// Sample the range log-uniformly.
    #[serde(default)]
    pub log: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// The base run config (relative to the sweep file).
    pub base: PathBuf,
    /// Directory holding one run directory per point, and the results.
    pub output: PathBuf,
    /// A key of the final evaluation (e.g. `val_loss`, `ppl/wikitext2_test`, `hellaswag/acc_norm`).
    pub metric: String,
    #[serde(default = "min")]
    pub goal: Goal,
    #[serde(default = "grid")]
    pub mode: SweepMode,
    /// Number of points in random mode.
    #[serde(default)]
    pub samples: usize,
    #[serde(default)]
    pub seed: u64,
    /// Overrides applied to every run.
    #[serde(default)]
    pub set: Vec<String>,
    /// Devices to run on in parallel (`model.device` values, e.g. `["vulkan:0", "vulkan:1"]`);
    /// empty: the base config's device, one run at a time.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Job settings for `qat sweep --launcher slurm`.
    #[serde(default)]
    pub slurm: crate::slurm::SlurmOptions,
    pub axes: Vec<Axis>,
}

fn min() -> Goal {
    Goal::Min
}
fn grid() -> SweepMode {
    SweepMode::Grid
}

fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

impl SweepConfig {
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::file(path, e))?;
        let mut c: SweepConfig = toml::from_str(&text).map_err(|e| TrainError::file(path, e))?;
        let base = crate::config::directory_of(path).map_err(|e| TrainError::file(path, e))?;
        for p in [&mut c.base, &mut c.output] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if c.axes.is_empty() {
            return Err(TrainError::Run(format!("{}: `axes` is empty", path.display())));
        }
        for (i, a) in c.axes.iter().enumerate() {
            let ranged = a.min.is_some() && a.max.is_some();
            match c.mode {
                SweepMode::Grid if a.values.is_empty() => {
                    return Err(TrainError::Run(format!("{}: axes[{i}] ({}) needs `values` in grid mode", path.display(), a.key)));
                }
                SweepMode::Random if a.values.is_empty() && !ranged => {
                    return Err(TrainError::Run(format!("{}: axes[{i}] ({}) needs `values` or `min` and `max`", path.display(), a.key)));
                }
                _ => {}
            }
            if a.log && a.min.is_some_and(|m| m <= 0.0) {
                return Err(TrainError::Run(format!("{}: axes[{i}] ({}): a log range needs min > 0", path.display(), a.key)));
            }
        }
        if c.mode == SweepMode::Random && c.samples == 0 {
            return Err(TrainError::Run(format!("{}: random mode needs `samples` > 0", path.display())));
        }
        Ok(c)
    }

    /// Every point: one `key=value` override per axis.
    pub fn points(&self) -> Vec<Vec<String>> {
        match self.mode {
            SweepMode::Grid => {
                let mut pts = vec![Vec::new()];
                for a in &self.axes {
                    pts = pts
                        .into_iter()
                        .flat_map(|p| a.values.iter().map(move |v| [p.clone(), vec![format!("{}={}", a.key, value_text(v))]].concat()))
                        .collect();
                }
                pts
            }
            SweepMode::Random => {
                let mut rng = StdRng::seed_from_u64(self.seed);
                (0..self.samples)
                    .map(|_| {
                        self.axes
                            .iter()
                            .map(|a| {
                                let v = if !a.values.is_empty() {
                                    value_text(&a.values[rng.random_range(0..a.values.len())])
                                } else {
                                    let (lo, hi) = (a.min.unwrap(), a.max.unwrap());
                                    let u: f64 = rng.random();
                                    let x = if a.log { (lo.ln() + u * (hi.ln() - lo.ln())).exp() } else { lo + u * (hi - lo) };
                                    format!("{x:.4e}")
                                };
                                format!("{}={v}", a.key)
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }
}

/// One row of the results table.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub run: String,
    pub assignments: Vec<String>,
    pub status: String,
    pub metric: Option<f64>,
    /// The metric of the unquantized starting model (the run's `fp_eval`), where evaluated.
    pub full_precision: Option<f64>,
    pub tokens: u64,
    pub wall_seconds: f64,
}

impl SweepRow {
    /// A point without a result (failed, interrupted, not finished).
    fn without_result(run: String, point: &[String], status: String) -> Self {
        SweepRow { run, assignments: point.to_vec(), status, metric: None, full_precision: None, tokens: 0, wall_seconds: 0.0 }
    }
}

/// Runs the sweep and writes `results.csv`, `results.md` and `results.png` in its output
/// directory (rewritten as runs finish).
pub fn run_sweep(sweep: &SweepConfig, progress: bool) -> Result<Vec<SweepRow>, TrainError> {
    std::fs::create_dir_all(&sweep.output).map_err(|e| TrainError::file(&sweep.output, e))?;
    let base_text = std::fs::read_to_string(&sweep.base).map_err(|e| TrainError::file(&sweep.base, e))?;
    let points = sweep.points();
    let devices: Vec<Option<&str>> = if sweep.devices.is_empty() { vec![None] } else { sweep.devices.iter().map(|d| Some(d.as_str())).collect() };
    // Progress bars of parallel runs would overwrite each other.
    let progress = progress && devices.len() == 1;
    let next = AtomicUsize::new(0);
    let rows: Mutex<Vec<Option<SweepRow>>> = Mutex::new(vec![None; points.len()]);
    let write_error: Mutex<Option<TrainError>> = Mutex::new(None);
    std::thread::scope(|s| {
        let (next, rows, write_error, points, base_text) = (&next, &rows, &write_error, &points, &base_text);
        for &device in &devices {
            s.spawn(move || {
                // After a signal, the point it stopped is checkpointed and no new one starts.
                while crate::interrupt::requested().is_none() {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(point) = points.get(i) else { break };
                    let row = run_point(sweep, base_text, i, point, device, progress);
                    let mut rows = rows.lock().expect("no panics while holding the lock");
                    rows[i] = Some(row);
                    let finished: Vec<SweepRow> = rows.iter().flatten().cloned().collect();
                    if let Err(e) = write_results(sweep, &finished) {
                        write_error.lock().expect("lock").get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = write_error.into_inner().expect("lock") {
        return Err(e);
    }
    Ok(rows.into_inner().expect("lock").into_iter().flatten().collect())
}

/// Trains (or resumes, or reads the summary of) point `i`, on `device` when given.
fn run_point(sweep: &SweepConfig, base_text: &str, i: usize, point: &[String], device: Option<&str>, progress: bool) -> SweepRow {
    let run_name = format!("run-{i:03}");
    let run_dir = run_dir(sweep, i);
    let mut overrides = sweep.set.clone();
    overrides.extend(point.iter().cloned());
    if let Some(d) = device {
        overrides.push(format!("model.device={d:?}"));
    }
    overrides.push(format!("output.dir={:?}", run_dir.display().to_string()));
    eprintln!("[{run_name}] {}{}", point.join(" "), device.map(|d| format!(" (on {d})")).unwrap_or_default());
    let failure_path = run_dir.join(FAILURE_FILE);
    let result = (|| -> Result<RunSummary, TrainError> {
        if failure_path.exists() {
            std::fs::remove_file(&failure_path).map_err(|e| TrainError::file(&failure_path, e))?;
        }
        // The base file's own directory anchors its relative paths.
        let mut table: toml::Table = toml::from_str(base_text).map_err(|e| TrainError::file(&sweep.base, e))?;
        for o in &overrides {
            apply_override(&mut table, o).map_err(|e| TrainError::file(&sweep.base, e))?;
        }
        let tmp = sweep.base.with_file_name(format!(".sweep-{run_name}-{}.toml", std::process::id()));
        std::fs::write(&tmp, toml::to_string(&table).expect("TOML")).map_err(|e| TrainError::file(&tmp, e))?;
        let cfg = RunConfig::load(&tmp, &[]);
        let _ = std::fs::remove_file(&tmp);
        // A run directory holding state of this config is continued (or, finished, read back).
        let cfg = cfg?;
        let run = train(&cfg, &RunOptions { progress_bar: progress, ..Default::default() })?;
        save_final(&cfg, &run.summary, run.model.as_ref())?;
        crate::plot::plot_run(&cfg.output.dir)?;
        Ok(run.summary)
    })();
    match result {
        Ok(s) => finished_row(sweep, run_name, point, &s),
        Err(e) if crate::interrupt::requested().is_some() => {
            // Not a failure: the same command continues the point.
            eprintln!("[{run_name}] {e}");
            SweepRow::without_result(run_name, point, INTERRUPTED.into())
        }
        Err(e) => {
            eprintln!("[{run_name}] failed: {e}");
            if let Err(w) = std::fs::create_dir_all(&run_dir).and_then(|()| std::fs::write(&failure_path, e.to_string())) {
                eprintln!("[{run_name}] could not record the failure in {}: {w}", failure_path.display());
            }
            SweepRow::without_result(run_name, point, format!("failed: {e}"))
        }
    }
}

/// In a point's run directory: why its last attempt failed (removed when it starts again).
const FAILURE_FILE: &str = "failed.txt";
/// Status of a point a signal stopped (checkpoint written).
const INTERRUPTED: &str = "interrupted";
/// Status of a point without a summary or a recorded failure.
const NOT_FINISHED: &str = "not finished";

fn finished_row(sweep: &SweepConfig, run: String, point: &[String], s: &RunSummary) -> SweepRow {
    SweepRow {
        run,
        assignments: point.to_vec(),
        status: "ok".into(),
        metric: s.final_eval.metric(&sweep.metric),
        full_precision: s.fp_eval.metric(&sweep.metric),
        tokens: s.tokens,
        wall_seconds: s.wall_seconds,
    }
}

/// The directory of point `i`.
pub fn run_dir(sweep: &SweepConfig, i: usize) -> PathBuf {
    sweep.output.join(format!("run-{i:03}"))
}

/// Where point `i` stands, read from its run directory (nothing is run).
#[derive(Debug, Clone)]
pub enum PointState {
    Finished(SweepRow),
    Failed(String),
    /// Checkpointed at this step (of the run's total), not finished.
    Partial {
        step: usize,
    },
    NotStarted,
}

pub fn point_state(sweep: &SweepConfig, i: usize, point: &[String]) -> Result<PointState, TrainError> {
    let dir = run_dir(sweep, i);
    let summary_path = dir.join("summary.json");
    if summary_path.is_file() {
        let text = std::fs::read_to_string(&summary_path).map_err(|e| TrainError::file(&summary_path, e))?;
        let s: RunSummary = serde_json::from_str(&text).map_err(|e| TrainError::file(&summary_path, e))?;
        return Ok(PointState::Finished(finished_row(sweep, format!("run-{i:03}"), point, &s)));
    }
    let failure_path = dir.join(FAILURE_FILE);
    if failure_path.is_file() {
        return Ok(PointState::Failed(std::fs::read_to_string(&failure_path).map_err(|e| TrainError::file(&failure_path, e))?));
    }
    match crate::checkpoint::latest(&dir.join("checkpoints"))? {
        // `latest` lists only `step-N` directories.
        Some(ckpt) => Ok(PointState::Partial { step: crate::checkpoint::step_of(&ckpt).unwrap_or_default() }),
        None => Ok(PointState::NotStarted),
    }
}

/// The results table from the run directories as they are (`qat sweep --collect`): finished
/// points with their metric, failed ones with their error, the rest as not finished. Writes
/// `results.csv`, `results.md` and `results.png` as a local sweep does.
pub fn collect(sweep: &SweepConfig) -> Result<Vec<SweepRow>, TrainError> {
    std::fs::create_dir_all(&sweep.output).map_err(|e| TrainError::file(&sweep.output, e))?;
    let rows = sweep
        .points()
        .iter()
        .enumerate()
        .map(|(i, point)| {
            let blank = |status: String| SweepRow::without_result(format!("run-{i:03}"), point, status);
            Ok(match point_state(sweep, i, point)? {
                PointState::Finished(row) => row,
                PointState::Failed(e) => blank(format!("failed: {e}")),
                PointState::Partial { .. } | PointState::NotStarted => blank(NOT_FINISHED.into()),
            })
        })
        .collect::<Result<Vec<_>, TrainError>>()?;
    write_results(sweep, &rows)?;
    Ok(rows)
}

/// Runs point `i` alone (one array task of a cluster sweep): trains, resumes or reads it back.
/// Its row's status says how it ended (`ok`, `interrupted`, `failed: …`).
pub fn run_task(sweep: &SweepConfig, i: usize) -> Result<SweepRow, TrainError> {
    let points = sweep.points();
    let point = points.get(i).ok_or_else(|| TrainError::Run(format!("task {i}: the sweep has {} points (0..{})", points.len(), points.len())))?;
    let base_text = std::fs::read_to_string(&sweep.base).map_err(|e| TrainError::file(&sweep.base, e))?;
    Ok(run_point(sweep, &base_text, i, point, None, false))
}

fn write_results(sweep: &SweepConfig, rows: &[SweepRow]) -> Result<(), TrainError> {
    let keys: Vec<&str> = sweep.axes.iter().map(|a| a.key.as_str()).collect();
    let value_of = |r: &SweepRow, k: &str| r.assignments.iter().find_map(|a| a.strip_prefix(&format!("{k}="))).unwrap_or("").to_string();
    let mut csv = format!("run,{},{},tokens,wall_seconds,status\n", keys.join(","), sweep.metric);
    for r in rows {
        let vals: Vec<String> = keys.iter().map(|k| value_of(r, k).replace(',', ";")).collect();
        csv.push_str(&format!(
            "{},{},{},{},{:.1},{}\n",
            r.run,
            vals.join(","),
            r.metric.map(|m| m.to_string()).unwrap_or_default(),
            r.tokens,
            r.wall_seconds,
            r.status.replace([',', '\n'], " ")
        ));
    }
    let path = sweep.output.join("results.csv");
    std::fs::write(&path, csv).map_err(|e| TrainError::file(&path, e))?;
    let mut ranked: Vec<&SweepRow> = rows.iter().collect();
    ranked.sort_by(|a, b| match (a.metric, b.metric) {
        (Some(x), Some(y)) => {
            if sweep.goal == Goal::Min {
                x.total_cmp(&y)
            } else {
                y.total_cmp(&x)
            }
        }
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        _ => std::cmp::Ordering::Equal,
    });
    let mut md = format!(
        "| rank | run | {} | {} ({}) | tokens | wall s | status |\n|---|---|{}---|---|---|---|\n",
        keys.join(" | "),
        sweep.metric,
        if sweep.goal == Goal::Min { "lower is better" } else { "higher is better" },
        "---|".repeat(keys.len())
    );
    for (i, r) in ranked.iter().enumerate() {
        let vals: Vec<String> = keys.iter().map(|k| value_of(r, k)).collect();
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.0} | {} |\n",
            i + 1,
            r.run,
            vals.join(" | "),
            r.metric.map(|m| format!("{m:.4}")).unwrap_or("—".into()),
            r.tokens,
            r.wall_seconds,
            if r.status == "ok" { "ok" } else { "failed" }
        ));
    }
    let path = sweep.output.join("results.md");
    std::fs::write(&path, md).map_err(|e| TrainError::file(&path, e))?;
    // Each axis's values in the order the points list them.
    let mut axes: Vec<(String, Vec<String>)> = keys.iter().map(|k| (k.to_string(), Vec::new())).collect();
    let points = sweep.points();
    for point in &points {
        for (k, values) in axes.iter_mut() {
            let v = point.iter().find_map(|a| a.strip_prefix(&format!("{k}="))).unwrap_or("").to_string();
            if !values.contains(&v) {
                values.push(v);
            }
        }
    }
    let runs: Vec<(Vec<String>, f64)> = rows.iter().filter_map(|r| Some((keys.iter().map(|k| value_of(r, k)).collect(), r.metric?))).collect();
    let finished: Vec<&&SweepRow> = ranked.iter().filter(|r| r.metric.is_some()).collect();
    let title = match finished.first() {
        Some(best) => format!(
            "{} ({} is better): {} of {} runs finished, best {} = {:.4}",
            sweep.metric,
            if sweep.goal == Goal::Min { "lower" } else { "higher" },
            finished.len(),
            points.len(),
            best.run,
            best.metric.unwrap_or(f64::NAN)
        ),
        None => sweep.metric.clone(),
    };
    // The unquantized model is the same for every point unless an axis changes it.
    let references: Vec<f64> = finished.iter().filter_map(|r| r.full_precision).collect();
    let reference = references.first().copied().filter(|x| references.iter().all(|y| y == x));
    crate::plot::plot_sweep(&sweep.output.join("results.png"), &title, &sweep.metric, reference, &axes, &runs)
}
