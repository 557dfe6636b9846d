//! `qat sweep --launcher slurm` against a real Slurm (the one-node cluster of
//! scripts/slurm_local.sh): a four-point stories260K sweep submitted as a job array gives
//! exactly the local sweep's results, although one of its points is requeued mid-run
//! (`scontrol requeue`: SIGTERM, checkpoint, the task runs again and resumes) and another is
//! cancelled mid-run (`scancel`) and continued by submitting the sweep again.

use qat_testing as common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn qat() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qat"));
    c.args(["--threads", "1"]);
    c
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn write_sweep(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
base = "base.toml"
output = "{name}"
metric = "val_loss"
set = ["train.max_steps=200", "checkpoint.every=5", "checkpoint.keep=2"]
[slurm]
cpus_per_task = 1
mem = "2G"
max_concurrent = 2
time = "00:20:00"
[[axes]]
key = "train.lr"
values = [1e-3, 4e-3]
[[axes]]
key = "quant.bits"
values = [2, 3]
"#
        ),
    )
    .unwrap();
    path
}

/// results.csv without its wall-time column.
fn results(dir: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let wall = header.iter().position(|h| *h == "wall_seconds").unwrap();
    csv.lines().map(|l| l.split(',').enumerate().filter(|(i, _)| *i != wall).map(|(_, v)| v).collect::<Vec<_>>().join(",")).collect()
}

#[test]
#[ignore = "needs a Slurm cluster (scripts/slurm_local.sh, scripts/test.sh)"]
fn slurm_sweep_with_a_requeued_point_equals_the_local_sweep() {
    common::require_slurm();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("base.toml"), common::stories_config(&tmp.path().join("unused"), "")).unwrap();
    let (local, cluster) = (write_sweep(tmp.path(), "local"), write_sweep(tmp.path(), "cluster"));
    run_ok(qat().args(["sweep", "--quiet"]).arg(&local));

    let submitted = run_ok(qat().args(["sweep", "--launcher", "slurm"]).arg(&cluster));
    let job: String = submitted.split("submitted job ").nth(1).and_then(|t| t.split_whitespace().next()).unwrap_or_else(|| panic!("{submitted}")).into();
    let out = tmp.path().join("cluster");
    let started = Instant::now();
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        while !done() {
            assert!(
                started.elapsed() < Duration::from_secs(900),
                "waited 15 minutes for {what}; status:\n{}",
                run_ok(qat().args(["sweep", "--status"]).arg(&cluster))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Requeue the first point seen with a checkpoint and no summary: Slurm stops it (SIGTERM),
    // qat checkpoints, and the task runs again from the queue.
    let partial = |not: Option<usize>| {
        (0..4).find(|&i| Some(i) != not && out.join(format!("run-{i:03}/checkpoints")).is_dir() && !out.join(format!("run-{i:03}/summary.json")).exists())
    };
    wait("a point with a checkpoint", &|| partial(None).is_some());
    let victim = partial(None).unwrap();
    let task = format!("{job}_{victim}");
    run_ok(Command::new("scontrol").args(["requeue", &task]));
    // Slurm holds a requeued job back for a while (its begin time moves ~2 minutes ahead); the
    // test lets it start as soon as it is pending again.
    let state = |task: &str| String::from_utf8_lossy(&Command::new("squeue").args(["-h", "-j", task, "-o", "%T"]).output().unwrap().stdout).trim().to_string();
    wait("the requeued task to be pending", &|| state(&task) == "PENDING");
    run_ok(Command::new("scontrol").args(["update", &format!("JobId={task}"), "StartTime=now"]));
    // Another point cancelled mid-run: not requeued; submitting the sweep again continues it.
    wait("a second point with a checkpoint", &|| partial(Some(victim)).is_some());
    let cancelled = partial(Some(victim)).unwrap();
    run_ok(Command::new("scancel").arg(format!("{job}_{cancelled}")));
    wait("the job to leave the queue", &|| state(&job).is_empty());
    let finished = |i: usize| out.join(format!("run-{i:03}/summary.json")).exists();
    assert!(!finished(cancelled), "run-{cancelled:03} finished although cancelled");
    assert!((0..4).filter(|&i| i != cancelled).all(finished), "{}", run_ok(qat().args(["sweep", "--status"]).arg(&cluster)));
    let resubmitted = run_ok(qat().args(["sweep", "--launcher", "slurm"]).arg(&cluster));
    assert!(resubmitted.contains(&format!("(1 tasks: points {cancelled})")), "only the cancelled point is submitted again: {resubmitted}");
    wait("the resubmitted point to finish", &|| finished(cancelled));
    let status = run_ok(qat().args(["sweep", "--status"]).arg(&cluster));
    assert!(status.contains("(1 tasks"), "{status}");
    assert_eq!(status.matches(", val_loss = ").count(), 4, "{status}");

    for (i, how) in [(victim, "requeued"), (cancelled, "cancelled")] {
        let log = std::fs::read_to_string(out.join(format!("slurm/task-{i:03}.out"))).unwrap();
        assert!(log.contains("stopped by SIGTERM at step"), "the {how} task did not checkpoint on SIGTERM:\n{log}");
        assert!(log.contains("resumed"), "the {how} task did not resume:\n{log}");
    }
    // Every point finished: submitting again collects instead.
    let again = run_ok(qat().args(["sweep", "--launcher", "slurm"]).arg(&cluster));
    assert!(again.contains("every point has finished"), "{again}");
    assert_eq!(results(&out), results(&tmp.path().join("local")));
    assert_eq!(results(&out).len(), 5);
}
