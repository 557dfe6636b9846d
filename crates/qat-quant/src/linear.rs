//! The linear layer of every decoder projection, optionally fake-quantized.

use burn::module::{Module, Param, ParamId};
use burn::tensor::{FloatDType, Tensor};

use crate::QuantError;
use crate::exact::{HfDtype, round_scales};
use crate::quantizer::{QuantizedWeight, fake_quantize, init_scale, quantize};
use crate::scheme::QuantSpec;

/// A weight quantizer attached to a [`QLinear`]: the spec and its learnable scales.
#[derive(Module, Debug)]
pub struct FakeQuant {
    /// `α` of [`QuantSpec::scale_shape`]; `None` for BitNet's computed per-tensor scale.
    pub scale: Option<Param<Tensor<2>>>,
    #[module(skip)]
    pub spec: QuantSpec,
    /// Per-token int8 fake quantization of the layer input (BitNet activations).
    #[module(skip)]
    pub act_int8: bool,
}

/// What [`QLinear::round_scale`] changed.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ScaleChange {
    pub scales: usize,
    pub changed: usize,
    /// Largest `|α' − α| / α`.
    pub max_relative_change: f64,
}

impl ScaleChange {
    pub fn merge(&mut self, other: &ScaleChange) {
        self.scales += other.scales;
        self.changed += other.changed;
        self.max_relative_change = self.max_relative_change.max(other.max_relative_change);
    }
}

/// `y = x·Wᵀ + b` with `W` in Hugging Face layout `[out, in]`, so that per-output-channel
/// scales are per row, as in `shared/docs/quantization.md`, and export needs no transpose.
#[derive(Module, Debug)]
pub struct QLinear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub quant: Option<FakeQuant>,
    /// Precision of the matrix product (see [`matmul_in`]); `None`: the tensors' own (f32).
    #[module(skip)]
    pub compute: Option<FloatDType>,
}

/// `a·b` computed in `dtype` and returned in f32, as autocast does: the inputs (f32 master
/// values, fake-quantized weights) are cast for the product only, so everything around matrix
/// products (norms, softmax, residuals, losses) and every gradient reaching a parameter stay f32.
pub fn matmul_in<const D: usize>(a: Tensor<D>, b: Tensor<D>, dtype: Option<FloatDType>) -> Tensor<D> {
    match dtype {
        Some(dt) if dt != FloatDType::F32 => a.cast(dt).matmul(b.cast(dt)).cast(FloatDType::F32),
        _ => a.matmul(b),
    }
}

/// Whether products in `dtype` ([`matmul_in`]'s setting) are full f32 ones (`None` or f32):
/// where the CPU backend's own kernels ([`crate::matmul`]) may replace them.
pub fn full_precision(dtype: Option<FloatDType>) -> bool {
    dtype.is_none_or(|dt| dt == FloatDType::F32)
}

impl QLinear {
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        QLinear { weight: Param::from_tensor(weight), bias: bias.map(Param::from_tensor), quant: None, compute: None }
    }

    /// `[out, in]`.
    pub fn dims(&self) -> [usize; 2] {
        self.weight.val().dims()
    }

    /// Attaches a quantizer with scales initialised from the current weight.
    pub fn quantized(mut self, spec: QuantSpec, act_int8: bool) -> Self {
        // Computed off the autodiff graph (on an autodiff device even untracked operations keep
        // memory: the 64-candidate MSE search of SmolLM2 grew past 20 GB), then made a fresh
        // leaf on the weight's device so it can be a trainable parameter.
        let weight = self.weight.val();
        let autodiff = weight.device().is_autodiff();
        let scale = init_scale(weight.inner(), &spec).map(|a| Param::from_tensor(if autodiff { Tensor::from_inner(a) } else { a }));
        self.quant = Some(FakeQuant { scale, spec, act_int8 });
        self
    }

    /// The learnable quantizer scale's parameter id with its quantizer, if the layer has one:
    /// how the optimizer and freezing find the scale group by structure, not by name.
    pub fn scale_param(&self) -> Option<(ParamId, QuantSpec)> {
        let q = self.quant.as_ref()?;
        Some((q.scale.as_ref()?.id, q.spec))
    }

    /// The weight the forward pass uses: fake-quantized when a quantizer is attached.
    pub fn effective_weight(&self) -> Tensor<2> {
        match &self.quant {
            Some(q) => fake_quantize(self.weight.val(), q.scale.as_ref().map(Param::val), &q.spec),
            None => self.weight.val(),
        }
    }

    /// Moves the quantizer's scales onto the grid that export stores exactly
    /// ([`crate::exact`]); the new scales are fresh parameters on the same device.
    pub fn round_scale(&mut self, dtype: HfDtype) -> Result<ScaleChange, QuantError> {
        let mut change = ScaleChange::default();
        let Some(q) = self.quant.as_mut() else { return Ok(change) };
        let Some(scale) = q.scale.as_ref() else { return Ok(change) };
        let t = scale.val();
        let (dims, device) = (t.dims(), t.device());
        let alphas = t.into_data().convert::<f32>().try_to_vec::<f32>()?;
        let out = round_scales(&q.spec, &alphas, dtype)?;
        for (&a, &r) in alphas.iter().zip(&out) {
            change.scales += 1;
            if r != a {
                change.changed += 1;
                change.max_relative_change = change.max_relative_change.max(((r - a) / a).abs() as f64);
            }
        }
        q.scale = Some(Param::from_tensor(Tensor::from_data(burn::tensor::TensorData::new(out, dims), &device)));
        Ok(change)
    }

    /// Levels and steps of the quantized weight (what export writes), computed by the same
    /// function as the forward pass; `None` when the layer is not quantized.
    pub fn quantized_weight(&self) -> Option<QuantizedWeight> {
        let q = self.quant.as_ref()?;
        Some(quantize(self.weight.val(), q.scale.as_ref().map(Param::val), &q.spec))
    }

    /// # Shapes
    /// `x: [..., in]` → `[..., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let x = match &self.quant {
            Some(q) if q.act_int8 => crate::quantizer::fake_quantize_act_int8(x),
            _ => x,
        };
        let w = self.effective_weight();
        if full_precision(self.compute)
            && let Some(y) = crate::matmul::linear(&x, &w)
        {
            return match &self.bias {
                Some(b) => y + b.val().unsqueeze(),
                None => y,
            };
        }
        let w = w.transpose();
        match self.compute {
            Some(dt) if dt != FloatDType::F32 => {
                let y = burn::tensor::module::linear(x.cast(dt), w.cast(dt), None).cast(FloatDType::F32);
                match &self.bias {
                    Some(b) => y + b.val().unsqueeze(),
                    None => y,
                }
            }
            _ => burn::tensor::module::linear(x, w, self.bias.as_ref().map(|b| b.val())),
        }
    }
}
