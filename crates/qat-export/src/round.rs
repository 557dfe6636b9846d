//! Scale rounding at export, so that the pseudo-quantized safetensors and the GGUF hold the
//! same values (the grid is [`qat_quant::exact`]).

use qat_model::CausalLm;
pub use qat_quant::HfDtype;

/// What rounding changed.
pub type RoundingReport = qat_quant::ScaleChange;

/// Rounds every quantizer scale of `model` for an exact export.
pub fn round_scales(model: CausalLm, dtype: HfDtype) -> Result<(CausalLm, RoundingReport), qat_quant::QuantError> {
    let (model, report) = model.round_scales(dtype)?;
    // The new scale parameters must not record autodiff graphs during export.
    Ok((burn::module::Module::valid(&model), report))
}
