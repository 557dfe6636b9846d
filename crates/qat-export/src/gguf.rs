//! GGUF export for llama.cpp: architecture metadata, tokenizer from `tokenizer.json`, tensors
//! in llama.cpp naming with exact quantized types and a chosen type for the rest.

use std::collections::BTreeMap;
use std::path::Path;

use qat_gguf::hf::{gguf_arch, gguf_name, permute_heads, permute_rows};
use qat_gguf::{GgmlType, GgufWriter, Value, blocks};
use qat_model::{Arch, CausalLm};
use qat_quant::QuantizedWeight;
use serde_json::Value as Json;

use crate::ExportError;
use crate::encode::{choose_type, encode};
use crate::round::HfDtype;

/// Type of tensors that are not quantized (embeddings, an unquantized lm_head, biases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "lower"))]
pub enum HighPrecision {
    F32,
    F16,
    Bf16,
    #[serde(rename = "q8_0")]
    #[cfg_attr(feature = "clap", value(name = "q8_0"))]
    Q8_0,
}

/// llama.cpp's tensor of Llama 3 RoPE frequency factors (no counterpart among HF tensors).
pub const ROPE_FREQS: &str = "rope_freqs.weight";

/// One written tensor, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TensorReport {
    pub name: String,
    pub shape: Vec<usize>,
    pub ggml_type: String,
    pub bytes: u64,
    /// Why the type differs from the scheme's natural one, if it does.
    pub fallback: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GgufReport {
    pub tensors: Vec<TensorReport>,
    pub file_bytes: u64,
    pub n_params: u64,
    pub bits_per_weight: f64,
}

/// llama.cpp's pre-tokenizer name for a tokenizer.json, by the structure of its pre-tokenizer.
fn pre_tokenizer_name(tok: &Json, model_type: &str) -> Result<&'static str, ExportError> {
    let pre = &tok["pre_tokenizer"];
    let kinds: Vec<&str> = match pre["type"].as_str() {
        Some("Sequence") => pre["pretokenizers"].as_array().map(|a| a.iter().filter_map(|p| p["type"].as_str()).collect()).unwrap_or_default(),
        Some(t) => vec![t],
        None => vec![],
    };
    Ok(match (model_type, kinds.as_slice()) {
        ("hunyuan_v1_dense", _) => "hunyuan-dense",
        ("qwen2" | "qwen3", _) => "qwen2",
        (_, ["Digits", "ByteLevel"]) => "smollm",
        (_, ["ByteLevel"]) => "gpt-2",
        (_, ["Split", "ByteLevel"]) => "llama-bpe",
        _ => {
            return Err(ExportError::Unsupported(format!("cannot tell llama.cpp's pre-tokenizer for pre_tokenizer {pre}")));
        }
    })
}

/// llama.cpp token types.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// The merges of a BPE `tokenizer.json` as `(left, right)` pairs, in rank order (either of
/// its two spellings: `"left right"` strings or two-element arrays).
fn bpe_merges(m: &Json, path: &Path) -> Result<Vec<(String, String)>, ExportError> {
    let unreadable = |i: usize| ExportError::file(path, format!("model.merges[{i}] is not a pair of tokens"));
    m["merges"]
        .as_array()
        .ok_or_else(|| ExportError::file(path, "model.merges missing"))?
        .iter()
        .enumerate()
        .map(|(i, x)| match x {
            Json::String(s) => s.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| unreadable(i)),
            Json::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
                _ => Err(unreadable(i)),
            },
            _ => Err(unreadable(i)),
        })
        .collect()
}

/// Whether a SentencePiece-style tokenizer.json prepends `▁` to the text (llama.cpp's
/// `add_space_prefix`): a `Prepend` normalizer (Llama 2 conversions) or a `Metaspace`
/// pre-tokenizer that prepends.
fn adds_space_prefix(tok: &Json) -> bool {
    let steps = |v: &Json, list: &str| -> Vec<Json> {
        match v[list].as_array() {
            Some(a) => a.clone(),
            None if v.is_object() => vec![v.clone()],
            None => vec![],
        }
    };
    let prepend = steps(&tok["normalizer"], "normalizers").iter().any(|n| n["type"] == "Prepend" && n["prepend"] == "▁");
    let metaspace = steps(&tok["pre_tokenizer"], "pretokenizers").iter().any(|p| p["type"] == "Metaspace" && p["prepend_scheme"] != "never");
    prepend || metaspace
}

