//! The trainer end to end on stories260K: QAT recovers the 2-bit gap, an interrupted run
//! resumes to identical results, and bad configs fail before training.

mod common;

use std::path::{Path, PathBuf};

use qat_train::{RunConfig, RunOptions, train};

use common::stories_config as config;

fn load(text: &str, dir: &Path) -> Result<RunConfig, String> {
    let p = dir.join(format!("cfg-{}.toml", text.len()));
    std::fs::write(&p, text).unwrap();
    RunConfig::load(&p, &[]).map_err(|e| e.to_string())
}

/// The acceptance check of the trainer: 60 steps of 8×256 tokens (the shipped config, cut
/// from 150 steps to keep the test near 25 s). Measured when this test was written: val loss
/// FP 1.922, RTN SEQ-2 5.449, QAT 2.274, i.e. 90.0% of the gap closed. The run is
/// deterministic (fixed seed and data order, deterministic CPU kernels), so the margin only
/// has to absorb differences between machines; the test asserts 75%, far from RTN's 0%.
#[test]
fn qat_recovers_most_of_the_rtn_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/stories260k_2bit.toml");
    let out = tmp.path().join("run");
    let mut cfg = RunConfig::load(&cfg_path, &["train.max_steps=60".into(), format!("output.dir=\"{}\"", out.display())]).unwrap();
    cfg.model.path = common::stories_model();
    cfg.data.sources[0].path = common::stories_text();
    cfg.data.cache_dir = Some(tmp.path().join("cache"));
    let trained = train(&cfg, &RunOptions::default()).unwrap();
    let s = &trained.summary;
    let (fp, rtn, qat) = (s.fp_eval["val_loss"].as_f64().unwrap(), s.first_eval["val_loss"].as_f64().unwrap(), s.final_eval["val_loss"].as_f64().unwrap());
    eprintln!("val loss: FP {fp:.4}, RTN SEQ-2 {rtn:.4}, QAT {qat:.4}; recovered {:.3}", s.val_gap_recovered.unwrap());
    assert!(rtn > fp + 1.0, "2-bit RTN should hurt badly: FP {fp}, RTN {rtn}");
    assert!(s.val_gap_recovered.unwrap() > 0.75, "QAT recovered only {:?} of the gap", s.val_gap_recovered);
    // The caller writes the Hugging Face checkpoint: from the returned model, or (a run that had
    // finished before) rebuilt from the run directory, with the same bytes.
    qat_train::save_final(&cfg, s, trained.model.as_ref()).unwrap();
    assert!(out.join("final/model.safetensors").exists() && out.join("final/qat_quant.json").exists());
    let written = std::fs::read(out.join("final/model.safetensors")).unwrap();
    std::fs::remove_dir_all(out.join("final")).unwrap();
    qat_train::save_final(&cfg, s, None).unwrap();
    assert!(std::fs::read(out.join("final/model.safetensors")).unwrap() == written, "the rebuilt final model differs");
}

#[test]
fn interrupted_and_resumed_run_is_identical() {
    assert_resume_identical("");
}

/// A run initialised by GPTQ: the resumed run skips calibration (its result is in the
/// checkpoint) and ends identical to the uninterrupted one.
#[test]
fn calibrated_run_resumes_identically() {
    let tmp = assert_resume_identical("[calibration]\nmethod = \"gptq\"\nrows = 8");
    assert!(tmp.path().join("a/calibration.json").exists());
}

/// `[quant] round_scales`: every step leaves the scales on export's exact grid (export's own
/// rounding then changes nothing), the unrounded scales carried by the optimizer let them still
/// move, and a resumed run restores those too.
#[test]
fn scale_rounding_in_training_keeps_scales_exportable() {
    let rounding = "[quant]\nround_scales = \"bf16\"";
    let tmp = assert_resume_identical(rounding);
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
    let (start, _) = start.quantize(&cfg.quant).unwrap();
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

/// Runs 6 steps uninterrupted (in `a`) and interrupted after 4 then resumed (in `b`) and
/// checks that losses and final parameters are identical.
fn assert_resume_identical(extra: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let full = train(&load(&config(&a, extra), tmp.path()).unwrap(), &RunOptions::default()).unwrap().summary;
    let cfg_b = load(&config(&b, extra), tmp.path()).unwrap();
    let e = train(&cfg_b, &RunOptions { stop_after: Some(4), ..Default::default() }).unwrap_err().to_string();
    assert!(e.contains("stopped after 4"), "{e}");
    // Step 4 is past the step-3 checkpoint: resume restarts from step 3.
    let resumed = train(&RunConfig::load(&b.join("config.toml"), &[]).unwrap(), &RunOptions { resume: true, ..Default::default() }).unwrap().summary;
    assert_eq!(full.losses.len(), 6);
    assert_eq!(full.losses, resumed.losses, "loss sequences differ");
    let pa = std::fs::read(a.join("qat_params.safetensors")).unwrap();
    let pb = std::fs::read(b.join("qat_params.safetensors")).unwrap();
    assert!(pa == pb, "final weights and scales differ");
    // The same config again: the finished run reports its summary and trains nothing.
    let again = train(&cfg_b, &RunOptions::default()).unwrap();
    assert!(again.model.is_none(), "a finished run trains nothing");
    assert_eq!(again.summary.losses, full.losses);
    assert_eq!(std::fs::read(b.join("qat_params.safetensors")).unwrap(), pb, "a finished run is not touched");
    // Another config over the same directory is refused, whatever the directory holds.
    let mut other = cfg_b.clone();
    other.train.lr *= 2.0;
    let e = train(&other, &RunOptions::default()).unwrap_err().to_string();
    assert!(e.contains("holds a finished run of a different config"), "{e}");
    tmp
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

#[test]
fn bad_configs_fail_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let good = config(&out, "");
    let cases: Vec<(String, &str)> = vec![
        (good.replace("[model]", "[model\n"), "malformed TOML"),
        (good.replace("lr = 2e-3", "lr = 2e-3\nlearning_rate = 1.0"), "learning_rate"),
        (good.replace("batch_size = 4", "batch_size = \"four\""), "batch_size"),
        (good.replace("tinystories_val_subset.txt", "missing.txt"), "missing.txt"),
        (good.replace("[train]", "[train]\nmicro_batch_size = 3"), "micro_batch_size"),
        (format!("{good}\n[calibration]\nmethod = \"gptq\"\nrows = 0"), "calibration.rows"),
        (format!("{good}\n[calibration]\nmethod = \"gptq\"\nsamples = 4"), "samples"),
        (format!("{good}\n[calibration]\nmethod = \"awq\""), "awq"),
        (good.replace("[eval]", "[eval]\nmc = [\"no_such_task.jsonl\"]"), "eval.mc: "),
    ];
    for (text, want) in cases {
        let e = load(&text, tmp.path()).unwrap_err();
        assert!(e.contains(want), "expected an error about `{want}`, got: {e}");
    }
    // Errors found when the data and model are read, still before the first step.
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "\n\n\n").unwrap();
    let cfg = load(&good.replace(&common::stories_text().display().to_string(), &empty.display().to_string()), tmp.path()).unwrap();
    let e = train(&cfg, &RunOptions::default()).unwrap_err().to_string();
    assert!(e.contains("empty.txt") && e.contains("empty"), "{e}");
    let cfg = load(&config(&tmp.path().join("run2"), "").replace("seq_len = 64", "seq_len = 4096"), tmp.path()).unwrap();
    let e = train(&cfg, &RunOptions::default()).unwrap_err().to_string();
    assert!(e.contains("seq_len = 4096") && e.contains("max_position_embeddings"), "{e}");
    assert!(!tmp.path().join("run2/checkpoints").exists() && !out.join("checkpoints").exists());
}

