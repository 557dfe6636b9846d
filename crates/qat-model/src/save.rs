//! Writing a model back as a Hugging Face checkpoint directory that transformers loads
//! unchanged: the same config.json and tensor names as the source, quantized linears holding
//! their fake-quantized values. The directory appears only when complete.

use std::path::Path;

use half::bf16;

use crate::{CausalLm, ModelError};

/// Storage dtype of the written safetensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "lower"))]
pub enum SaveDtype {
    F32,
    /// Round to nearest even, as `torch.Tensor.to(torch.bfloat16)`.
    Bf16,
}

/// Tokenizer and generation files copied from the source checkpoint when present.
pub const AUX_FILES: &[&str] = &["tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja", "special_tokens_map.json"];

/// One tensor of a Hugging Face checkpoint of the model.
pub struct HfTensor {
    /// The checkpoint's name (`model.layers.3.self_attn.q_proj.weight`).
    pub name: String,
    /// The parameter's module path in the model (`layers.3.self_attn.q_proj.weight`).
    pub path: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl CausalLm {
    /// Every checkpoint tensor as f32, in checkpoint order; quantized linears give their
    /// fake-quantized weight ([`CausalLm::convert_qat`]). A tied `lm_head` has no tensor.
    pub fn hf_tensors(&self) -> Vec<HfTensor> {
        let plain = self.clone().convert_qat();
        crate::params::parameters(&plain)
            .into_iter()
            .map(|(path, shape, data)| HfTensor { name: Self::hf_name(&self.config, &path), path, shape, data })
            .collect()
    }

    /// Writes the model as a checkpoint directory `out` (which must not exist), copying
    /// tokenizer and generation files from `source_dir` and adding `extra` files (name, text).
    pub fn save_hf(&self, source_dir: Option<&Path>, out: &Path, dtype: SaveDtype, extra: &[(&str, String)]) -> Result<(), ModelError> {
        let config = config_with_dtype(self.config.raw.clone(), dtype);
        let mut files = vec![("config.json", serde_json::to_string_pretty(&config).expect("JSON"))];
        files.extend(extra.iter().map(|(n, t)| (*n, t.clone())));
        let tensors = self.hf_tensors().into_iter().map(|t| (t.name, t.shape, t.data));
        write_checkpoint_dir(out, source_dir, tensors, dtype, &files)
    }
}

/// `config` (a config.json) saying that its weights are stored as `dtype`.
pub fn config_with_dtype(mut config: serde_json::Value, dtype: SaveDtype) -> serde_json::Value {
    let name = match dtype {
        SaveDtype::F32 => "float32",
        SaveDtype::Bf16 => "bfloat16",
    };
    // transformers 5 reads `dtype`, 4.x `torch_dtype`.
    config["torch_dtype"] = name.into();
    if config.get("dtype").is_some() {
        config["dtype"] = name.into();
    }
    config
}

/// Writes a checkpoint directory `out` (which must not exist): `model.safetensors` from
/// `tensors` stored as `dtype`, the tokenizer and generation files of `source_dir`, and `files`
/// (name, text; `config.json` among them). It is written into a hidden directory beside `out`
/// and renamed when complete, so a failure leaves nothing half-written.
pub fn write_checkpoint_dir<V: AsRef<[f32]>>(
    out: &Path,
    source_dir: Option<&Path>,
    tensors: impl IntoIterator<Item = (String, Vec<usize>, V)>,
    dtype: SaveDtype,
    files: &[(&str, String)],
) -> Result<(), ModelError> {
    if out.exists() {
        return Err(ModelError::io(out, std::io::Error::new(std::io::ErrorKind::AlreadyExists, "output path already exists")));
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
    let tmp = tempfile_dir(parent)?;
    let write = || -> Result<(), ModelError> {
        // transformers checks the `format` entry.
        let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        write_safetensors(&tmp.join("model.safetensors"), tensors, dtype, Some(metadata))?;
        if let Some(src) = source_dir {
            for name in AUX_FILES {
                let from = src.join(name);
                if from.exists() {
                    std::fs::copy(&from, tmp.join(name)).map_err(|e| ModelError::io(&from, e))?;
                }
            }
        }
        for (name, text) in files {
            let p = tmp.join(name);
            std::fs::write(&p, text).map_err(|e| ModelError::io(&p, e))?;
        }
        Ok(())
    };
    let result = write().and_then(|()| std::fs::rename(&tmp, out).map_err(|e| ModelError::io(out, e)));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Writes f32 tensors (name, shape, values) as a safetensors file stored as `dtype`: the one
/// writer of model checkpoints and of a run's parameter and optimizer files.
pub fn write_safetensors<V: AsRef<[f32]>>(
    path: &Path,
    tensors: impl IntoIterator<Item = (String, Vec<usize>, V)>,
    dtype: SaveDtype,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<(), ModelError> {
    let bytes = |v: &[f32]| -> Vec<u8> {
        match dtype {
            SaveDtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            SaveDtype::Bf16 => v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes()).collect(),
        }
    };
    let st_dtype = match dtype {
        SaveDtype::F32 => safetensors::Dtype::F32,
        SaveDtype::Bf16 => safetensors::Dtype::BF16,
    };
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = tensors.into_iter().map(|(n, s, v)| (n, s, bytes(v.as_ref()))).collect();
    let views: Vec<_> =
        tensors.iter().map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(st_dtype, s.clone(), b).expect("sizes match"))).collect();
    safetensors::serialize_to_file(views, metadata, path).map_err(|e| ModelError::Safetensors { path: path.display().to_string(), msg: e.to_string() })
}

/// A fresh hidden directory next to the target, so the final rename stays on one filesystem.
fn tempfile_dir(parent: &Path) -> Result<std::path::PathBuf, ModelError> {
    let dir = tempfile::Builder::new()
        .prefix(".qat-write-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir_in(parent)
        .map_err(|e| ModelError::io(parent, e))?;
    Ok(dir.keep())
}
