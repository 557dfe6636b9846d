//! Export round trip on a real model: fake-quantized weights → bf16/f32 safetensors and GGUF →
//! read back → identical values, for every exported type (Q2_K, TQ2_0, Q4_0, Q8_0, BF16, F32).

mod common;

use burn::tensor::Device;
use qat_export::{HfDtype, HighPrecision};
use qat_model::{CausalLm, Checkpoint};
use qat_quant::Policy;
use qat_quant::policy::{Overrides, SchemeChoice};

#[test]
fn every_type_round_trips_through_hf_and_gguf() {
    let Some(gguf) = common::smollm2_gguf() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("smollm2");
    qat_gguf::import::import_gguf(&gguf, &src).unwrap();
    let device = Device::flex();
    // (scheme, bits, HF storage, expected ggml types of the decoder linears)
    let cases = [
        (SchemeChoice::Seq, 2, HfDtype::Bf16, HighPrecision::Bf16, vec!["Q2_K", "Q4_0"]),
        (SchemeChoice::Ternary, 2, HfDtype::Bf16, HighPrecision::Bf16, vec!["Q4_0", "TQ2_0"]),
        (SchemeChoice::Int, 8, HfDtype::F32, HighPrecision::F32, vec!["Q8_0"]),
    ];
    for (scheme, bits, dtype, hp, want_types) in cases {
        let mut policy = Policy::default();
        policy.set(&Overrides { scheme: Some(scheme), bits: Some(bits), ..Default::default() });
        let model = CausalLm::from_checkpoint(&Checkpoint::open(&src).unwrap(), &device).unwrap();
        let (model, _) = model.quantize(&policy).unwrap();
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
        let (l_name, lin) = &model.linears()[6];
        let want: Vec<f32> = lin.effective_weight().into_data().try_to_vec::<f32>().unwrap();
        let got = ckpt.read_f32(&format!("model.{l_name}.weight")).unwrap();
        assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: {l_name} differs");
        // Size on disk matches the sum of the chosen types.
        let data: u64 = r.tensors.iter().map(|t| t.bytes).sum();
        assert!(r.file_bytes >= data && r.file_bytes < data + 6_000_000, "{} vs {data}", r.file_bytes);
    }
}
