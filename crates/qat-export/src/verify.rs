//! `qat verify-export`: reads a GGUF back with qat's reader, dequantizes every tensor, undoes
//! llama.cpp's q/k permutation, and compares it with the HF export bit for bit.

use std::path::Path;

use qat_gguf::GgufFile;
use qat_gguf::hf::{hf_model_type, hf_name, permute_heads, unpermute_rows};
use qat_model::Checkpoint;

use crate::ExportError;

/// Per-tensor comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TensorCheck {
    pub name: String,
    pub ggml_type: String,
    pub mismatches: usize,
    pub max_abs_diff: f32,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub tensors: Vec<TensorCheck>,
    pub missing_in_gguf: Vec<String>,
    pub extra_in_gguf: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.missing_in_gguf.is_empty() && self.extra_in_gguf.is_empty() && self.tensors.iter().all(|t| t.mismatches == 0)
    }
}

/// Compares every tensor of `hf_dir` with `gguf`.
pub fn verify_export(hf_dir: &Path, gguf: &Path) -> Result<VerifyReport, ExportError> {
    let ckpt = Checkpoint::open(hf_dir)?;
    let g = GgufFile::open(gguf)?;
    let arch = g.get_str("general.architecture").map_err(|e| ExportError::file(gguf, e))?;
    let mt = hf_model_type(arch).ok_or_else(|| ExportError::file(gguf, format!("architecture {arch} not supported")))?;
    if mt != ckpt.config.arch.model_type() {
        return Err(ExportError::Mismatch(format!("{} is {mt}, {} is {}", gguf.display(), hf_dir.display(), ckpt.config.arch.model_type())));
    }
    let (nh, nkv) = (ckpt.config.num_attention_heads, ckpt.config.num_key_value_heads);
    let mut tensors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut extra = Vec::new();
    for info in &g.tensors {
        if info.name == crate::gguf::ROPE_FREQS {
            // Not a checkpoint tensor: compare with the factors the HF config implies.
            let want: Vec<f32> = ckpt.config.rope_freq_factors().unwrap_or_default().iter().map(|&f| f as f32).collect();
            let got = g.dequantize(&info.name)?;
            let mismatches =
                if got.len() == want.len() { got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count() } else { got.len().max(want.len()) };
            tensors.push(TensorCheck { name: info.name.clone(), ggml_type: format!("{:?}", info.ggml_type), mismatches, max_abs_diff: 0.0 });
            continue;
        }
        let Some(name) = hf_name(mt, &info.name) else {
            extra.push(info.name.clone());
            continue;
        };
        let Some(shape) = ckpt.shape(&name).map(|s| s.to_vec()) else {
            extra.push(info.name.clone());
            continue;
        };
        seen.insert(name.clone());
        let mut got = g.dequantize(&info.name)?;
        if let Some(h) = permute_heads(mt, &name, nh, nkv) {
            got = unpermute_rows(&got, shape[0], if shape.len() == 2 { shape[1] } else { 1 }, h);
        }
        let want = ckpt.read_f32(&name)?;
        if got.len() != want.len() || info.shape() != shape {
            return Err(ExportError::Mismatch(format!("shape {:?} in GGUF, {:?} in {}", info.shape(), shape, hf_dir.display())).in_tensor(name));
        }
        let mut check = TensorCheck { name, ggml_type: format!("{:?}", info.ggml_type), mismatches: 0, max_abs_diff: 0.0 };
        for (a, b) in got.iter().zip(&want) {
            if a.to_bits() != b.to_bits() {
                check.mismatches += 1;
                check.max_abs_diff = check.max_abs_diff.max((a - b).abs());
            }
        }
        tensors.push(check);
    }
    let missing = ckpt.names().filter(|n| !seen.contains(*n)).map(str::to_string).collect();
    Ok(VerifyReport { tensors, missing_in_gguf: missing, extra_in_gguf: extra })
}
