use std::path::PathBuf;

use anyhow::bail;

/// Draw a run's `training.png` from its `metrics.jsonl` (also while it trains).
#[derive(clap::Args)]
pub struct Args {
    /// The run directory (`output.dir` of a `qat train` run).
    run: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if !a.run.join("metrics.jsonl").is_file() {
        bail!("{}: no metrics.jsonl (not a run directory, or the run has not started)", a.run.display());
    }
    qat_train::plot::plot_run(&a.run)?;
    let png = a.run.join("training.png");
    if !png.exists() {
        bail!("{}: no training step recorded yet, nothing to draw", a.run.display());
    }
    println!("{}", png.display());
    Ok(())
}
