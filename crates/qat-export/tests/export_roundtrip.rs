//! Export round trip on a real model: fake-quantized weights → bf16/f32 safetensors and GGUF →
//! read back → identical values, for every exported type (Q2_K, TQ2_0, Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0, BF16, F32).

use burn::tensor::Device;
use qat_export::{HfDtype, HighPrecision};
use qat_model::{CausalLm, Checkpoint};
use qat_quant::Policy;
use qat_quant::policy::{Overrides, SchemeChoice};
use std::sync::{Mutex, MutexGuard};

/// Each test holds an f32 import of SmolLM2 (~0.5 GB) and its exports (up to ~0.7 GB more) in a
/// temporary directory; run in parallel they filled a CI machine's disk. One at a time, and each
/// case's outputs removed once checked, the peak stays near 1.3 GB.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the others still run, one at a time.
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
#[ignore = "needs QAT_SMOLLM2_GGUF (scripts/test.sh)"]
fn every_type_round_trips_through_hf_and_gguf() {
    let _serial = one_at_a_time();
    let gguf = qat_testing::smollm2_gguf();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("smollm2");
    qat_gguf::import::import_gguf(&gguf, &src).unwrap();
    let device = Device::flex();
    // (scheme, bits, HF storage, expected ggml types of the decoder linears)
    let cases = [
        (SchemeChoice::Seq, 2, HfDtype::Bf16, HighPrecision::Bf16, vec!["Q2_K", "Q4_0"]),
        (SchemeChoice::Ternary, 2, HfDtype::Bf16, HighPrecision::Bf16, vec!["Q4_0", "TQ2_0"]),
        (SchemeChoice::Int, 8, HfDtype::F32, HighPrecision::F32, vec!["Q8_0"]),
        (SchemeChoice::Int, 5, HfDtype::F32, HighPrecision::F32, vec!["Q5_0"]),
        (SchemeChoice::Asym, 5, HfDtype::F32, HighPrecision::F32, vec!["Q5_1"]),
    ];
    for (scheme, bits, dtype, hp, want_types) in cases {
        let mut policy = Policy::default();
        policy.set(&Overrides { scheme: Some(scheme), bits: Some(bits), ..Default::default() });
        let model = CausalLm::from_checkpoint(&Checkpoint::open(&src).unwrap(), &device).unwrap();
        let (model, _) = model.prepare_qat(&policy).unwrap();
        let (model, report) = qat_export::round_scales(model, dtype).unwrap();
        assert!(report.max_relative_change < 0.02, "{report:?}");
        let name = format!("{scheme:?}{bits}");
        let hf = tmp.path().join(format!("{name}-hf"));
        let out = tmp.path().join(format!("{name}.gguf"));
        qat_export::export_hf(&model, &src, &hf, dtype, &serde_json::json!({})).unwrap();
        let r = qat_export::export_gguf(&model, &src, &out, hp, dtype, &name).unwrap();
        let mut types: Vec<&str> = r
            .tensors
            .iter()
            .filter(|t| (t.name.contains("ffn_") && !t.name.contains("norm")) || t.name.contains("attn_q."))
            .map(|t| t.ggml_type.as_str())
            .collect();
        types.sort();
        types.dedup();
        assert_eq!(types, want_types, "{name}");
        let v = qat_export::verify_export(&hf, &out).unwrap();
        assert!(v.ok(), "{name}: {:?}", v.tensors.iter().filter(|t| t.mismatches > 0).take(3).collect::<Vec<_>>());
        assert_eq!(v.tensors.len(), 272);
        // The HF export also reproduces the in-memory fake-quantized weights exactly.
        let ckpt = Checkpoint::open(&hf).unwrap();
        let (l_name, lin) = &model.linears()[7];
        let want: Vec<f32> = lin.effective_weight().into_data().try_to_vec::<f32>().unwrap();
        let got = ckpt.read_f32(&format!("model.{l_name}.weight")).unwrap();
        assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: {l_name} differs");
        // Size on disk matches the sum of the chosen types.
        let data: u64 = r.tensors.iter().map(|t| t.bytes).sum();
        assert!(r.file_bytes >= data && r.file_bytes < data + 6_000_000, "{} vs {data}", r.file_bytes);
        std::fs::remove_dir_all(&hf).unwrap();
        std::fs::remove_file(&out).unwrap();
    }
}

/// The deployable mix: `quant.format = "q2_k"` (Q2_K sub-scales where rows are a multiple of
/// 256, SEQ-2 per group of 32 as Q4_0 elsewhere) and the tied embeddings as INT4 per group of
/// 32 (Q4_0): bf16 safetensors and GGUF agree bit for bit, and the GGUF is smaller than the
/// 98 MB Q4_1 file the model came from.
#[test]
#[ignore = "needs QAT_SMOLLM2_GGUF (scripts/test.sh)"]
fn q2_k_format_with_quantized_embeddings_exports_exactly() {
    let _serial = one_at_a_time();
    let gguf = qat_testing::smollm2_gguf();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("smollm2");
    qat_gguf::import::import_gguf(&gguf, &src).unwrap();
    let policy: Policy = toml::from_str(
        "format = \"q2_k\"\ninit = \"mse\"\n[[rules]]\nmatch = \"embed_tokens\"\nformat = \"none\"\nscheme = \"int\"\nbits = 4\ngranularity = \"group\"\ngroup_size = 32",
    )
    .unwrap();
    let model = CausalLm::from_checkpoint(&Checkpoint::open(&src).unwrap(), &Device::flex()).unwrap();
    let (model, table) = model.prepare_qat(&policy).unwrap();
    assert_eq!(table.n_quantized(), 211, "{table}");
    let (model, _) = qat_export::round_scales(model, HfDtype::Bf16).unwrap();
    let (hf, out) = (tmp.path().join("hf"), tmp.path().join("q2k.gguf"));
    qat_export::export_hf(&model, &src, &hf, HfDtype::Bf16, &serde_json::json!({})).unwrap();
    let r = qat_export::export_gguf(&model, &src, &out, HighPrecision::Bf16, HfDtype::Bf16, "q2k").unwrap();
    let ty = |name: &str| r.tensors.iter().find(|t| t.name == name).unwrap().ggml_type.clone();
    assert_eq!(ty("token_embd.weight"), "Q4_0");
    assert_eq!(ty("blk.0.ffn_down.weight"), "Q2_K");
    assert_eq!(ty("blk.0.ffn_up.weight"), "Q4_0");
    let v = qat_export::verify_export(&hf, &out).unwrap();
    assert!(v.ok(), "{:?}", v.tensors.iter().filter(|t| t.mismatches > 0).take(3).collect::<Vec<_>>());
    assert!(r.file_bytes < 98_000_000, "{} bytes", r.file_bytes);
    eprintln!("GGUF {} bytes", r.file_bytes);
}