/// Tokenizer metadata (`tokenizer.ggml.*`) from a BPE `tokenizer.json`: byte-level BPE
/// (GPT-2 style, llama.cpp's `gpt2` model with merges) or SentencePiece-style BPE with byte
/// fallback (Llama 2 style, llama.cpp's `llama` model, where merge order becomes token scores).
fn tokenizer_metadata(w: &mut GgufWriter, src: &Path, model: &CausalLm) -> Result<(), ExportError> {
    let path = src.join("tokenizer.json");
    let tok: Json = serde_json::from_str(&std::fs::read_to_string(&path).map_err(|e| ExportError::file(&path, e))?).map_err(|e| ExportError::file(&path, e))?;
    let m = &tok["model"];
    if m["type"].as_str() != Some("BPE") {
        return Err(ExportError::file(&path, format!("model.type {}: only BPE tokenizers can be written to GGUF", m["type"])));
    }
    let sentencepiece = m["byte_fallback"].as_bool() == Some(true);
    let vocab = m["vocab"].as_object().ok_or_else(|| ExportError::file(&path, "model.vocab missing"))?;
    let mut tokens: BTreeMap<u64, String> = vocab.iter().filter_map(|(k, v)| Some((v.as_u64()?, k.clone()))).collect();
    let mut types: BTreeMap<u64, i32> = BTreeMap::new();
    if sentencepiece {
        for (&id, t) in &tokens {
            if t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') {
                types.insert(id, BYTE);
            }
        }
        if let Some(id) = m["unk_token"].as_str().and_then(|u| vocab.get(u)).and_then(Json::as_u64) {
            types.insert(id, UNKNOWN);
            w.set("tokenizer.ggml.unknown_token_id", Value::U32(id as u32));
        }
    }
    for a in tok["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (a["id"].as_u64(), a["content"].as_str()) else {
            continue;
        };
        tokens.insert(id, content.to_string());
        types.entry(id).or_insert(if a["special"].as_bool() == Some(true) { CONTROL } else { USER_DEFINED });
    }
    let n = model.config.vocab_size as u64;
    // The embedding may be padded past the tokenizer's vocabulary: fill with unused tokens.
    let list: Vec<String> = (0..n).map(|i| tokens.get(&i).cloned().unwrap_or_else(|| format!("[PAD{i}]"))).collect();
    let ty: Vec<Value> = (0..n).map(|i| Value::I32(if tokens.contains_key(&i) { *types.get(&i).unwrap_or(&NORMAL) } else { UNUSED })).collect();
    let merges = bpe_merges(m, &path)?;
    if sentencepiece {
        // llama.cpp's SentencePiece tokenizer merges the adjacent pair whose result has the
        // highest score; HF's BPE merges the pair of lowest rank. Score = −rank of the first
        // merge that makes a token gives the same order (checked against llama.cpp by
        // scripts/check_gguf_archs.py).
        let mut rank_of: BTreeMap<String, usize> = BTreeMap::new();
        for (r, (a, b)) in merges.iter().enumerate() {
            rank_of.entry(format!("{a}{b}")).or_insert(r);
        }
        let scores: Vec<Value> = list.iter().map(|t| Value::F32(rank_of.get(t).map_or(0.0, |&r| -(r as f32) - 1.0))).collect();
        w.set("tokenizer.ggml.model", Value::String("llama".into()));
        w.set("tokenizer.ggml.scores", Value::Array(6, scores));
        w.set("tokenizer.ggml.add_space_prefix", Value::Bool(adds_space_prefix(&tok)));
    } else {
        w.set("tokenizer.ggml.model", Value::String("gpt2".into()));
        w.set("tokenizer.ggml.pre", Value::String(pre_tokenizer_name(&tok, model.config.arch.model_type()).map_err(|e| ExportError::file(&path, e))?.into()));
        w.set("tokenizer.ggml.merges", Value::strings(merges.iter().map(|(a, b)| format!("{a} {b}"))));
    }
    w.set("tokenizer.ggml.tokens", Value::strings(list));
    w.set("tokenizer.ggml.token_type", Value::Array(5, ty));
    let cfg = &model.config;
    if let Some(b) = cfg.bos_token_id {
        w.set("tokenizer.ggml.bos_token_id", Value::U32(b));
    }
    if let Some(&e) = cfg.eos_token_ids.first() {
        w.set("tokenizer.ggml.eos_token_id", Value::U32(e));
    }
    if let Some(p) = cfg.pad_token_id {
        w.set("tokenizer.ggml.padding_token_id", Value::U32(p));
    }
    let tc_path = src.join("tokenizer_config.json");
    if let Ok(text) = std::fs::read_to_string(&tc_path) {
        let tc: Json = serde_json::from_str(&text).map_err(|e| ExportError::file(&tc_path, e))?;
        w.set("tokenizer.ggml.add_bos_token", Value::Bool(tc["add_bos_token"].as_bool().unwrap_or(false)));
        if let Some(t) = tc["chat_template"].as_str() {
            w.set("tokenizer.chat_template", Value::String(t.into()));
        }
    }
    Ok(())
}

