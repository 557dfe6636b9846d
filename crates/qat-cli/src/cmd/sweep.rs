use std::path::PathBuf;

/// Run a hyper-parameter sweep: a base config and axes, one run per point, one results table.
#[derive(clap::Args)]
pub struct Args {
    /// The sweep file (TOML: base, output, metric, goal, mode, axes).
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
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut s = qat_train::sweep::SweepConfig::load(&a.sweep).map_err(anyhow::Error::msg)?;
    if !a.devices.is_empty() {
        s.devices = a.devices;
    }
    if a.dry_run {
        for (i, p) in s.points().iter().enumerate() {
            println!("run-{i:03}: {}", p.join(" "));
        }
        return Ok(());
    }
    let rows = qat_train::sweep::run_sweep(&s, !a.quiet).map_err(anyhow::Error::msg)?;
    let failed = rows.iter().filter(|r| r.status != "ok").count();
    println!("{}", std::fs::read_to_string(s.output.join("results.md"))?);
    println!("{} runs, {failed} failed; results in {}", rows.len(), s.output.display());
    Ok(())
}
