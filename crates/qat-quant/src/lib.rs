//! Fake quantization for QAT: quantizer schemes with their straight-through gradients
//! ([`quantizer`]), the layer that carries them ([`QLinear`]), and the policy that decides which
//! layer gets what ([`policy`]), and GPTQ's calibrated rounding with the same quantizers ([`gptq`]).

pub mod exact;
pub mod fused;
pub mod gptq;
pub mod linear;
pub mod matmul;
pub mod policy;
pub mod quantizer;
pub mod scheme;
pub mod simd;

/// What can fail in quantization. Each variant names what it concerns: the config location of
/// a setting, the tensor of a scale (through [`QuantError::Tensor`]), the layer GPTQ ran on.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// A scheme or policy setting that cannot work; `at` is where it is set
    /// (`quant.rules[2].match`, ``quant policy for `lm_head` ``).
    #[error("{at}: {msg}")]
    Config { at: String, msg: String },
    /// A scale value that no exact export grid holds.
    #[error("{0}")]
    Scale(String),
    /// GPTQ cannot run on this layer as asked.
    #[error("gptq: {0}")]
    Gptq(String),
    /// A failure in one tensor of a model.
    #[error("{tensor}")]
    Tensor {
        tensor: String,
        #[source]
        source: Box<QuantError>,
    },
    /// Tensor data that could not be read back as f32.
    #[error("tensor data: {0}")]
    Data(String),
}

impl QuantError {
    pub(crate) fn config(at: &str, msg: impl Into<String>) -> Self {
        QuantError::Config { at: at.to_string(), msg: msg.into() }
    }

    /// This error, as the failure of tensor `tensor`.
    pub fn in_tensor(self, tensor: impl Into<String>) -> Self {
        QuantError::Tensor { tensor: tensor.into(), source: Box::new(self) }
    }
}

impl From<burn::tensor::DataError> for QuantError {
    fn from(e: burn::tensor::DataError) -> Self {
        QuantError::Data(format!("{e:?}"))
    }
}

pub use exact::HfDtype;
pub use gptq::{GptqOptions, GptqResult, Hessian, gptq};
pub use linear::{FakeQuant, QLinear, ScaleChange, full_precision, matmul_in};
pub use policy::{Policy, PolicyTable};
pub use quantizer::{QuantizedWeight, fake_quantize, fake_quantize_composed, init_scale, quantize};
pub use scheme::{GradVariant, Granularity, KQuant, QuantSpec, ScaleInit, Scheme};
