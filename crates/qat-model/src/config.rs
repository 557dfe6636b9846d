//! `config.json` of a Hugging Face checkpoint, resolved into the one [`ModelConfig`] that the
//! decoder in [`crate::transformer`] needs.
//!
//! The raw JSON is kept alongside (`raw`) so that an export writes back exactly the config it
//! read. Every field that is read is checked here, and an error names the file and field.

use std::path::Path;

use serde_json::Value;

use crate::ModelError;

/// Architectures qat implements, by `config.json` `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Arch {
    /// `llama` (also SmolLM2, TinyLlama, stories260K).
    Llama,
    /// `qwen2`: biases on q/k/v.
    Qwen2,
    /// `qwen3`: RMSNorm over head_dim on q and k before RoPE.
    Qwen3,
    /// `hunyuan_v1_dense`: RMSNorm on q and k after RoPE, dynamic-alpha RoPE base.
    HunyuanDense,
}

impl Arch {
    pub const SUPPORTED: &'static str = "llama, qwen2, qwen3, hunyuan_v1_dense";

    pub fn from_model_type(s: &str) -> Option<Self> {
        Some(match s {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "hunyuan_v1_dense" => Arch::HunyuanDense,
            _ => return None,
        })
    }

    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::HunyuanDense => "hunyuan_v1_dense",
        }
    }
}

/// Where a per-head RMSNorm on queries and keys sits, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    None,
    /// Qwen3: `q_norm`/`k_norm`, applied before RoPE.
    BeforeRope,
    /// Hunyuan: `query_layernorm`/`key_layernorm`, applied after RoPE.
    AfterRope,
}

/// Llama 3 style frequency scaling (`rope_type = "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

/// Everything the decoder needs, resolved from `config.json`.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: Arch,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    /// The RoPE base actually used (Hunyuan's alpha already applied).
    pub rope_base: f64,
    pub rope_llama3: Option<Llama3Scaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections.
    pub qkv_bias: bool,
    /// Bias on the attention output projection (`attention_bias` for llama/qwen3/hunyuan; never
    /// for qwen2).
    pub o_bias: bool,
    pub qk_norm: QkNorm,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// The JSON as read, for writing back on export.
    pub raw: Value,
}

struct Fields<'a> {
    source: &'a str,
    raw: &'a Value,
}

impl Fields<'_> {
    fn err(&self, field: &str, msg: impl std::fmt::Display) -> ModelError {
        ModelError::Config { path: self.source.to_string(), field: field.to_string(), msg: msg.to_string() }
    }
    fn get(&self, field: &str) -> Option<&Value> {
        self.raw.get(field).filter(|v| !v.is_null())
    }
    fn usize(&self, field: &str) -> Result<usize, ModelError> {
        self.opt_usize(field)?.ok_or_else(|| self.err(field, "is required"))
    }
    fn opt_usize(&self, field: &str) -> Result<Option<usize>, ModelError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Ok(Some(n as usize)),
                _ => Err(self.err(field, format!("must be a positive integer, found {v}"))),
            },
        }
    }
    fn f64_in(&self, obj: &Value, field: &str) -> Result<Option<f64>, ModelError> {
        match obj.get(field).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => v.as_f64().filter(|x| x.is_finite()).map(Some).ok_or_else(|| self.err(field, format!("must be a number, found {v}"))),
        }
    }
    fn bool(&self, field: &str, default: bool) -> Result<bool, ModelError> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.err(field, format!("must be true or false, found {v}"))),
        }
    }
    /// A token id field that may be an integer or a list of integers.
    fn token_ids(&self, field: &str) -> Result<Vec<u32>, ModelError> {
        let bad = || self.err(field, "must be a token id or a list of token ids");
        match self.get(field) {
            None => Ok(vec![]),
            Some(Value::Array(items)) => items.iter().map(|v| v.as_u64().map(|x| x as u32).ok_or_else(bad)).collect(),
            Some(v) => Ok(vec![v.as_u64().ok_or_else(bad)? as u32]),
        }
    }
}

