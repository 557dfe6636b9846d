//! `qat import`: a GGUF model → a Hugging Face checkpoint directory (config.json, f32
//! model.safetensors, tokenizer.json, tokenizer_config.json with the chat template,
//! generation_config.json). The directory appears only when complete.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value as Json, json};

use crate::hf::{hf_model_type, hf_name, permute_heads, unpermute_rows};
use crate::{GgufError, GgufFile, Result};

/// What an import wrote, for the command's report.
#[derive(Debug)]
pub struct ImportSummary {
    pub model_type: String,
    pub n_tensors: usize,
    pub n_params: u64,
    /// `(ggml type, tensor count)`.
    pub types: BTreeMap<String, usize>,
}

fn corrupt(msg: impl Into<String>) -> GgufError {
    GgufError::Corrupt(msg.into())
}

/// Imports `gguf_path` into a new directory `out` (which must not exist).
pub fn import_gguf(gguf_path: &Path, out: &Path) -> Result<ImportSummary> {
    if out.exists() {
        return Err(GgufError::Io {
            path: out.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "output directory already exists"),
        });
    }
    let f = GgufFile::open(gguf_path)?;
    let arch = f.get_str("general.architecture")?.to_string();
    let model_type = hf_model_type(&arch)
        .ok_or_else(|| corrupt(format!("{}: architecture `{arch}` is not supported (supported: llama, qwen2, qwen3, hunyuan-dense)", f.path)))?;
    let key = |k: &str| format!("{arch}.{k}");
    let tokens = f.get_array("tokenizer.ggml.tokens")?;
    let n_head = f.get_u64(&key("attention.head_count"))? as usize;
    let n_head_kv = match f.get(&key("attention.head_count_kv")) {
        Some(v) => v.as_u64().ok_or_else(|| corrupt(format!("{} must be an integer", key("attention.head_count_kv"))))? as usize,
        None => n_head,
    };
    let hidden = f.get_u64(&key("embedding_length"))? as usize;
    let head_dim = match f.get(&key("attention.key_length")) {
        Some(v) => v.as_u64().ok_or_else(|| corrupt("attention.key_length must be an integer"))? as usize,
        None => hidden / n_head.max(1),
    };
    let tied = f.tensor("output.weight").is_err();

    let mut config = json!({
        "architectures": [arch_class(model_type)],
        "model_type": model_type,
        "hidden_size": hidden,
        "num_hidden_layers": f.get_u64(&key("block_count"))?,
        "intermediate_size": f.get_u64(&key("feed_forward_length"))?,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_head_kv,
        "head_dim": head_dim,
        "max_position_embeddings": f.get_u64(&key("context_length"))?,
        "rms_norm_eps": f.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
        // Hunyuan's dynamic alpha is already baked into freq_base (formats.md §3).
        "rope_theta": f.get(&key("rope.freq_base")).and_then(|v| v.as_f64()).unwrap_or(10000.0),
        "vocab_size": tokens.len(),
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "attention_bias": false,
        "torch_dtype": "float32",
    });
    if model_type == "hunyuan_v1_dense" {
        config["use_qk_norm"] = json!(true);
    }
    let special = |k: &str| f.get(&format!("tokenizer.ggml.{k}")).and_then(|v| v.as_u64());
    for (hf, g) in [("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"), ("pad_token_id", "padding_token_id")] {
        if let Some(id) = special(g) {
            config[hf] = json!(id);
        }
    }

    // Tensors: dequantize to f32, rename, undo llama's q/k permutation.
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut types = BTreeMap::new();
    let mut n_params = 0u64;
    for info in &f.tensors {
        let name = hf_name(model_type, &info.name).ok_or_else(|| corrupt(format!("{}: tensor `{}` has no Hugging Face counterpart", f.path, info.name)))?;
        if name.ends_with(".bias") && name.contains("self_attn.") {
            config["attention_bias"] = json!(true);
        }
        let shape = info.shape();
        let mut values = f.dequantize(&info.name)?;
        if let Some(heads) = permute_heads(model_type, &name, n_head, n_head_kv) {
            let cols = if shape.len() == 2 { shape[1] } else { 1 };
            values = unpermute_rows(&values, shape[0], cols, heads);
        }
        *types.entry(format!("{:?}", info.ggml_type)).or_insert(0) += 1;
        n_params += values.len() as u64;
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((name, shape, bytes));
    }

    let tokenizer = build_tokenizer_json(&f)?;
    let mut tok_cfg = json!({
        "model_max_length": config["max_position_embeddings"],
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": false,
    });
    let token_str = |id: Option<u64>| id.and_then(|i| tokens.get(i as usize)).and_then(|t| t.as_str()).map(str::to_string);
    for (field, k) in [("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("pad_token", "padding_token_id"), ("unk_token", "unknown_token_id")] {
        if let Some(s) = token_str(special(k)) {
            tok_cfg[field] = json!(s);
        }
    }
    if let Some(b) = f.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()) {
        tok_cfg["add_bos_token"] = json!(b);
    }
    if let Some(t) = f.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
        tok_cfg["chat_template"] = json!(t);
    }
    let mut gen_cfg = json!({});
    for k in ["bos_token_id", "eos_token_id", "pad_token_id"] {
        if !config[k].is_null() {
            gen_cfg[k] = config[k].clone();
        }
    }

    // Write everything into a sibling temp dir, then rename it into place.
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| GgufError::Io { path: p.clone(), source }
    };
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".qat-import-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir_in(parent)
        .map_err(io(parent))?;
    let pretty = |v: &Json| serde_json::to_string_pretty(v).expect("JSON values serialize");
    for (name, v) in [("config.json", &config), ("tokenizer.json", &tokenizer), ("tokenizer_config.json", &tok_cfg), ("generation_config.json", &gen_cfg)] {
        let p = tmp.path().join(name);
        std::fs::write(&p, pretty(v)).map_err(io(&p))?;
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).expect("sizes match")))
        .collect();
    let st = tmp.path().join("model.safetensors");
    safetensors::serialize_to_file(views, None, &st)
        .map_err(|e| GgufError::Io { path: st.display().to_string(), source: std::io::Error::other(e.to_string()) })?;
    let kept = tmp.keep();
    std::fs::rename(&kept, out).map_err(io(out))?;
    Ok(ImportSummary { model_type: model_type.to_string(), n_tensors: tensors.len(), n_params, types })
}

