//! The `qat` binary end to end: on stories260K, train a few steps, export the run as Hugging
//! Face safetensors and as GGUF and check that the two hold the same values; import SmolLM2's
//! GGUF and check the checkpoint against it; and bad inputs end with a non-zero exit and a
//! message naming the file, field or flag.

use std::path::Path;
use std::process::{Command, Output};

fn qat(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qat")).current_dir(dir).args(args).output().unwrap()
}

/// Runs `qat ARGS` in `dir`, which must succeed; its standard output.
fn succeeds(dir: &Path, args: &[&str]) -> String {
    let out = qat(dir, args);
    assert!(out.status.success(), "qat {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `qat ARGS` in `dir`, which must fail with exit code `code`; its standard error.
fn fails(dir: &Path, args: &[&str], code: i32) -> String {
    let out = qat(dir, args);
    assert_eq!(out.status.code(), Some(code), "qat {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn train_export_verify_and_import() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // SEQ-2 per channel; stories260K's down_proj rows (172) fit no ggml block, so it stays f32.
    let quant = "[quant]\nscheme = \"seq\"\nbits = 2\n[[quant.rules]]\nmatch = \"layers.*.mlp.down_proj\"\nscheme = \"none\"";
    std::fs::write(dir.join("run.toml"), qat_testing::stories_config(&dir.join("run"), quant)).unwrap();
    succeeds(dir, &["train", "run.toml", "--quiet"]);
    for file in ["final/model.safetensors", "final/qat_quant.json", "qat_params.safetensors", "summary.json", "training.png"] {
        assert!(dir.join("run").join(file).exists(), "the run did not write {file}");
    }
    succeeds(dir, &["export", "run", "--format", "hf", "--out", "hf"]);
    succeeds(dir, &["export", "run", "--format", "gguf", "--out", "model.gguf"]);
    let verified = succeeds(dir, &["verify-export", "hf", "model.gguf"]);
    assert!(verified.contains("OK: all") && !verified.contains("MISMATCH"), "{verified}");
}

/// `qat import` writes a Hugging Face checkpoint holding exactly the GGUF's values (SmolLM2's
/// byte-level BPE vocabulary: stories260K's SentencePiece one cannot be imported).
#[test]
#[ignore = "needs QAT_SMOLLM2_GGUF"]
fn import_holds_the_gguf_values() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = qat_testing::smollm2_gguf();
    let gguf = gguf.to_str().unwrap();
    succeeds(tmp.path(), &["import", gguf, "imported"]);
    let verified = succeeds(tmp.path(), &["verify-export", "imported", gguf]);
    assert!(verified.contains("OK: all") && !verified.contains("MISMATCH"), "{verified}");
}

#[test]
fn bad_inputs_exit_non_zero_naming_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let e = fails(dir, &["train", "missing.toml"], 1);
    assert!(e.contains("missing.toml"), "{e}");
    std::fs::write(dir.join("typo.toml"), qat_testing::stories_config(&dir.join("run"), "").replace("lr = 2e-3", "lrr = 2e-3")).unwrap();
    let e = fails(dir, &["train", "typo.toml"], 1);
    assert!(e.contains("typo.toml") && e.contains("lrr"), "{e}");
    let e = fails(dir, &["export", "run", "--format", "zip", "--out", "x"], 2);
    assert!(e.contains("zip") && e.contains("hf") && e.contains("gguf"), "the flag's words are listed: {e}");
    let e = fails(dir, &["verify-export", "nowhere", "missing.gguf"], 1);
    assert!(e.contains("nowhere"), "{e}");
    assert!(!dir.join("run").exists(), "a failed command left a run directory");
}

/// `qat synthesize` writes documents sampled from the model as JSONL that a run reads as a data
/// source (distillation without a dataset); bad flags fail before anything is written.
#[test]
fn synthesized_documents_train_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = qat_testing::stories_model();
    let model = model.to_str().unwrap();
    let e = fails(dir, &["synthesize", model, "--out", "docs.jsonl", "--documents", "0"], 1);
    assert!(e.contains("--documents"), "{e}");
    assert!(!dir.join("docs.jsonl").exists(), "a failed command left its output");
    let said = succeeds(dir, &["synthesize", model, "--out", "docs.jsonl", "--documents", "40", "--tokens", "64", "--batch", "16", "--seed", "5"]);
    assert!(said.contains("40 documents"), "{said}");
    let text = std::fs::read_to_string(dir.join("docs.jsonl")).unwrap();
    let docs: Vec<String> = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string()).collect();
    assert_eq!(docs.len(), 40);
    assert!(docs.iter().all(|d| !d.trim().is_empty()), "an empty document");
    let config = qat_testing::stories_config(&dir.join("run"), "")
        .replace(qat_testing::stories_text().to_str().unwrap(), dir.join("docs.jsonl").to_str().unwrap())
        .replace("format = \"text\"", "format = \"jsonl\"");
    std::fs::write(dir.join("run.toml"), config).unwrap();
    succeeds(dir, &["train", "run.toml", "--quiet", "--set", "train.max_steps=2", "--set", "data.val_fraction=0.2"]);
    assert!(dir.join("run/summary.json").exists());
}
