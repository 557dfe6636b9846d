//! `qat quantize --method gptq` end to end: the binary on stories260K.

use qat_testing as common;

/// `qat quantize --method gptq` (the binary): calibration rows from a run config's data mix,
/// the method recorded in the checkpoint; missing `--data` is a clear error.
#[test]
fn quantize_command_runs_gptq() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("run.toml");
    std::fs::write(&cfg, common::stories_config(&tmp.path().join("unused"), "")).unwrap();
    let model = common::stories_model();
    let out = tmp.path().join("gptq");
    let qat = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_qat")).args(args).output().unwrap();
    let ok = qat(&[
        "quantize",
        model.to_str().unwrap(),
        "--scheme",
        "seq",
        "--bits",
        "2",
        "--method",
        "gptq",
        "--data",
        cfg.to_str().unwrap(),
        "--rows",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let sidecar: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("qat_quant.json")).unwrap()).unwrap();
    assert_eq!(sidecar["method"], "gptq");
    assert_eq!(sidecar["calibration"]["tokens"], 8 * 64);
    let bad = qat(&["quantize", model.to_str().unwrap(), "--method", "gptq", "--out", tmp.path().join("x").to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--data"), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(!tmp.path().join("x").exists(), "no output on error");
}
