//! The linear layer of every decoder projection.

use burn::module::{Module, Param};
use burn::tensor::Tensor;

/// `y = x·Wᵀ + b` with `W` in Hugging Face layout `[out, in]`, so that per-output-channel
/// quantizer scales are per row, as in `shared/docs/quantization.md`, and export needs no
/// transpose.
#[derive(Module, Debug)]
pub struct QLinear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
}

impl QLinear {
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        QLinear { weight: Param::from_tensor(weight), bias: bias.map(Param::from_tensor) }
    }

    /// `[out, in]`.
    pub fn dims(&self) -> [usize; 2] {
        self.weight.val().dims()
    }

    /// The weight the forward pass uses.
    pub fn effective_weight(&self) -> Tensor<2> {
        self.weight.val()
    }

    /// # Shapes
    /// `x: [..., in]` → `[..., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        burn::tensor::module::linear(x, self.effective_weight().transpose(), self.bias.as_ref().map(|b| b.val()))
    }
}
