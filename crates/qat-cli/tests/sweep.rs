//! `qat sweep` on stories260K: results table and plot, a failed point recorded without stopping
//! the sweep, finished runs skipped on restart, and two devices giving the same results as one.

mod common;

use std::path::Path;

use qat_train::sweep::{SweepConfig, run_sweep};

fn write_sweep(dir: &Path, name: &str, devices: &str) -> SweepConfig {
    let base = dir.join("base.toml");
    std::fs::write(&base, common::stories_config(&dir.join("unused"), "")).unwrap();
    let path = dir.join(format!("{name}.toml"));
    // The third lr is not a number: that point's run fails and the sweep goes on.
    std::fs::write(
        &path,
        format!(
            r#"
base = "base.toml"
output = "{name}"
metric = "val_loss"
set = ["train.max_steps=3", "train.batch_size=2", "checkpoint.every=0"]
{devices}
[[axes]]
key = "train.lr"
values = [1e-3, 4e-3, "fast"]
[[axes]]
key = "quant.bits"
values = [2, 3]
"#
        ),
    )
    .unwrap();
    SweepConfig::load(&path).unwrap()
}

#[test]
fn sweep_ranks_plots_resumes_and_runs_on_several_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let one = write_sweep(tmp.path(), "one", "");
    let rows = run_sweep(&one, false).unwrap();
    assert_eq!(rows.len(), 6);
    let failed: Vec<_> = rows.iter().filter(|r| r.status != "ok").map(|r| r.run.as_str()).collect();
    assert_eq!(failed, ["run-004", "run-005"], "{rows:?}");
    assert!(rows.iter().filter(|r| r.status == "ok").all(|r| r.metric.is_some_and(f64::is_finite)));
    let csv = std::fs::read_to_string(one.output.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7, "{csv}");
    let md = std::fs::read_to_string(one.output.join("results.md")).unwrap();
    let best = rows.iter().filter(|r| r.metric.is_some()).min_by(|a, b| a.metric.unwrap().total_cmp(&b.metric.unwrap())).unwrap();
    assert!(md.lines().nth(2).unwrap().starts_with(&format!("| 1 | {} |", best.run)), "{md}");
    let png = std::fs::read(one.output.join("results.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 2000);
    assert!(one.output.join("run-000/training.png").exists());

    // Started again: finished runs are read back, not trained again.
    let summary = one.output.join("run-000/summary.json");
    let before = std::fs::metadata(&summary).unwrap().modified().unwrap();
    let again = run_sweep(&one, false).unwrap();
    assert_eq!(std::fs::metadata(&summary).unwrap().modified().unwrap(), before);
    assert_eq!(again.iter().map(|r| r.metric).collect::<Vec<_>>(), rows.iter().map(|r| r.metric).collect::<Vec<_>>());

    // `qat sweep --collect` rebuilds the same table from the run directories (failures from
    // their `failed.txt`), and `--status` reads each point's state from them.
    std::fs::remove_file(one.output.join("results.csv")).unwrap();
    let collected = qat_train::sweep::collect(&one).unwrap();
    let key = |r: &qat_train::sweep::SweepRow| (r.run.clone(), r.metric, r.status.split(':').next().unwrap().to_string(), r.tokens);
    assert_eq!(collected.iter().map(key).collect::<Vec<_>>(), rows.iter().map(key).collect::<Vec<_>>());
    assert_eq!(std::fs::read_to_string(one.output.join("results.csv")).unwrap(), csv);
    let status = qat_train::slurm::status(&one).unwrap();
    assert_eq!(status.matches("  finished, val_loss = ").count(), 4, "{status}");
    assert!(status.contains("run-004  train.lr=\"fast\" quant.bits=2  failed: "), "{status}");

    // Two devices (two CPU workers here): every run gives exactly what it gave alone.
    let two = write_sweep(tmp.path(), "two", r#"devices = ["cpu", "cpu"]"#);
    let parallel = run_sweep(&two, false).unwrap();
    assert_eq!(parallel.iter().map(|r| (&r.run, r.metric)).collect::<Vec<_>>(), rows.iter().map(|r| (&r.run, r.metric)).collect::<Vec<_>>());
}

/// Config and sweep files named without a directory (`qat train run.toml` in its own folder):
/// their relative paths resolve against the current directory.
#[test]
fn bare_file_names_resolve_against_the_current_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = write_sweep(tmp.path(), "bare", "");
    let qat = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_qat")).current_dir(tmp.path()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = qat(&["sweep", "bare.toml", "--dry-run"]);
    assert_eq!(listed.lines().count(), sweep.points().len(), "{listed}");
    qat(&["train", "base.toml", "--quiet", "--set", "train.max_steps=1", "--set", "output.dir=\"bare-run\""]);
    assert!(tmp.path().join("bare-run/summary.json").exists());
}