fn arch_metadata(w: &mut GgufWriter, model: &CausalLm, name: &str) -> Result<&'static str, ExportError> {
    let c = &model.config;
    let arch = gguf_arch(c.arch.model_type()).ok_or_else(|| ExportError::Unsupported(format!("{} has no GGUF architecture", c.arch.model_type())))?;
    let k = |s: &str| format!("{arch}.{s}");
    w.set("general.architecture", Value::String(arch.into()));
    w.set("general.name", Value::String(name.into()));
    w.set("general.quantization_version", Value::U32(2));
    w.set(k("context_length"), Value::U32(c.max_position_embeddings as u32));
    w.set(k("embedding_length"), Value::U32(c.hidden_size as u32));
    w.set(k("block_count"), Value::U32(c.num_hidden_layers as u32));
    w.set(k("feed_forward_length"), Value::U32(c.intermediate_size as u32));
    w.set(k("attention.head_count"), Value::U32(c.num_attention_heads as u32));
    w.set(k("attention.head_count_kv"), Value::U32(c.num_key_value_heads as u32));
    w.set(k("attention.key_length"), Value::U32(c.head_dim as u32));
    w.set(k("attention.value_length"), Value::U32(c.head_dim as u32));
    w.set(k("attention.layer_norm_rms_epsilon"), Value::F32(c.rms_norm_eps as f32));
    // Hunyuan's alpha is already folded into rope_base (formats.md §3).
    w.set(k("rope.freq_base"), Value::F32(c.rope_base as f32));
    w.set(k("rope.dimension_count"), Value::U32(c.head_dim as u32));
    w.set(k("vocab_size"), Value::U32(c.vocab_size as u32));
    if c.rope_llama3.is_some() && c.arch != Arch::Llama {
        // llama.cpp reads the factors (the `rope_freqs` tensor) only for its llama architecture.
        return Err(ExportError::Unsupported(format!("Llama 3 RoPE scaling on a {} model cannot be expressed in GGUF", c.arch.model_type())));
    }
    if c.arch == Arch::HunyuanDense {
        w.set(k("rope.scaling.type"), Value::String("none".into()));
    }
    Ok(arch)
}

fn permuted(qw: &QuantizedWeight, heads: usize) -> QuantizedWeight {
    let [rows, cols] = qw.dims;
    let mut out = qw.clone();
    out.levels = permute_rows(&qw.levels, rows, cols, heads);
    // Per-row scale data moves with its row (per-tensor scales stay).
    let per_row = |v: &Vec<f32>| if v.len().is_multiple_of(rows) && v.len() >= rows { permute_rows(v, rows, v.len() / rows, heads) } else { v.clone() };
    out.steps = per_row(&qw.steps);
    out.offsets = per_row(&qw.offsets);
    out.super_scales = per_row(&qw.super_scales);
    out
}

