//! Fake quantization for QAT: quantizer schemes with their straight-through gradients
//! ([`quantizer`]), the layer that carries them ([`QLinear`]), and the policy that decides which
//! layer gets what ([`policy`]), and GPTQ's calibrated rounding with the same quantizers ([`gptq`]).

pub mod exact;
pub mod fused;
pub mod gptq;
pub mod linear;
pub mod policy;
pub mod quantizer;
pub mod scheme;

pub use exact::HfDtype;
pub use gptq::{GptqOptions, GptqResult, Hessian, gptq};
pub use linear::{FakeQuant, QLinear, ScaleChange, matmul_in};
pub use policy::{Policy, PolicyTable};
pub use quantizer::{QuantizedWeight, fake_quantize, fake_quantize_composed, init_scale, quantize};
pub use scheme::{GradVariant, Granularity, KQuant, QuantSpec, ScaleInit, Scheme};