fn arch_class(model_type: &str) -> &'static str {
    match model_type {
        "llama" => "LlamaForCausalLM",
        "qwen2" => "Qwen2ForCausalLM",
        "qwen3" => "Qwen3ForCausalLM",
        _ => "HunYuanDenseV1ForCausalLM",
    }
}

/// Pre-tokenizers of the byte-level BPE vocabularies qat imports, as their upstream
/// `tokenizer.json` files define them (keyed by `tokenizer.ggml.pre`).
fn pre_tokenizer(pre: &str) -> Option<Json> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    Some(match pre {
        // SmolLM / SmolLM2 (HuggingFaceTB): single digits, then GPT-2 byte level.
        "smollm" => {
            json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]})
        }
        "gpt-2" | "default" => byte_level(true),
        "llama-bpe" | "llama3" => json!({"type": "Sequence", "pretokenizers": [
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
            byte_level(false)]}),
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
            byte_level(false)]}),
        _ => return None,
    })
}

/// Rebuilds a `tokenizer.json` from the GGUF vocabulary (byte-level BPE, `tokenizer.ggml.model
/// = gpt2`): vocab and merges as stored, control and user-defined tokens as added tokens.
fn build_tokenizer_json(f: &GgufFile) -> Result<Json> {
    let model = f.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(corrupt(format!("{}: tokenizer.ggml.model = `{model}`: only byte-level BPE (`gpt2`) vocabularies can be imported", f.path)));
    }
    let pre_name = f.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default");
    let pre = pre_tokenizer(pre_name)
        .ok_or_else(|| corrupt(format!("{}: tokenizer.ggml.pre = `{pre_name}` is not supported (supported: smollm, gpt-2, llama-bpe, qwen2)", f.path)))?;
    let tokens = f.get_array("tokenizer.ggml.tokens")?;
    let types = f.get("tokenizer.ggml.token_type").and_then(|v| v.as_array()).unwrap_or(&[]);
    let merges = f.get_array("tokenizer.ggml.merges")?;
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        let s = t.as_str().ok_or_else(|| corrupt(format!("tokenizer.ggml.tokens[{id}] is not a string")))?;
        vocab.insert(s.to_string(), json!(id));
        let ty = types.get(id).and_then(|v| v.as_i64()).unwrap_or(1);
        if ty == 3 || ty == 4 {
            added.push(json!({"id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": ty == 4, "special": ty == 3}));
        }
    }
    let merges: Vec<Json> = merges
        .iter()
        .enumerate()
        .map(|(i, m)| m.as_str().map(|s| json!(s)).ok_or_else(|| corrupt(format!("tokenizer.ggml.merges[{i}] is not a string"))))
        .collect::<Result<_>>()?;
    let add_bos = f.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false);
    let bos = f.get("tokenizer.ggml.bos_token_id").and_then(|v| v.as_u64());
    let post = match (add_bos, bos.and_then(|b| tokens.get(b as usize)).and_then(|t| t.as_str())) {
        (true, Some(b)) => json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {b: {"id": b, "ids": [bos], "tokens": [b]}}}),
        _ => Json::Null,
    };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges}
    }))
}
