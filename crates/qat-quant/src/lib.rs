//! Fake quantization for QAT: quantizer schemes with their straight-through gradients, and
//! [`QLinear`], the linear layer every decoder projection is built from.

pub mod linear;

pub use linear::QLinear;
