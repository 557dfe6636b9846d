use std::path::PathBuf;

use anyhow::bail;
use qat_train::slurm;
use qat_train::sweep::{self, SweepConfig};

/// Where the sweep's runs go.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Launcher {
    /// On this machine, one run at a time (or one per device).
    Local,
    /// As one Slurm job array (`sbatch`), one task per unfinished point.
    Slurm,
}

/// Run a hyper-parameter sweep: a base config and axes, one run per point, one results table.
#[derive(clap::Args)]
pub struct Args {
    /// The sweep file (TOML: base, output, metric, goal, mode, axes, [slurm]).
    sweep: PathBuf,
    /// List the points without running them.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    quiet: bool,
    /// Run on these devices in parallel, one run per device at a time (comma-separated, e.g.
    /// `vulkan:0,vulkan:1`); replaces the sweep file's `devices`.
    #[arg(long, value_delimiter = ',')]
    devices: Vec<String>,
    #[arg(long, value_enum, default_value = "local")]
    launcher: Launcher,
    /// Each point's state (run directory, and Slurm's view of the last submission).
    #[arg(long, conflicts_with_all = ["collect", "task", "dry_run"])]
    status: bool,
    /// Write results.csv / .md / .png from the run directories as they are, running nothing.
    #[arg(long, conflicts_with_all = ["task", "dry_run"])]
    collect: bool,
    /// Run point N only (what each Slurm array task runs).
    #[arg(long, value_name = "N", hide = true)]
    task: Option<usize>,
    /// Slurm partition (replaces `slurm.partition`).
    #[arg(long)]
    partition: Option<String>,
    /// Slurm account (replaces `slurm.account`).
    #[arg(long)]
    account: Option<String>,
    /// Time limit of one task, e.g. `04:00:00` (replaces `slurm.time`).
    #[arg(long)]
    time: Option<String>,
    /// CPUs of one task, also its thread count (replaces `slurm.cpus_per_task`).
    #[arg(long)]
    cpus_per_task: Option<u32>,
    /// Memory of one task, e.g. `32G` (replaces `slurm.mem`).
    #[arg(long)]
    mem: Option<String>,
    /// GPUs of one task (replaces `slurm.gpus`).
    #[arg(long)]
    gpus: Option<u32>,
    /// At most this many tasks at once (replaces `slurm.max_concurrent`).
    #[arg(long)]
    max_concurrent: Option<usize>,
}

impl Args {
    /// The sweep file's `[slurm]` table with the command line's replacements.
    fn slurm_options(&self, mut o: slurm::SlurmOptions) -> slurm::SlurmOptions {
        let set = |dst: &mut Option<String>, src: &Option<String>| {
            if src.is_some() {
                dst.clone_from(src);
            }
        };
        set(&mut o.partition, &self.partition);
        set(&mut o.account, &self.account);
        set(&mut o.time, &self.time);
        set(&mut o.mem, &self.mem);
        o.cpus_per_task = self.cpus_per_task.or(o.cpus_per_task);
        o.gpus = self.gpus.or(o.gpus);
        o.max_concurrent = self.max_concurrent.or(o.max_concurrent);
        o
    }
}

fn print_results(s: &SweepConfig, rows: &[sweep::SweepRow]) -> anyhow::Result<()> {
    let failed = rows.iter().filter(|r| r.status.starts_with("failed")).count();
    let done = rows.iter().filter(|r| r.status == "ok").count();
    println!("{}", std::fs::read_to_string(s.output.join("results.md"))?);
    println!("{} runs: {done} finished, {failed} failed; results in {}", rows.len(), s.output.display());
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut s = SweepConfig::load(&a.sweep)?;
    if !a.devices.is_empty() {
        s.devices = a.devices.clone();
    }
    s.slurm = a.slurm_options(s.slurm.clone());
    if a.dry_run {
        for (i, p) in s.points().iter().enumerate() {
            println!("run-{i:03}: {}", p.join(" "));
        }
        return Ok(());
    }
    if a.status {
        print!("{}", slurm::status(&s)?);
        return Ok(());
    }
    if a.collect {
        let rows = sweep::collect(&s)?;
        return print_results(&s, &rows);
    }
    qat_train::interrupt::install()?;
    if let Some(i) = a.task {
        let row = sweep::run_task(&s, i)?;
        if row.status != "ok" {
            // Interrupted: main maps the error to the exit status the job script requeues on.
            bail!("run-{i:03}: {}", row.status);
        }
        println!("run-{i:03}: {} = {}", s.metric, row.metric.map(|m| m.to_string()).unwrap_or("—".into()));
        return Ok(());
    }
    match a.launcher {
        Launcher::Local => {
            let rows = sweep::run_sweep(&s, !a.quiet)?;
            if qat_train::interrupt::requested().is_some() {
                bail!("sweep stopped by a signal; the points that ran are checkpointed: run the same command to continue");
            }
            print_results(&s, &rows)
        }
        Launcher::Slurm => match slurm::submit(&s, &a.sweep)? {
            Some(sub) => {
                println!(
                    "submitted job {} ({} tasks: points {}); `qat sweep {} --status` follows it, `--collect` writes the results",
                    sub.job_id,
                    sub.tasks.len(),
                    sub.tasks.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","),
                    a.sweep.display()
                );
                Ok(())
            }
            None => {
                eprintln!("every point has finished: collecting");
                let rows = sweep::collect(&s)?;
                print_results(&s, &rows)
            }
        },
    }
}
