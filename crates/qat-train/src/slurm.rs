//! `qat sweep --launcher slurm`: the sweep's points as one Slurm job array.
//!
//! qat does not schedule: it writes one batch script (`OUTPUT/slurm/sweep.sbatch`) whose array
//! tasks each run `qat sweep SWEEP --task $SLURM_ARRAY_TASK_ID` — the same code path as a local
//! sweep's point — submits it with `sbatch`, and records the job id in `OUTPUT/slurm/jobs.jsonl`.
//! Only points without a `summary.json` are submitted; once all have one, `qat sweep` collects.
//!
//! Preemption and time limits: the script asks for `--requeue` and `--signal=B:USR1@N`. On a
//! preemption or `scontrol requeue` Slurm sends `SIGTERM` to the task's processes; `qat` then
//! finishes its step, checkpoints and exits ([`crate::interrupt`]) and Slurm runs the task again,
//! which resumes. `N` seconds before the time limit the script forwards `SIGUSR1` to `qat`,
//! which checkpoints and exits with [`crate::interrupt::EXIT_INTERRUPTED`]; the script then
//! requeues its own task. A point's task log (`OUTPUT/slurm/task-NNN.out`) is appended to across
//! attempts.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::sweep::{PointState, SweepConfig, point_state};

/// The `[slurm]` table of a sweep file (each also a `qat sweep` option).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// Time limit of one task (`--time`, e.g. `"04:00:00"`).
    pub time: Option<String>,
    /// `--cpus-per-task`; also each task's `qat --threads`.
    pub cpus_per_task: Option<u32>,
    /// Memory of one task (`--mem`, e.g. `"32G"`).
    pub mem: Option<String>,
    /// GPUs of one task (`--gpus-per-task`); the base config's `model.device` picks the backend.
    pub gpus: Option<u32>,
    /// At most this many tasks at once (`--array=…%N`).
    pub max_concurrent: Option<usize>,
    /// Seconds before the time limit at which a task checkpoints and requeues itself.
    pub signal_seconds: u32,
    /// Further `#SBATCH` options, verbatim (e.g. `"--constraint=h100"`, `"--qos=low"`).
    pub extra: Vec<String>,
}

impl Default for SlurmOptions {
    fn default() -> Self {
        SlurmOptions {
            partition: None,
            account: None,
            time: None,
            cpus_per_task: None,
            mem: None,
            gpus: None,
            max_concurrent: None,
            signal_seconds: 120,
            extra: Vec::new(),
        }
    }
}

/// One `sbatch` of a sweep, as recorded in `OUTPUT/slurm/jobs.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub job_id: String,
    /// The array indices (= point numbers) submitted.
    pub tasks: Vec<usize>,
    pub script: PathBuf,
}

