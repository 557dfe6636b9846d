//! Broken checkpoints give one clear error naming the file and what is wrong, never a panic.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use qat_model::{CausalLm, Checkpoint};

fn fixture_copy() -> (tempfile::TempDir, PathBuf) {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    std::fs::create_dir(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    (tmp, dir)
}

fn load_err(dir: &Path) -> String {
    match Checkpoint::open(dir).and_then(|c| CausalLm::from_checkpoint(&c, &Device::flex())) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Rewrites model.safetensors with `edit` applied to the tensor map.
fn rewrite(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    edit(&mut tensors);
    let views: Vec<_> =
        tensors.iter().map(|(n, s, d)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

#[test]
fn truncated_safetensors() {
    let (_t, dir) = fixture_copy();
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("model.safetensors") && e.contains("truncated or corrupt"), "{e}");
    std::fs::write(&p, b"garbage").unwrap();
    assert!(load_err(&dir).contains("model.safetensors"));
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_listed_together() {
    let (_t, dir) = fixture_copy();
    rewrite(&dir, |t| {
        t.retain(|(n, _, _)| n != "model.layers.1.mlp.up_proj.weight");
        let norm = t.iter_mut().find(|(n, _, _)| n == "model.norm.weight").unwrap();
        norm.1 = vec![32, 2];
        t.push(("model.layers.9.extra.weight".into(), vec![1], vec![0; 4]));
    });
    let e = load_err(&dir);
    assert!(e.contains("missing tensor `model.layers.1.mlp.up_proj.weight` (expected shape [96, 64])"), "{e}");
    assert!(e.contains("tensor `model.norm.weight` has shape [32, 2], expected [64]"), "{e}");
    assert!(e.contains("unexpected tensor `model.layers.9.extra.weight`"), "{e}");
    assert!(e.contains(&dir.display().to_string()), "{e}");
}

#[test]
fn bad_configs() {
    let (_t, dir) = fixture_copy();
    let cfg = dir.join("config.json");
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, good.replace("\"llama\"", "\"gpt_neox\"")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("config.json") && e.contains("model_type") && e.contains("gpt_neox") && e.contains("supported"), "{e}");
    std::fs::write(&cfg, &good[..good.len() / 2]).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("config.json") && e.contains("malformed JSON"), "{e}");
    std::fs::write(&cfg, good.replace("\"hidden_size\": 64", "\"hidden_size\": \"big\"")).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("hidden_size") && e.contains("positive integer"), "{e}");
    std::fs::remove_file(&cfg).unwrap();
    assert!(load_err(&dir).contains("config.json"));
}

#[test]
fn sharded_checkpoints_load_and_bad_index_is_reported() {
    let (_t, dir) = fixture_copy();
    // Split into two shards with an index, as transformers writes large models.
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut map = serde_json::Map::new();
    let all = st.tensors();
    for (i, chunk) in all.chunks(all.len() / 2 + 1).enumerate() {
        let name = format!("model-0000{}-of-00002.safetensors", i + 1);
        let views: Vec<_> = chunk.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        safetensors::serialize_to_file(views, None, &dir.join(&name)).unwrap();
        chunk.iter().for_each(|(n, _)| {
            map.insert(n.clone(), name.clone().into());
        });
    }
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let ckpt = Checkpoint::open(&dir).unwrap();
    CausalLm::from_checkpoint(&ckpt, &Device::flex()).unwrap();
    std::fs::write(dir.join("model.safetensors.index.json"), "{\"weight_map\": 3}").unwrap();
    let e = load_err(&dir);
    assert!(e.contains("model.safetensors.index.json") && e.contains("weight_map"), "{e}");
}