/// Writes `model` as a GGUF file (atomically) with tokenizer data from `src` (the checkpoint
/// the run started from).
/// `hf_dtype` is the storage of the matching HF export: unquantized tensors are rounded to it
/// first, so that both files hold the same values.
pub fn export_gguf(model: &CausalLm, src: &Path, out: &Path, hp: HighPrecision, hf_dtype: HfDtype, name: &str) -> Result<GgufReport, ExportError> {
    let mut w = GgufWriter::new();
    arch_metadata(&mut w, model, name)?;
    tokenizer_metadata(&mut w, src, model)?;
    let cfg = &model.config;
    let mt = cfg.arch.model_type();
    let linears: BTreeMap<String, &qat_quant::QLinear> = model.linears().into_iter().collect();
    let mut reports = Vec::new();
    let mut n_params = 0u64;
    for qat_model::HfTensor { name: hf, path, shape, data: values } in model.hf_tensors() {
        let gname = gguf_name(mt, &hf).ok_or_else(|| ExportError::Unsupported(format!("tensor {hf} has no GGUF name")))?;
        let heads = permute_heads(mt, &hf, cfg.num_attention_heads, cfg.num_key_value_heads);
        let module = path.strip_suffix(".weight");
        let quantized = module.and_then(|m| linears.get(m)).and_then(|l| l.quantized_weight());
        let (ty, bytes, fallback) = match quantized {
            Some(qw) => {
                let qw = match heads {
                    Some(h) => permuted(&qw, h),
                    None => qw,
                };
                let (ty, fallback) = choose_type(&qw).map_err(|e| e.in_tensor(&hf))?;
                (ty, encode(&qw, ty).map_err(|e| e.in_tensor(&hf))?, fallback)
            }
            None => {
                let cols = if shape.len() == 2 { shape[1] } else { 1 };
                let values: Vec<f32> = match hf_dtype {
                    HfDtype::Bf16 => values.into_iter().map(|v| half::bf16::from_f32(v).to_f32()).collect(),
                    HfDtype::F32 => values,
                };
                let values = match heads {
                    Some(h) => permute_rows(&values, shape[0], cols, h),
                    None => values,
                };
                let ty = if shape.len() == 1 {
                    GgmlType::F32
                } else {
                    match hp {
                        HighPrecision::F32 => GgmlType::F32,
                        HighPrecision::F16 => GgmlType::F16,
                        HighPrecision::Bf16 => GgmlType::BF16,
                        HighPrecision::Q8_0 if cols % 32 == 0 => GgmlType::Q8_0,
                        HighPrecision::Q8_0 => GgmlType::F16,
                    }
                };
                if ty == GgmlType::F16 && values.iter().any(|v| v.is_finite() && v.abs() > 65504.0) {
                    return Err(ExportError::Unsupported("values exceed the f16 range; export with --hp-type bf16".into()).in_tensor(hf));
                }
                let fallback =
                    (hp == HighPrecision::Q8_0 && ty == GgmlType::F16 && shape.len() == 2).then(|| format!("F16: rows of {cols} do not fit Q8_0 blocks"));
                (ty, blocks::quantize(ty, &values).map_err(|e| ExportError::from(e).in_tensor(&hf))?, fallback)
            }
        };
        n_params += shape.iter().product::<usize>() as u64;
        reports.push(TensorReport { name: gname.clone(), shape: shape.clone(), ggml_type: format!("{ty:?}"), bytes: bytes.len() as u64, fallback });
        w.add_tensor(gname, &shape, ty, bytes)?;
    }
    if let Some(factors) = cfg.rope_freq_factors() {
        // Llama 3 RoPE scaling: llama.cpp divides each frequency by these factors.
        let values: Vec<f32> = factors.iter().map(|&f| f as f32).collect();
        let bytes = blocks::quantize(GgmlType::F32, &values).map_err(|e| ExportError::from(e).in_tensor(ROPE_FREQS))?;
        reports.push(TensorReport { name: ROPE_FREQS.into(), shape: vec![values.len()], ggml_type: "F32".into(), bytes: bytes.len() as u64, fallback: None });
        w.add_tensor(ROPE_FREQS, &[values.len()], GgmlType::F32, bytes)?;
    }
    if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ExportError::file(dir, e))?;
    }
    w.write(out)?;
    let file_bytes = std::fs::metadata(out).map_err(|e| ExportError::file(out, e))?.len();
    let data_bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    Ok(GgufReport { tensors: reports, file_bytes, n_params, bits_per_weight: data_bytes as f64 * 8.0 / n_params as f64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_in_both_spellings_and_bad_ones_named() {
        let p = Path::new("tokenizer.json");
        let m = serde_json::json!({"merges": ["Ġ t", ["h", "e"]]});
        assert_eq!(bpe_merges(&m, p).unwrap(), [("Ġ".to_string(), "t".to_string()), ("h".to_string(), "e".to_string())]);
        let e = bpe_merges(&serde_json::json!({"merges": ["a b", "nospace"]}), p).unwrap_err().to_string();
        assert!(e.contains("tokenizer.json") && e.contains("model.merges[1]"), "{e}");
        assert!(bpe_merges(&serde_json::json!({}), p).unwrap_err().to_string().contains("model.merges missing"));
    }

    #[test]
    fn space_prefix_from_normalizer_or_metaspace() {
        let prepend = serde_json::json!({"normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}]}});
        let meta = serde_json::json!({"normalizer": null, "pre_tokenizer": {"type": "Metaspace", "prepend_scheme": "first"}});
        let never = serde_json::json!({"normalizer": null, "pre_tokenizer": {"type": "Metaspace", "prepend_scheme": "never"}});
        assert!(adds_space_prefix(&prepend) && adds_space_prefix(&meta) && !adds_space_prefix(&never));
    }
}
