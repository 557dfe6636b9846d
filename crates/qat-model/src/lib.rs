//! Decoder-only transformers in Burn, loaded from Hugging Face checkpoints.
//!
//! One decoder ([`transformer::CausalLm`]) covers the four supported `model_type`s: they share
//! the Llama block and differ only in flags that [`config::ModelConfig`] resolves (q/k/v bias,
//! where a q/k RMSNorm sits, how the RoPE base is computed). Keeping one implementation means
//! one place for fake quantization to hook in and one thing to check against transformers.

pub mod calibrate;
pub mod checkpoint;
pub mod config;
pub mod fused;
pub mod generate;
pub mod hub;
pub mod params;
pub mod rotate;
pub mod save;
pub mod transformer;

pub use calibrate::{CalibrationBatch, ModuleLoss, gptq_model};
pub use checkpoint::Checkpoint;
pub use config::{Arch, ModelConfig, QkNorm};
pub use rotate::Rotation;
pub use save::{HfTensor, SaveDtype};
pub use transformer::{AttentionBatch, CausalLm, KvCache};

use std::path::Path;

/// Errors from reading configs and checkpoints; each names the file and the field or tensor.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: field `{field}`: {msg}")]
    Config { path: String, field: String, msg: String },
    #[error("{path}: {msg}")]
    Safetensors { path: String, msg: String },
    #[error("Hub model {id}: {msg}")]
    Hub { id: String, msg: String },
    #[error("checkpoint {dir} does not match the {arch} architecture:\n{}", problems.join("\n"))]
    Mismatch { dir: String, arch: String, problems: Vec<String> },
}

impl ModelError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io { path: path.display().to_string(), source }
    }
}