impl ModelConfig {
    /// RoPE inverse frequencies as the decoder uses them: `base^(−2i/head_dim)`, divided by
    /// [`Self::rope_freq_factors`] when Llama 3 scaling is on.
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        let base = self.unscaled_inv_freq();
        match self.rope_freq_factors() {
            Some(d) => base.iter().zip(d).map(|(f, d)| f / d).collect(),
            None => base,
        }
    }

    /// Llama 3 RoPE: the divisor of each frequency (transformers `_compute_llama3_parameters`).
    /// llama.cpp reads the same numbers from the `rope_freqs` tensor of a GGUF.
    pub fn rope_freq_factors(&self) -> Option<Vec<f64>> {
        let s = self.rope_llama3?;
        let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
        let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
        let divisor = |f: f64| {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen > low_wavelen {
                s.factor
            } else if wavelen >= high_wavelen {
                let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                1.0 / ((1.0 - smooth) / s.factor + smooth)
            } else {
                1.0
            }
        };
        Some(self.unscaled_inv_freq().into_iter().map(divisor).collect())
    }

    fn unscaled_inv_freq(&self) -> Vec<f64> {
        let hd = self.head_dim as f64;
        (0..self.head_dim / 2).map(|i| 1.0 / self.rope_base.powf(2.0 * i as f64 / hd)).collect()
    }

    /// Reads and resolves `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Resolves a config from JSON text; `source` names it in errors.
    pub fn from_json(text: &str, source: &str) -> Result<Self, ModelError> {
        let raw: Value = serde_json::from_str(text).map_err(|e| ModelError::Config {
            path: source.to_string(),
            field: format!("line {}, column {}", e.line(), e.column()),
            msg: format!("malformed JSON: {e}"),
        })?;
        if !raw.is_object() {
            return Err(ModelError::Config { path: source.into(), field: "(top level)".into(), msg: "must be a JSON object".into() });
        }
        let f = Fields { source, raw: &raw };
        let model_type = f.get("model_type").and_then(Value::as_str).ok_or_else(|| f.err("model_type", "is required (a string)"))?;
        let arch = Arch::from_model_type(model_type)
            .ok_or_else(|| f.err("model_type", format!("`{model_type}` is not supported (supported: {})", Arch::SUPPORTED)))?;

        let hidden_size = f.usize("hidden_size")?;
        let num_attention_heads = f.usize("num_attention_heads")?;
        let num_key_value_heads = f.opt_usize("num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(f.err("num_key_value_heads", format!("{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}")));
        }
        let head_dim = match f.opt_usize("head_dim")? {
            Some(h) => h,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(f.err("head_dim", "is required when num_attention_heads does not divide hidden_size"));
            }
        };
        if head_dim % 2 != 0 {
            return Err(f.err("head_dim", format!("{head_dim} must be even for RoPE")));
        }
        if let Some(act) = f.get("hidden_act").and_then(Value::as_str)
            && act != "silu"
        {
            return Err(f.err("hidden_act", format!("`{act}` is not supported (only silu)")));
        }
        if f.bool("mlp_bias", false)? {
            return Err(f.err("mlp_bias", "MLP biases are not supported"));
        }

        // RoPE: transformers ≥ 5 nests theta and type in `rope_parameters`; older configs use
        // `rope_theta` + `rope_scaling`.
        let rope_obj = f.get("rope_parameters").or_else(|| f.get("rope_scaling")).cloned().unwrap_or(Value::Null);
        let theta = match f.f64_in(&rope_obj, "rope_theta")? {
            Some(t) => t,
            None => f.f64_in(&raw, "rope_theta")?.unwrap_or(10000.0),
        };
        let rope_type = rope_obj.get("rope_type").or_else(|| rope_obj.get("type")).and_then(Value::as_str).unwrap_or("default");
        let mut rope_base = theta;
        let mut rope_llama3 = None;
        match rope_type {
            "default" => {}
            "llama3" => {
                let get = |k: &str| f.f64_in(&rope_obj, k)?.ok_or_else(|| f.err(&format!("rope_scaling.{k}"), "is required for llama3 RoPE"));
                rope_llama3 = Some(Llama3Scaling {
                    factor: get("factor")?,
                    low_freq_factor: get("low_freq_factor")?,
                    high_freq_factor: get("high_freq_factor")?,
                    original_max_position_embeddings: get("original_max_position_embeddings")?,
                });
            }
            // Hunyuan's NTK-alpha: base = θ·α^(hd/(hd−2)) (formats.md §2).
            "dynamic" if arch == Arch::HunyuanDense => {
                if let Some(alpha) = f.f64_in(&rope_obj, "alpha")? {
                    rope_base = theta * alpha.powf(head_dim as f64 / (head_dim as f64 - 2.0));
                }
            }
            other => {
                return Err(f.err("rope_scaling", format!("RoPE type `{other}` is not supported for {model_type}")));
            }
        }

        let attention_bias = f.bool("attention_bias", false)?;
        let (qkv_bias, o_bias) = match arch {
            Arch::Qwen2 => (true, false),
            _ => (attention_bias, attention_bias),
        };
        let qk_norm = match arch {
            Arch::Qwen3 => QkNorm::BeforeRope,
            Arch::HunyuanDense if f.bool("use_qk_norm", true)? => QkNorm::AfterRope,
            _ => QkNorm::None,
        };
        if arch == Arch::HunyuanDense && f.bool("use_cla", false)? {
            return Err(f.err("use_cla", "cross-layer attention is not supported"));
        }
        let cfg = ModelConfig {
            arch,
            hidden_size,
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            intermediate_size: f.usize("intermediate_size")?,
            vocab_size: f.usize("vocab_size")?,
            rms_norm_eps: f.f64_in(&raw, "rms_norm_eps")?.unwrap_or(1e-6),
            rope_base,
            rope_llama3,
            max_position_embeddings: f.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            tie_word_embeddings: f.bool("tie_word_embeddings", arch == Arch::HunyuanDense)?,
            qkv_bias,
            o_bias,
            qk_norm,
            bos_token_id: f.token_ids("bos_token_id")?.first().copied(),
            eos_token_ids: f.token_ids("eos_token_id")?,
            pad_token_id: f.token_ids("pad_token_id")?.first().copied(),
            raw: raw.clone(),
        };
        Ok(cfg)
    }

    /// Number of parameters, with tied embeddings counted once.
    pub fn n_params(&self) -> usize {
        let (h, hd) = (self.hidden_size, self.head_dim);
        let q = self.num_attention_heads * hd;
        let kv = self.num_key_value_heads * hd;
        let mut layer = h * (q + 2 * kv) + q * h + 3 * h * self.intermediate_size + 2 * h;
        if self.qkv_bias {
            layer += q + 2 * kv;
        }
        if self.o_bias {
            layer += h;
        }
        if self.qk_norm != QkNorm::None {
            layer += 2 * hd;
        }
        let emb = self.vocab_size * h * if self.tie_word_embeddings { 1 } else { 2 };
        emb + self.num_hidden_layers * layer + h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "model_type": "llama", "hidden_size": 64, "num_attention_heads": 8, "num_key_value_heads": 4,
            "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 100, "rms_norm_eps": 1e-5
        })
    }

    fn parse(v: serde_json::Value) -> Result<ModelConfig, ModelError> {
        ModelConfig::from_json(&v.to_string(), "config.json")
    }

    #[test]
    fn resolves_defaults_and_arch_flags() {
        let c = parse(base()).unwrap();
        assert_eq!((c.head_dim, c.rope_base, c.qkv_bias, c.qk_norm), (8, 10000.0, false, QkNorm::None));
        let mut v = base();
        v["model_type"] = "qwen2".into();
        assert!(parse(v).unwrap().qkv_bias);
        let mut v = base();
        v["model_type"] = "hunyuan_v1_dense".into();
        v["rope_theta"] = 10000.0.into();
        v["rope_scaling"] = serde_json::json!({"type": "dynamic", "alpha": 1000.0});
        let c = parse(v).unwrap();
        assert_eq!(c.qk_norm, QkNorm::AfterRope);
        assert!(c.tie_word_embeddings);
        assert!((c.rope_base - 10000.0 * 1000f64.powf(8.0 / 6.0)).abs() < 1e-6);
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = base();
        v["model_type"] = "mamba".into();
        let e = parse(v).unwrap_err().to_string();
        assert!(e.contains("model_type") && e.contains("mamba") && e.contains("config.json"), "{e}");
        let mut v = base();
        v.as_object_mut().unwrap().remove("hidden_size");
        assert!(parse(v).unwrap_err().to_string().contains("hidden_size"));
        let mut v = base();
        v["num_key_value_heads"] = 3.into();
        assert!(parse(v).unwrap_err().to_string().contains("num_key_value_heads"));
        let e = ModelConfig::from_json("{\"model_type\": \"llama\",", "x/config.json").unwrap_err().to_string();
        assert!(e.contains("x/config.json") && e.contains("malformed JSON"), "{e}");
    }
}