/// The asymmetric k-quant formats on a real model: `q4_k` (Q4_K where rows are a multiple of
/// 256 — `down_proj` — Q4_1 elsewhere) and `q2_k_asym` (Q2_K with scale and min nibbles, Q4_1
/// elsewhere): f32 safetensors and GGUF agree bit for bit.
#[test]
#[ignore = "needs QAT_SMOLLM2_GGUF (scripts/test.sh)"]
fn asymmetric_k_quant_formats_export_exactly() {
    let _serial = one_at_a_time();
    let gguf = qat_testing::smollm2_gguf();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("smollm2");
    qat_gguf::import::import_gguf(&gguf, &src).unwrap();
    for (format, down) in [("q4_k", "Q4_K"), ("q2_k_asym", "Q2_K")] {
        let policy: Policy = toml::from_str(&format!("format = \"{format}\"\ninit = \"mse\"")).unwrap();
        let model = CausalLm::from_checkpoint(&Checkpoint::open(&src).unwrap(), &Device::flex()).unwrap();
        let (model, table) = model.prepare_qat(&policy).unwrap();
        assert_eq!(table.n_quantized(), 210, "{table}");
        let (model, _) = qat_export::round_scales(model, HfDtype::F32).unwrap();
        let (hf, out) = (tmp.path().join(format!("hf-{format}")), tmp.path().join(format!("{format}.gguf")));
        qat_export::export_hf(&model, &src, &hf, HfDtype::F32, &serde_json::json!({})).unwrap();
        let r = qat_export::export_gguf(&model, &src, &out, HighPrecision::F32, HfDtype::F32, format).unwrap();
        let ty = |name: &str| r.tensors.iter().find(|t| t.name == name).unwrap().ggml_type.clone();
        assert_eq!(ty("blk.0.ffn_down.weight"), down, "{format}");
        assert_eq!(ty("blk.0.ffn_up.weight"), "Q4_1", "{format}");
        let v = qat_export::verify_export(&hf, &out).unwrap();
        assert!(v.ok(), "{format}: {:?}", v.tensors.iter().filter(|t| t.mismatches > 0).take(3).collect::<Vec<_>>());
        std::fs::remove_dir_all(&hf).unwrap();
        std::fs::remove_file(&out).unwrap();
    }
}

/// llama.cpp's own quantizer output as the reference: the PyPI SmolLM2 file stores every decoder
/// linear as Q4_1 (min/max per block of 32) and the embeddings as Q8_0. Imported, fake-quantized
/// with `format = "q4_1"` (asymmetric INT4, min/max init) and the embeddings as `q8_0`, rounded
/// for export and written again, every one of those tensors is byte for byte the block data
/// llama.cpp wrote: the asymmetric grid is exactly ggml's, so re-quantizing the model loses
/// nothing.
#[test]
#[ignore = "needs QAT_SMOLLM2_GGUF (scripts/test.sh)"]
fn q4_1_requantization_reproduces_llama_cpp_blocks() {
    let _serial = one_at_a_time();
    let gguf = qat_testing::smollm2_gguf();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("smollm2");
    qat_gguf::import::import_gguf(&gguf, &src).unwrap();
    let policy: Policy = toml::from_str("format = \"q4_1\"\n[[rules]]\nmatch = \"embed_tokens\"\nscheme = \"int\"\nformat = \"q8_0\"").unwrap();
    let model = CausalLm::from_checkpoint(&Checkpoint::open(&src).unwrap(), &Device::flex()).unwrap();
    let (model, _) = model.prepare_qat(&policy).unwrap();
    let (model, _) = qat_export::round_scales(model, HfDtype::F32).unwrap();
    let out = tmp.path().join("requant.gguf");
    qat_export::export_gguf(&model, &src, &out, HighPrecision::F32, HfDtype::F32, "requant").unwrap();
    let (orig, ours) = (qat_gguf::reader::GgufFile::open(&gguf).unwrap(), qat_gguf::reader::GgufFile::open(&out).unwrap());
    let mut compared = 0;
    for info in orig.tensors.iter().filter(|t| matches!(t.ggml_type, qat_gguf::GgmlType::Q4_1 | qat_gguf::GgmlType::Q8_0)) {
        let mine = ours.tensor(&info.name).unwrap();
        assert_eq!(mine.ggml_type, info.ggml_type, "{}", info.name);
        let (a, b) = (orig.tensor_bytes(info), ours.tensor_bytes(mine));
        if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
            panic!("{}: byte {i} (block {}) differs from llama.cpp's", info.name, i / info.ggml_type.type_size());
        }
        compared += 1;
    }
    assert_eq!(compared, 211, "210 Q4_1 linears and the Q8_0 embeddings");
}
