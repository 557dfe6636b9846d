use std::path::PathBuf;

use anyhow::{Context, bail};
use qat_train::{RunConfig, RunOptions};

#[derive(clap::Args)]
pub struct Args {
    /// The run config (TOML). Not needed with --resume.
    config: Option<PathBuf>,
    /// Override a config key: `--set train.lr=2e-5 --set data.mix.math=0.5`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Continue the run in RUN_DIR from its last checkpoint, with the config it was started with.
    /// (Giving the config again does the same: a run directory holding checkpoints of the same
    /// config is continued, a finished one reports its summary.)
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// Stop after N steps of this invocation, as an interruption would (for resume checks).
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
    /// No progress bar (metrics still go to metrics.jsonl).
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    qat_train::interrupt::install()?;
    let (cfg, resume) = match (&a.config, &a.resume) {
        (Some(c), None) => (RunConfig::load(c, &a.set)?, false),
        (None, Some(dir)) => {
            if !a.set.is_empty() {
                bail!("--set cannot change a run being resumed");
            }
            let c = dir.join("config.toml");
            (RunConfig::load(&c, &[]).with_context(|| format!("{} is not a run directory", dir.display()))?, true)
        }
        _ => bail!("give a config file, or --resume RUN_DIR"),
    };
    let opts = RunOptions { resume, stop_after: a.stop_after, progress_bar: !a.quiet, ..Default::default() };
    let run = qat_train::train(&cfg, &opts)?;
    qat_train::save_final(&cfg, &run.summary, run.model.as_ref())?;
    qat_train::plot::plot_run(&cfg.output.dir)?;
    let s = run.summary;
    println!(
        "done: {} steps ({} skipped), {} tokens in {:.1}s ({:.0} tokens/s), peak RSS {:.0} MiB",
        s.steps, s.skipped_steps, s.tokens, s.wall_seconds, s.tokens_per_second, s.peak_rss_mib
    );
    let json = |r: &qat_eval::Report| serde_json::to_string(r).expect("JSON");
    println!("full precision:      {}", json(&s.fp_eval));
    println!("quantized, step 0:   {}", json(&s.first_eval));
    println!("quantized, trained:  {}", json(&s.final_eval));
    if let Some(r) = s.val_gap_recovered {
        println!("QAT closed {:.1}% of the validation-loss gap between round-to-nearest and full precision", 100.0 * r);
    }
    println!("model: {}", s.final_model.display());
    Ok(())
}
