//! The ordering a correct 2-bit toolkit must produce on stories260K (the small-scale version
//! of the headline experiment): round-to-nearest INT2 collapses, QAT SEQ-2 recovers, and SEQ-2
//! beats the INT2 {-2,-1,0,1} grid under the same QAT budget.

use std::path::{Path, PathBuf};

use qat_train::{RunConfig, RunOptions, train};

fn run(tmp: &Path, name: &str, overrides: &[&str]) -> qat_train::RunSummary {
    let cfg_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/stories260k_2bit.toml");
    let mut o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    o.push(format!("output.dir={:?}", tmp.join(name).display().to_string()));
    let mut cfg = RunConfig::load(&cfg_path, &o).unwrap();
    cfg.model.path = qat_testing::stories_model();
    cfg.data.sources[0].path = qat_testing::stories_text();
    cfg.data.cache_dir = Some(tmp.join("cache"));
    train(&cfg, &RunOptions::default()).unwrap().summary
}

#[test]
fn rtn_int2_collapses_and_qat_seq2_beats_qat_int2() {
    let tmp = tempfile::tempdir().unwrap();
    let val = |s: &qat_train::RunSummary| s.final_eval.val_loss.unwrap();
    let rtn_int2 = run(tmp.path(), "rtn_int2", &["quant.scheme=\"int\"", "quant.bits=2", "train.max_steps=0"]);
    let qat_seq2 = run(tmp.path(), "qat_seq2", &["train.max_steps=60", "checkpoint.every=0"]);
    let qat_int2 = run(tmp.path(), "qat_int2", &["quant.scheme=\"int\"", "quant.bits=2", "train.max_steps=60", "checkpoint.every=0"]);
    let (r, s, i) = (val(&rtn_int2), val(&qat_seq2), val(&qat_int2));
    let fp = qat_seq2.fp_eval.val_loss.unwrap();
    eprintln!(
        "val loss (ppl): FP {fp:.3} ({:.1}), RTN INT2 {r:.3} ({:.1}), QAT SEQ-2 {s:.3} ({:.1}), QAT INT2 {i:.3} ({:.1})",
        fp.exp(),
        r.exp(),
        s.exp(),
        i.exp()
    );
    assert!(r.exp() > 10.0 * s.exp(), "RTN INT2 perplexity {} should be far above QAT SEQ-2's {}", r.exp(), s.exp());
    assert!(s < i, "QAT SEQ-2 ({s}) should beat QAT INT2 ({i}) at the same budget");
}
