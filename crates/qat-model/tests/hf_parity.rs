//! Logits of qat's decoder vs transformers' on tiny random checkpoints of every supported
//! architecture (fixtures from `scripts/make_parity_fixtures.py`): batched with right padding,
//! and token by token through the KV cache.

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use qat_model::{AttentionBatch, CausalLm, Checkpoint};

const TOL: f32 = 1e-4;

fn fixture(model_type: &str) -> (CausalLm, serde_json::Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(model_type);
    let ckpt = Checkpoint::open(&dir).unwrap();
    let model = CausalLm::from_checkpoint(&ckpt, &Device::flex()).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    (model, expected)
}

fn as_rows(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check(model_type: &str) {
    let device = Device::flex();
    let (model, exp) = fixture(model_type);
    let ids: Vec<Vec<i64>> = exp["input_ids"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()).collect();
    let lengths: Vec<usize> = exp["lengths"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let (b, t) = (ids.len(), ids[0].len());
    let vocab = model.config.vocab_size;

    // Batched forward with right padding.
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.concat(), [b, t]), &device);
    let logits: Vec<f32> = model.forward(tokens, &AttentionBatch::causal(&lengths, t, 0, &device), None).into_data().try_to_vec().unwrap();
    for (row, rows) in exp["logits"].as_array().unwrap().iter().enumerate() {
        for (pos, want) in as_rows(rows).iter().enumerate() {
            let got = &logits[(row * t + pos) * vocab..][..vocab];
            let d = max_abs_diff(got, want);
            assert!(d <= TOL, "{model_type}: batched row {row} position {pos}: max |Δlogit| = {d}");
        }
    }

    // Incremental decoding of row 0: a 3-token prefix, then one token at a time.
    let want = as_rows(&exp["logits"][0]);
    let mut cache = model.new_cache();
    let mut pos = 0;
    for chunk in [3, 1, 1, 1, 1, 1, 1] {
        let part: Vec<i64> = ids[0][pos..pos + chunk].to_vec();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(part, [1, chunk]), &device);
        let batch = AttentionBatch::causal(&[chunk], chunk, cache.len(), &device);
        let got: Vec<f32> = model.forward(tokens, &batch, Some(&mut cache)).into_data().try_to_vec().unwrap();
        for i in 0..chunk {
            let d = max_abs_diff(&got[i * vocab..(i + 1) * vocab], &want[pos + i]);
            assert!(d <= TOL, "{model_type}: cached decoding position {}: max |Δlogit| = {d}", pos + i);
        }
        pos += chunk;
    }
    assert_eq!(cache.len(), pos);
}

#[test]
fn llama_matches_transformers() {
    check("llama");
}

#[test]
fn qwen2_matches_transformers() {
    check("qwen2");
}

#[test]
fn qwen3_matches_transformers() {
    check("qwen3");
}

#[test]
fn hunyuan_dense_matches_transformers() {
    check("hunyuan_v1_dense");
}