#[test]
fn set_overrides_apply_and_unknown_keys_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("c.toml");
    std::fs::write(&p, config(&tmp.path().join("run"), "")).unwrap();
    let c =
        RunConfig::load(&p, &["train.lr=5e-5".into(), "data.mix.text=2".into(), "data.sources.0.weight=0.5".into(), "quant.scheme=ternary".into()]).unwrap();
    assert_eq!(c.train.lr, 5e-5);
    assert_eq!(c.data.mix["text"], 2.0);
    assert_eq!(c.data.sources[0].weight, 0.5);
    assert_eq!(c.quant.scheme, qat_quant::policy::SchemeChoice::Ternary);
    let e = RunConfig::load(&p, &["train.lrr=1".into()]).unwrap_err().to_string();
    assert!(e.contains("lrr"), "{e}");
    let e = RunConfig::load(&p, &["quant.scheme=int3".into()]).unwrap_err().to_string();
    assert!(e.contains("int3"), "{e}");
}

#[test]
fn divergence_is_skipped_counted_and_never_checkpointed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // The first update (lr 1e39 overflows f32) makes the weights non-finite: the checkpoint of
    // step 1 is refused rather than written, so nothing non-finite ever replaces a checkpoint.
    let text = config(&out, "")
        .replace("max_steps = 6", "max_steps = 10\nmax_consecutive_bad_steps = 3")
        .replace("lr = 2e-3", "lr = 1e39")
        .replace("every = 3", "every = 1");
    let cfg = load(&text, tmp.path()).unwrap();
    let e = train(&cfg, &RunOptions::default()).unwrap_err().to_string();
    assert!(e.contains("is not finite at step 1") && e.contains("checkpoint not written"), "{e}");
    assert!(qat_train::checkpoint::list(&out.join("checkpoints")).unwrap().is_empty());

    // With checkpoints only at the end, the NaN steps are skipped and counted, then the run stops.
    let out2 = tmp.path().join("run2");
    let text = config(&out2, "")
        .replace("max_steps = 6", "max_steps = 10\nmax_consecutive_bad_steps = 3")
        .replace("lr = 2e-3", "lr = 1e39")
        .replace("every = 3", "every = 0");
    let e = train(&load(&text, tmp.path()).unwrap(), &RunOptions::default()).unwrap_err().to_string();
    assert!(e.contains("3 consecutive steps had a non-finite loss"), "{e}");
    let metrics = std::fs::read_to_string(out2.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.matches("\"skipped\"").count(), 3, "{metrics}");
}

/// `model.compute_dtype = "bf16"`: matrix products in bf16, the rest f32. The losses of the
/// first steps follow the f32 run closely without being identical (the products really are
/// rounded).
#[test]
fn bf16_autocast_tracks_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, model_keys: &str| {
        let text = config(&tmp.path().join(name), "").replace("[model]\n", &format!("[model]\n{model_keys}\n"));
        train(&load(&text, tmp.path()).unwrap(), &RunOptions::default()).unwrap().summary
    };
    let full = run("f32", "");
    let half = run("bf16", "compute_dtype = \"bf16\"");
    eprintln!("f32 {:?}\nbf16 {:?}", full.losses, half.losses);
    assert_eq!(full.losses.len(), half.losses.len());
    assert!(full.losses.iter().zip(&half.losses).all(|(a, b)| (a - b).abs() < 0.02 * a), "bf16 drifted from f32");
    assert!(full.losses.iter().zip(&half.losses).any(|(a, b)| a != b), "bf16 losses are bit-identical to f32: not computed in bf16");
}
