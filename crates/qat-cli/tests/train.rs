//! Training across crates and through the binary: scales kept on export's grid during
//! training, and `qat train` checkpointing on SIGTERM and resuming with the same command.

use std::path::Path;

use qat_train::{RunConfig, RunOptions, train};

use qat_testing::stories_config as config;

fn load(text: &str, dir: &Path) -> Result<RunConfig, String> {
    RunConfig::load(&qat_testing::config_file(dir, text), &[]).map_err(|e| e.to_string())
}

/// `[quant] round_scales`: every step leaves the scales on export's exact grid (export's own
/// rounding then changes nothing), and the unrounded scales carried by the optimizer let them
/// still move (qat-train's `scale_rounded_run_resumes_identically` checks that a resumed run
/// restores them).
#[test]
fn scale_rounding_in_training_keeps_scales_exportable() {
    let tmp = tempfile::tempdir().unwrap();
    train(&load(&config(&tmp.path().join("a"), "[quant]\nround_scales = \"bf16\""), tmp.path()).unwrap(), &RunOptions::default()).unwrap();
    let device = burn::tensor::Device::flex();
    let scales = |m: &qat_model::CausalLm| -> Vec<f32> {
        m.linears()
            .iter()
            .filter_map(|(_, l)| l.quant.as_ref())
            .flat_map(|q| q.scale.as_ref().unwrap().val().into_data().try_to_vec::<f32>().unwrap())
            .collect()
    };
    let (trained, _) = qat_train::train::load_trained(&tmp.path().join("a"), &device).unwrap();
    let after = scales(&trained);
    let (_, report) = qat_export::round_scales(trained, qat_export::HfDtype::Bf16).unwrap();
    assert!(report.scales > 0 && report.changed == 0, "{report:?}");
    // The starting scales, rounded the same way: training moved most of them.
    let cfg = RunConfig::load(&tmp.path().join("a/config.toml"), &[]).unwrap();
    let start = qat_model::CausalLm::from_checkpoint(&qat_model::Checkpoint::open(&cfg.model.path).unwrap(), &device).unwrap();
    let (start, _) = start.prepare_qat(&cfg.quant).unwrap();
    let (start, _) = qat_export::round_scales(start, qat_export::HfDtype::Bf16).unwrap();
    let moved = scales(&start).iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(moved * 2 > after.len(), "only {moved} of {} scales moved", after.len());
    // Without the option the trained scales are off the grid.
    let plain = tmp.path().join("plain");
    train(&load(&config(&plain, ""), tmp.path()).unwrap(), &RunOptions::default()).unwrap();
    let (trained, _) = qat_train::train::load_trained(&plain, &device).unwrap();
    let (_, report) = qat_export::round_scales(trained, qat_export::HfDtype::Bf16).unwrap();
    assert!(report.changed * 2 > report.scales, "{report:?}");
}

/// `qat train CONFIG` as a scheduler drives it: SIGTERM in mid-run makes it finish the step,
/// write a checkpoint there (not at a `checkpoint.every` multiple) and exit with status 75;
/// the same command resumes from that step and ends bit-identical to an uninterrupted run; run
/// again it says the run is finished and exits 0.
#[test]
fn sigterm_checkpoints_and_the_same_command_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let steps = 300;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let write = |out: &Path| {
        let p = tmp.path().join(format!("{}.toml", out.file_name().unwrap().to_string_lossy()));
        std::fs::write(&p, config(out, "")).unwrap();
        p
    };
    let qat = |cfg: &Path| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_qat"));
        c.args(["--threads", "1", "train", "--quiet"]).arg(cfg).args(["--set", &format!("train.max_steps={steps}"), "--set", "checkpoint.every=1000"]);
        c
    };
    let out = qat(&write(&a)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg_b = write(&b);
    let child = qat(&cfg_b).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let train_lines = || std::fs::read_to_string(b.join("metrics.jsonl")).unwrap_or_default().matches("\"type\":\"train\"").count();
    let started = std::time::Instant::now();
    while train_lines() < 5 {
        assert!(started.elapsed().as_secs() < 120, "no training steps after 120 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let stopped = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(75), "{stderr}");
    let step: usize =
        stderr.split("stopped by SIGTERM at step ").nth(1).and_then(|t| t.split(':').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{stderr}"));
    assert!(step >= 5 && step < steps, "stopped at step {step}");
    assert!(b.join(format!("checkpoints/step-{step:08}/state.json")).exists(), "no checkpoint at the stopping step {step}");
    let resumed = qat(&cfg_b).output().unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("at step {step}")), "did not resume from step {step}: {stderr}");
    assert!(std::fs::read(a.join("qat_params.safetensors")).unwrap() == std::fs::read(b.join("qat_params.safetensors")).unwrap(), "resumed run differs");
    let summary = |d: &Path| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(d.join("summary.json")).unwrap()).unwrap() };
    assert_eq!(summary(&a)["losses"], summary(&b)["losses"]);
    let again = qat(&cfg_b).output().unwrap();
    assert!(again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already finished"), "{}", String::from_utf8_lossy(&again.stderr));
    let changed = qat(&cfg_b).args(["--set", "train.lr=1e-3"]).output().unwrap();
    assert_eq!(changed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&changed.stderr).contains("of a different config"), "{}", String::from_utf8_lossy(&changed.stderr));
}
