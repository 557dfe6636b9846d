//! `qat rotate`: the rotated checkpoint of every supported architecture still gives
//! transformers' logits of the original (the parity fixtures, whose norms are random, not ones),
//! has norms of ones and an untied head, and the orthogonal matrices are orthogonal.

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use qat_model::rotate::{hadamard, orthogonal, rotate_checkpoint};
use qat_model::{AttentionBatch, CausalLm, Checkpoint, Rotation};
use rand::{SeedableRng, rngs::StdRng};

fn fixture_dir(model_type: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(model_type)
}

/// Largest |M·Mᵀ − I| entry.
fn orthogonality_error(m: &[f64], n: usize) -> f64 {
    let mut worst: f64 = 0.0;
    for i in 0..n {
        for j in 0..n {
            let dot: f64 = (0..n).map(|k| m[i * n + k] * m[j * n + k]).sum();
            worst = worst.max((dot - if i == j { 1.0 } else { 0.0 }).abs());
        }
    }
    worst
}

#[test]
fn hadamard_matrices_exist_for_powers_of_two_times_powers_of_twelve() {
    for n in [1, 2, 12, 24, 64, 144, 576] {
        let h = hadamard(n).unwrap_or_else(|| panic!("order {n}"));
        assert!(h.iter().all(|v| v.abs() == 1.0), "order {n}: entries must be ±1");
        let scaled: Vec<f64> = h.iter().map(|v| v / (n as f64).sqrt()).collect();
        assert!(orthogonality_error(&scaled, n) < 1e-12, "order {n}: H·Hᵀ ≠ n·I");
    }
    for n in [0, 3, 7, 28, 896] {
        assert!(hadamard(n).is_none(), "order {n} is not built");
    }
    let err = orthogonal(Rotation::Hadamard, 896, &mut StdRng::seed_from_u64(0)).unwrap_err();
    assert!(err.contains("896") && err.contains("random"), "{err}");
}

#[test]
fn a_head_dim_without_a_hadamard_matrix_is_an_error_naming_the_field() {
    // The llama fixture's head_dim is 16; no Hadamard matrix of order 40 is built.
    let tmp = tempfile::tempdir().unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture_dir("llama").join("config.json")).unwrap()).unwrap();
    config["head_dim"] = 40.into();
    let dir = tmp.path().join("odd");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(fixture_dir("llama").join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let src = Checkpoint::open(&dir).unwrap();
    let err = rotate_checkpoint(&src, Rotation::Hadamard, 0, &tmp.path().join("out")).err().expect("no Hadamard matrix of order 40").to_string();
    assert!(err.contains("head_dim") && err.contains("40") && err.contains("config.json"), "{err}");
    assert!(!tmp.path().join("out").exists(), "nothing is written");
}

#[test]
fn both_kinds_are_orthogonal_and_seeded() {
    for kind in [Rotation::Hadamard, Rotation::Random] {
        let a = orthogonal(kind, 48, &mut StdRng::seed_from_u64(3)).unwrap();
        assert!(orthogonality_error(&a, 48) < 1e-12, "{kind:?}");
        assert_eq!(a, orthogonal(kind, 48, &mut StdRng::seed_from_u64(3)).unwrap(), "{kind:?}: same seed, same matrix");
        assert_ne!(a, orthogonal(kind, 48, &mut StdRng::seed_from_u64(4)).unwrap(), "{kind:?}: another seed, another matrix");
    }
}

fn logits(dir: &std::path::Path, ids: &[Vec<i64>], lengths: &[usize]) -> (Vec<f32>, usize) {
    let device = Device::flex();
    let model = CausalLm::from_checkpoint(&Checkpoint::open(dir).unwrap(), &device).unwrap();
    let (b, t) = (ids.len(), ids[0].len());
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.concat(), [b, t]), &device);
    let out = model.forward(tokens, &AttentionBatch::causal(lengths, t, 0, &device), None);
    (out.into_data().try_to_vec::<f32>().unwrap(), model.config.vocab_size)
}

#[test]
fn rotated_checkpoints_compute_the_original_function() {
    for model_type in ["llama", "qwen2", "qwen3", "hunyuan_v1_dense"] {
        for kind in [Rotation::Hadamard, Rotation::Random] {
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("rotated");
            let src = Checkpoint::open(&fixture_dir(model_type)).unwrap();
            rotate_checkpoint(&src, kind, 7, &out).unwrap();
            let rotated = Checkpoint::open(&out).unwrap();
            assert!(!rotated.config.tie_word_embeddings, "{model_type}: the head is untied");
            for name in
                rotated.names().filter(|n| n.ends_with("norm.weight") && !n.contains("q_") && !n.contains("k_") && !n.contains("query") && !n.contains("key"))
            {
                assert!(rotated.read_f32(name).unwrap().iter().all(|&v| v == 1.0), "{model_type}: {name} is folded to ones");
            }
            let embed = rotated.read_f32("model.embed_tokens.weight").unwrap();
            assert_ne!(embed, src.read_f32("model.embed_tokens.weight").unwrap(), "{model_type}: the embeddings are rotated");

            let exp: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture_dir(model_type).join("expected.json")).unwrap()).unwrap();
            let ids: Vec<Vec<i64>> =
                exp["input_ids"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()).collect();
            let lengths: Vec<usize> = exp["lengths"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
            let (got, vocab) = logits(&out, &ids, &lengths);
            let t = ids[0].len();
            for (row, rows) in exp["logits"].as_array().unwrap().iter().enumerate() {
                for (pos, want) in rows.as_array().unwrap().iter().enumerate().take(lengths[row]) {
                    let got = &got[(row * t + pos) * vocab..][..vocab];
                    let d = want.as_array().unwrap().iter().zip(got).map(|(w, g)| (w.as_f64().unwrap() as f32 - g).abs()).fold(0.0, f32::max);
                    assert!(d <= 2e-4, "{model_type} {kind:?}: row {row} position {pos}: max |Δlogit| against transformers' original = {d}");
                }
            }
        }
    }
}