fn slurm_dir(sweep: &SweepConfig) -> PathBuf {
    sweep.output.join("slurm")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The batch script for `tasks` (see the module doc); `qat` is the binary the tasks run.
pub fn job_script(sweep: &SweepConfig, sweep_file: &Path, qat: &Path, workdir: &Path, tasks: &[usize]) -> Result<String, TrainError> {
    let o = &sweep.slurm;
    let list: Vec<String> = tasks.iter().map(|t| t.to_string()).collect();
    let logs = slurm_dir(sweep).join("task-%3a.out");
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        "#SBATCH --job-name=qat-sweep".into(),
        format!("#SBATCH --array={}{}", list.join(","), o.max_concurrent.map(|n| format!("%{n}")).unwrap_or_default()),
        "#SBATCH --requeue".into(),
        "#SBATCH --open-mode=append".into(),
        format!("#SBATCH --output={}", logs.display()),
        format!("#SBATCH --chdir={}", workdir.display()),
        format!("#SBATCH --signal=B:USR1@{}", o.signal_seconds),
    ];
    let options: [(&str, Option<String>); 6] = [
        ("partition", o.partition.clone()),
        ("account", o.account.clone()),
        ("time", o.time.clone()),
        ("cpus-per-task", o.cpus_per_task.map(|n| n.to_string())),
        ("mem", o.mem.clone()),
        ("gpus-per-task", o.gpus.map(|n| n.to_string())),
    ];
    for (key, value) in options {
        if let Some(v) = value {
            if v.contains(char::is_whitespace) {
                return Err(TrainError::Run(format!("slurm.{}: `{v}` contains whitespace", key.replace('-', "_"))));
            }
            lines.push(format!("#SBATCH --{key}={v}"));
        }
    }
    for e in &o.extra {
        if e.contains('\n') {
            return Err(TrainError::Run(format!("slurm.extra: `{e}` spans lines")));
        }
        lines.push(format!("#SBATCH {e}"));
    }
    let threads = o.cpus_per_task.map(|n| format!(" --threads {n}")).unwrap_or_default();
    lines.push(String::new());
    lines.push("# Written by `qat sweep --launcher slurm`: each array task runs (or resumes) one point.".into());
    lines.push(format!(
        "{}{threads} sweep {} --task \"$SLURM_ARRAY_TASK_ID\" &",
        shell_quote(&qat.display().to_string()),
        shell_quote(&sweep_file.display().to_string())
    ));
    lines.push("pid=$!".into());
    lines.push("# Before the time limit: qat checkpoints and exits 75; the task then requeues itself.".into());
    lines.push("trap 'kill -USR1 $pid' USR1".into());
    lines.push("while :; do wait $pid; rc=$?; kill -0 $pid 2>/dev/null || break; done".into());
    lines.push(format!("if [ $rc -eq {} ]; then scontrol requeue \"$SLURM_JOB_ID\"; fi", crate::interrupt::EXIT_INTERRUPTED));
    lines.push("exit $rc".into());
    Ok(lines.join("\n") + "\n")
}

/// Submits the unfinished points; `None` when every point has finished (nothing submitted).
pub fn submit(sweep: &SweepConfig, sweep_file: &Path) -> Result<Option<Submission>, TrainError> {
    if !sweep.devices.is_empty() {
        return Err(TrainError::Run("`devices` is for the local launcher; under Slurm each task gets its GPUs from `slurm.gpus`".into()));
    }
    let mut tasks = Vec::new();
    for (i, point) in sweep.points().iter().enumerate() {
        if !matches!(point_state(sweep, i, point)?, PointState::Finished(_)) {
            tasks.push(i);
        }
    }
    if tasks.is_empty() {
        return Ok(None);
    }
    let dir = slurm_dir(sweep);
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::file(&dir, e))?;
    let qat = std::env::current_exe().map_err(|e| TrainError::Run(format!("the qat binary's path: {e}")))?;
    let sweep_file = std::path::absolute(sweep_file).map_err(|e| TrainError::file(sweep_file, e))?;
    let workdir = std::env::current_dir().map_err(|e| TrainError::Run(format!("the working directory: {e}")))?;
    let script = dir.join("sweep.sbatch");
    std::fs::write(&script, job_script(sweep, &sweep_file, &qat, &workdir, &tasks)?).map_err(|e| TrainError::file(&script, e))?;
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(&script)
        .output()
        .map_err(|e| TrainError::Run(format!("sbatch: {e} (is Slurm installed and on PATH?)")))?;
    if !out.status.success() {
        return Err(TrainError::Run(format!("sbatch {}: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim())));
    }
    // `--parsable` prints `JOBID` or `JOBID;CLUSTER`.
    let text = String::from_utf8_lossy(&out.stdout);
    let job_id = text.trim().split(';').next().unwrap_or("").to_string();
    if job_id.is_empty() || !job_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(TrainError::Run(format!("sbatch printed `{}`, not a job id", text.trim())));
    }
    let submission = Submission { job_id, tasks, script };
    let log = dir.join("jobs.jsonl");
    let mut line = serde_json::to_string(&submission).expect("JSON");
    line.push('\n');
    use std::io::Write;
    std::fs::OpenOptions::new().create(true).append(true).open(&log).and_then(|mut f| f.write_all(line.as_bytes())).map_err(|e| TrainError::file(&log, e))?;
    Ok(Some(submission))
}

/// Every recorded submission of the sweep, oldest first.
pub fn submissions(sweep: &SweepConfig) -> Result<Vec<Submission>, TrainError> {
    let log = slurm_dir(sweep).join("jobs.jsonl");
    if !log.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&log).map_err(|e| TrainError::file(&log, e))?;
    text.lines().enumerate().map(|(n, l)| serde_json::from_str(l).map_err(|e| TrainError::Run(format!("{}:{}: {e}", log.display(), n + 1)))).collect()
}

