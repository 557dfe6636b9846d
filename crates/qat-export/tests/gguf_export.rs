//! GGUF export beyond byte-level BPE Llama models: Llama 3 RoPE scaling (llama.cpp's
//! `rope_freqs` tensor) and SentencePiece-style vocabularies (llama.cpp's `llama` tokenizer).
//! That llama.cpp runs these files like transformers is checked by scripts/check_gguf_archs.py
//! (docs/export.md); here the written structure is pinned down.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use qat_export::{HfDtype, HighPrecision};
use qat_gguf::{GgufFile, Value};
use qat_model::{CausalLm, Checkpoint};
use qat_quant::Policy;
use qat_quant::policy::{Overrides, SchemeChoice};

fn fixture(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../qat-model/tests/fixtures").join(arch)
}

/// Exports `src` quantized with `scheme` to HF and GGUF in `tmp` and checks they agree.
fn export(src: &Path, tmp: &Path, scheme: SchemeChoice, bits: u32) -> (CausalLm, GgufFile) {
    let mut policy = Policy::default();
    policy.set(&Overrides { scheme: Some(scheme), bits: Some(bits), ..Default::default() });
    let model = CausalLm::from_checkpoint(&Checkpoint::open(src).unwrap(), &Device::flex()).unwrap();
    let (model, _) = model.prepare_qat(&policy).unwrap();
    let (model, _) = qat_export::round_scales(model, HfDtype::F32).unwrap();
    let (hf, gguf) = (tmp.join("hf"), tmp.join("model.gguf"));
    qat_export::export_hf(&model, src, &hf, HfDtype::F32, &serde_json::json!({})).unwrap();
    qat_export::export_gguf(&model, src, &gguf, HighPrecision::F32, HfDtype::F32, "test").unwrap();
    let v = qat_export::verify_export(&hf, &gguf).unwrap();
    assert!(v.ok(), "{v:?}");
    (model, GgufFile::open(&gguf).unwrap())
}

#[test]
fn llama3_rope_scaling_is_written_as_rope_freqs() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("llama3");
    std::fs::create_dir(&src).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("llama").join(f), src.join(f)).unwrap();
    }
    // A byte-level vocabulary of the fixture's 128 tokens (GPT-2's symbols for bytes 0..127).
    let vocab: serde_json::Map<String, serde_json::Value> = (0u32..128)
        .map(|b| (char::from_u32(if (33..=126).contains(&b) { b } else { 256 + b - if b > 126 { 94 } else { 0 } }).unwrap().to_string(), b.into()))
        .collect();
    let tok = serde_json::json!({"model": {"type": "BPE", "vocab": vocab, "merges": []}, "pre_tokenizer": {"type": "ByteLevel"}, "added_tokens": []});
    std::fs::write(src.join("tokenizer.json"), tok.to_string()).unwrap();
    let (model, g) = export(&src, tmp.path(), SchemeChoice::Int, 4);
    let want: Vec<f32> = model.config.rope_freq_factors().expect("the llama fixture uses llama3 RoPE").iter().map(|&f| f as f32).collect();
    let got = g.dequantize("rope_freqs.weight").unwrap();
    assert_eq!(got, want);
    // factor 8; wavelengths against original_max_position_embeddings 16 / (1, 4): the lowest
    // frequencies are divided by the full factor, the highest (wavelength 2π, between 4 and 16)
    // is smoothed.
    assert_eq!(got[7], 8.0);
    assert!(got[0] > 1.0 && got[0] < 8.0, "{got:?}");
}

#[test]
fn sentencepiece_vocabulary_becomes_a_llama_tokenizer() {
    let src = qat_testing::stories_model();
    let tmp = tempfile::tempdir().unwrap();
    // Unquantized: stories260K's MLP rows (172) fit no ggml block size.
    let (_, g) = export(&src, tmp.path(), SchemeChoice::None, 4);
    assert_eq!(g.get_str("tokenizer.ggml.model").unwrap(), "llama");
    assert_eq!(g.get("tokenizer.ggml.add_space_prefix"), Some(&Value::Bool(true)));
    assert!(g.get("tokenizer.ggml.merges").is_none());
    let tokens: Vec<&str> = g.get_array("tokenizer.ggml.tokens").unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let types: Vec<i64> = g.get_array("tokenizer.ggml.token_type").unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let scores: Vec<f64> = g.get_array("tokenizer.ggml.scores").unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!((tokens.len(), types.len(), scores.len()), (512, 512, 512));
    let id = |t: &str| tokens.iter().position(|&x| x == t).unwrap();
    // <unk> unknown, <s> </s> control, byte pieces byte, the rest normal.
    assert_eq!((types[0], types[1], types[2], types[id("<0x0A>")], types[id("▁t")]), (2, 3, 3, 6, 1));
    // The first two merges of tokenizer.json (▁ t, h e) make the two highest-scored tokens.
    assert_eq!((scores[id("▁t")], scores[id("he")]), (-1.0, -2.0));
    // 165 merges make 151 distinct tokens (some tokens have two splits); only those are scored.
    assert!(scores.iter().all(|&s| s <= 0.0) && scores.iter().filter(|&&s| s < 0.0).count() == 151);
}
