//! Export of QAT models: scale rounding ([`round`]) so that the two formats agree, exact ggml
//! encodings ([`encode`]), the GGUF writer ([`gguf`]), the bf16 pseudo-quantized Hugging Face
//! checkpoint ([`export_hf`]), and the bit-for-bit check between them ([`verify`]).

pub mod encode;
pub mod gguf;
pub mod round;
pub mod verify;

use std::path::Path;

use qat_gguf::GgufError;
use qat_model::{CausalLm, ModelError, SaveDtype};
use qat_quant::QuantError;

pub use gguf::{GgufReport, HighPrecision, export_gguf};
pub use round::{HfDtype, RoundingReport, round_scales};
pub use verify::{VerifyReport, verify_export};

/// What can fail in an export. The file or tensor concerned is in the message or, for one
/// tensor, in [`ExportError::Tensor`] around the cause.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A weight that no exact ggml encoding holds, with the encoder's reason.
    #[error("{0}")]
    Encoding(String),
    /// A file export reads or writes (`path: problem`).
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    /// Something the target format cannot express.
    #[error("{0}")]
    Unsupported(String),
    /// The exported files disagree in something other than values (shapes, architecture).
    #[error("{0}")]
    Mismatch(String),
    /// A failure in one tensor.
    #[error("{tensor}")]
    Tensor {
        tensor: String,
        #[source]
        source: Box<ExportError>,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Quant(#[from] QuantError),
}

impl ExportError {
    pub(crate) fn file(path: &Path, msg: impl std::fmt::Display) -> Self {
        ExportError::File { path: path.display().to_string(), msg: msg.to_string() }
    }

    /// This error, as the failure of tensor `tensor`.
    pub fn in_tensor(self, tensor: impl Into<String>) -> Self {
        ExportError::Tensor { tensor: tensor.into(), source: Box::new(self) }
    }
}

/// Writes the Hugging Face export: config and tensor names of the source checkpoint,
/// quantized linears holding their fake-quantized values, tokenizer files copied, and
/// `qat_quant.json` describing the quantization.
pub fn export_hf(model: &CausalLm, src: &Path, out: &Path, dtype: HfDtype, sidecar: &serde_json::Value) -> Result<(), ExportError> {
    let save = match dtype {
        HfDtype::Bf16 => SaveDtype::Bf16,
        HfDtype::F32 => SaveDtype::F32,
    };
    let text = serde_json::to_string_pretty(sidecar).expect("JSON");
    Ok(model.save_hf(Some(src), out, save, &[("qat_quant.json", text)])?)
}
