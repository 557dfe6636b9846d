//! Export of QAT models: scale rounding ([`round`]) so that the two formats agree, exact ggml
//! encodings ([`encode`]), the GGUF writer ([`gguf`]), the bf16 pseudo-quantized Hugging Face
//! checkpoint ([`export_hf`]), and the bit-for-bit check between them ([`verify`]).

pub mod encode;
pub mod gguf;
pub mod round;
pub mod verify;

use std::path::Path;

use qat_model::{CausalLm, SaveDtype};

pub use gguf::{GgufReport, HighPrecision, export_gguf};
pub use round::{HfDtype, RoundingReport, round_scales};
pub use verify::{VerifyReport, verify_export};

/// Writes the Hugging Face export: config and tensor names of the source checkpoint,
/// quantized linears holding their fake-quantized values, tokenizer files copied, and
/// `qat_quant.json` describing the quantization.
pub fn export_hf(model: &CausalLm, src: &Path, out: &Path, dtype: HfDtype, sidecar: &serde_json::Value) -> Result<(), String> {
    let save = match dtype {
        HfDtype::Bf16 => SaveDtype::Bf16,
        HfDtype::F32 => SaveDtype::F32,
    };
    let text = serde_json::to_string_pretty(sidecar).expect("JSON");
    model.save_hf(Some(src), out, save, &[("qat_quant.json", text)]).map_err(|e| e.to_string())
}