/// Slurm's view of the array tasks of `job_id`: index → state text. From `squeue` while tasks
/// are queued or running; `sacct` (where accounting is configured) adds finished ones. What
/// could not be asked is said in the second value.
fn scheduler_states(job_id: &str) -> (std::collections::BTreeMap<usize, String>, Vec<String>) {
    let mut states = std::collections::BTreeMap::new();
    let mut notes = Vec::new();
    let run = |cmd: &str, args: &[&str]| -> Result<String, TrainError> {
        let out = Command::new(cmd).args(args).output().map_err(|e| TrainError::Run(format!("{cmd}: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(TrainError::Run(format!("{cmd}: {}", String::from_utf8_lossy(&out.stderr).trim())))
        }
    };
    match run("sacct", &["-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode"]) {
        Ok(text) => {
            for l in text.lines() {
                let f: Vec<&str> = l.split('|').collect();
                if let [id, state, code] = f[..]
                    && let Some(Ok(i)) = id.split_once('_').map(|(_, i)| i.parse::<usize>())
                {
                    states.insert(i, format!("{state} (exit {code})"));
                }
            }
        }
        Err(e) => notes.push(format!("no finished-task states ({e})")),
    }
    match run("squeue", &["-h", "-r", "-j", job_id, "-o", "%K|%T|%M|%R"]) {
        Ok(text) => {
            for l in text.lines() {
                let f: Vec<&str> = l.split('|').collect();
                if let [i, state, time, reason] = f[..]
                    && let Ok(i) = i.parse::<usize>()
                {
                    states.insert(i, format!("{state} {time} {reason}"));
                }
            }
        }
        // A job that left the queue is not an error for squeue on every version.
        Err(e) => notes.push(format!("no queue states ({e})")),
    }
    (states, notes)
}

/// `qat sweep --status`: each point's state from its run directory and, for the last
/// submission, from Slurm.
pub fn status(sweep: &SweepConfig) -> Result<String, TrainError> {
    let last = submissions(sweep)?.pop();
    let (scheduler, notes) = last.as_ref().map(|s| scheduler_states(&s.job_id)).unwrap_or_default();
    let mut out = match &last {
        Some(s) => format!("last submission: job {} ({} tasks, script {})\n", s.job_id, s.tasks.len(), s.script.display()),
        None => "not submitted to Slurm (no slurm/jobs.jsonl)\n".to_string(),
    };
    for n in notes {
        out.push_str(&format!("note: {n}\n"));
    }
    for (i, point) in sweep.points().iter().enumerate() {
        let state = match point_state(sweep, i, point)? {
            PointState::Finished(r) => format!("finished, {} = {}", sweep.metric, r.metric.map(|m| format!("{m:.6}")).unwrap_or("—".into())),
            PointState::Failed(e) => format!("failed: {}", e.lines().next().unwrap_or("")),
            PointState::Partial { step } => format!("checkpoint at step {step}"),
            PointState::NotStarted => "not started".into(),
        };
        let slurm = scheduler.get(&i).map(|s| format!("  [Slurm: {s}]")).unwrap_or_default();
        out.push_str(&format!("run-{i:03}  {}  {state}{slurm}\n", point.join(" ")));
    }
    Ok(out)
}