#[test]
fn rotating_into_an_existing_directory_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Checkpoint::open(&fixture_dir("llama")).unwrap();
    let err = rotate_checkpoint(&src, Rotation::Hadamard, 0, tmp.path()).err().expect("an existing output must be refused").to_string();
    assert!(err.contains("already exists") && err.contains(&tmp.path().display().to_string()), "{err}");
}

/// The llama fixture changed by `edit` (config) and with `extra` tensors (pseudo-random), as
/// a new checkpoint in `dir`.
fn variant(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value), extra: &[(&str, Vec<usize>)]) -> Checkpoint {
    let src = Checkpoint::open(&fixture_dir("llama")).unwrap();
    let mut config = src.config.raw.clone();
    edit(&mut config);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> =
        src.names().map(|n| (n.to_string(), src.shape(n).unwrap().to_vec(), src.read_f32(n).unwrap())).collect();
    for (i, (name, shape)) in extra.iter().enumerate() {
        tensors.push((name.to_string(), shape.clone(), qat_testing::pseudo_random(shape.iter().product(), 100 + i as u32, 0.5)));
    }
    qat_model::save::write_checkpoint_dir(dir, None, tensors, qat_model::SaveDtype::F32, &[("config.json", config.to_string())]).unwrap();
    Checkpoint::open(dir).unwrap()
}

/// Largest |Δlogit| between the model in `a` and the one in `b` over two rows of 7 tokens.
fn logit_distance(a: &std::path::Path, b: &std::path::Path) -> f32 {
    let ids = vec![vec![1, 5, 9, 33, 2, 64, 100], vec![7, 3, 3, 90, 12, 0, 45]];
    let (x, _) = logits(a, &ids, &[7, 7]);
    let (y, _) = logits(b, &ids, &[7, 7]);
    x.iter().zip(&y).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max)
}

#[test]
fn output_biases_and_a_tied_checkpoints_own_head_are_rotated_right() {
    // attention_bias adds q/k/v and o_proj biases to llama; a tied checkpoint that still ships
    // an lm_head computes with the embeddings (as transformers does), and so must its rotation.
    let tmp = tempfile::tempdir().unwrap();
    let (h, q, kv) = (64, 4 * 16, 2 * 16);
    let mut extra = Vec::new();
    for l in 0..2 {
        for (name, len) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv), ("o_proj", h)] {
            extra.push((format!("model.layers.{l}.self_attn.{name}.bias"), vec![len]));
        }
    }
    let extra: Vec<(&str, Vec<usize>)> = extra.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
    let biased = tmp.path().join("biased");
    let src = variant(&biased, |c| c["attention_bias"] = true.into(), &extra);
    assert!(src.config.o_bias && src.config.qkv_bias);
    for kind in [Rotation::Hadamard, Rotation::Random] {
        let out = tmp.path().join(format!("biased-{kind:?}"));
        rotate_checkpoint(&src, kind, 1, &out).unwrap();
        let d = logit_distance(&biased, &out);
        assert!(d < 1e-4, "{kind:?}: max |Δlogit| {d}");
    }

    let tied = tmp.path().join("tied");
    let src = variant(&tied, |c| c["tie_word_embeddings"] = true.into(), &[]);
    assert!(src.config.tie_word_embeddings && src.names().any(|n| n == "lm_head.weight"), "the fixture's own lm_head is kept");
    let out = tmp.path().join("tied-rotated");
    rotate_checkpoint(&src, Rotation::Hadamard, 1, &out).unwrap();
    let d = logit_distance(&tied, &out);
    assert!(d < 1e-4, "tied with its own lm_head: max |Δlogit| {d}");
}

#[test]
fn a_hidden_size_without_a_hadamard_matrix_is_an_error_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Checkpoint::open(&fixture_dir("llama")).unwrap().config.raw.clone();
    config["hidden_size"] = 40.into();
    let dir = tmp.path().join("odd");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(fixture_dir("llama").join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let err =
        rotate_checkpoint(&Checkpoint::open(&dir).unwrap(), Rotation::Hadamard, 0, &tmp.path().join("out")).err().expect("no Hadamard matrix of order 40");
    let err = err.to_string();
    assert!(err.contains("hidden_size") && err.contains("40") && err.contains("config.json"), "{err}");
}
