//! A stop signal during the calibration (GPTQ) stage stops the run after the block being
//! quantized, not after the whole stage and a training step: calibration keeps nothing to
//! resume from, and a scheduler kills what does not stop within its grace period.
//!
//! Its own test binary: the signal flag it raises is process-wide and stays set.

use qat_train::{RunConfig, RunOptions, TrainError, train};

#[test]
fn a_signal_during_calibration_stops_after_the_current_block() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let text = qat_testing::stories_config(&out, "[calibration]\nmethod = \"gptq\"\nrows = 8");
    let cfg = RunConfig::load(&qat_testing::config_file(tmp.path(), &text), &[]).unwrap();
    qat_train::interrupt::install().unwrap();
    // Delivered to this process and handled before `raise` returns: the flag is set before
    // the run starts, so the first check inside GPTQ (after block 1) sees it.
    signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
    match train(&cfg, &RunOptions::default()) {
        Err(TrainError::Stopped(msg)) => assert!(msg.contains("calibration stopped by SIGTERM after block 1/5"), "{msg}"),
        other => panic!("expected a stop in calibration, got {:?}", other.map(|t| t.summary.steps)),
    }
    assert!(!out.join("calibration.json").exists(), "a stopped calibration wrote its report");
    assert!(
        !out.join("checkpoints").exists() || std::fs::read_dir(out.join("checkpoints")).unwrap().next().is_none(),
        "a stopped calibration wrote a checkpoint"
    );
}
