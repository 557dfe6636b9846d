//! `qat sweep` on stories260K: results table and plot, a failed point recorded without stopping
//! the sweep, finished runs skipped on restart, and two devices giving the same results as one.

use qat_train::sweep::{SweepConfig, run_sweep};

#[test]
fn sweep_ranks_plots_resumes_and_runs_on_several_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let one = SweepConfig::load(&qat_testing::sweep_file(tmp.path(), "one", "")).unwrap();
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
    let two = SweepConfig::load(&qat_testing::sweep_file(tmp.path(), "two", r#"devices = ["cpu", "cpu"]"#)).unwrap();
    let parallel = run_sweep(&two, false).unwrap();
    assert_eq!(parallel.iter().map(|r| (&r.run, r.metric)).collect::<Vec<_>>(), rows.iter().map(|r| (&r.run, r.metric)).collect::<Vec<_>>());
}
