//! AdamW with two parameter groups (weights, quantizer scales), global-norm gradient clipping,
//! and state stored by parameter path so that a checkpoint restores it exactly.
//!
//! Written here rather than through burn-optim because the run needs, together: per-group
//! learning rate and weight decay for the quantizer scales (found by parameter id), clipping by the global norm (Burn's
//! built-in clipping is per tensor, see burn-notes.md), and moments saved by path next to the
//! weights. The update is PyTorch's `torch.optim.AdamW` (decoupled decay, bias-corrected).
//!
//! Where the update runs ([`Placement`]): on the CPU backend as one pass over host buffers, in
//! parallel, with the moments in host memory (the backend's tensors are host memory already, so
//! parameters and gradients move without a copy where they are not shared), instead of ~14
//! tensor operations per parameter that each allocate and traverse a full-size buffer. On a GPU
//! the moments stay on the device and the update is those tensor operations, which the fusion
//! backend merges: the host pass there cost ~0.5 s per step of SmolLM2-135M on an H200, one
//! blocking transfer per parameter each way (docs/gpu.md).
//!
//! With scale rounding on (`[quant] round_scales`), the model's scales always sit on the grid
//! export stores exactly, and the optimizer keeps their unrounded values ("master" scales) so
//! that updates smaller than the grid spacing still accumulate; the gradient of the rounded
//! scale updates the master (straight-through).

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use qat_model::params::{MapByPath, map_by_path};
use qat_quant::{HfDtype, QuantSpec};

/// AdamW's first and second moments of one parameter, flattened.
#[derive(Debug, Clone)]
pub enum Moments {
    /// In host memory (the host update; loaded checkpoints).
    Host(Vec<f32>, Vec<f32>),
    /// On the parameter's device (the device update).
    Device(Box<(Tensor<1>, Tensor<1>)>),
}

impl Moments {
    /// Host copies `(m, v)`, for checkpoints.
    pub fn to_host(&self) -> (Vec<f32>, Vec<f32>) {
        self.clone().into_host()
    }

    /// `(m, v)` in host memory: moved, not copied, when they are there already.
    fn into_host(self) -> (Vec<f32>, Vec<f32>) {
        match self {
            Moments::Host(m, v) => (m, v),
            Moments::Device(mv) => (host_values(mv.0), host_values(mv.1)),
        }
    }
}

/// Where the update of a parameter runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// The host pass for parameters on the CPU backend, the device update elsewhere.
    #[default]
    Auto,
    Host,
    Device,
}

/// Hyper-parameters of one group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupHyper {
    pub lr: f64,
    pub weight_decay: f64,
}

#[derive(Debug, Clone)]
pub struct AdamW {
    pub weights: GroupHyper,
    pub scales: GroupHyper,
    /// The scale group with each scale's quantizer (`CausalLm::scale_params`); every other
    /// parameter is a weight.
    pub scale_params: HashMap<ParamId, QuantSpec>,
    pub betas: [f64; 2],
    pub eps: f64,
    pub step: u64,
    /// First and second moments by parameter path, flattened.
    pub moments: BTreeMap<String, Moments>,
    pub placement: Placement,
    /// Keep the scales on the grid export stores exactly in this dtype (`[quant] round_scales`).
    pub round_scales: Option<HfDtype>,
    /// Unrounded scales by parameter path (only with `round_scales`), flattened.
    pub masters: BTreeMap<String, Vec<f32>>,
}

/// One AdamW step's constants (PyTorch's `torch.optim.AdamW`, decoupled weight decay).
#[derive(Debug, Clone, Copy)]
struct Update {
    lr: f32,
    weight_decay: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    /// `1 − β₁ᵗ`, `√(1 − β₂ᵗ)`.
    bias1: f32,
    bias2_sqrt: f32,
    /// Multiplies every gradient (global-norm clipping).
    grad_factor: f32,
}

impl Update {
    /// In place, element by element, with `g ← grad_factor·g`:
    /// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
    /// `p ← p·(1 − lr·wd) − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε)`.
    fn apply(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 14;
        let u = *self;
        let decay = 1.0 - u.lr * u.weight_decay;
        let step = u.lr / u.bias1;
        p.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK))).for_each(|((p, g), (m, v))| {
            for i in 0..p.len() {
                let g = g[i] * u.grad_factor;
                m[i] = u.b1 * m[i] + (1.0 - u.b1) * g;
                v[i] = u.b2 * v[i] + (1.0 - u.b2) * g * g;
                p[i] = p[i] * decay - step * m[i] / (v[i].sqrt() / u.bias2_sqrt + u.eps);
            }
        });
    }
}

impl Update {
    /// [`Update::apply`] as tensor operations on the parameter's device: `(p, m, v)` updated.
    fn apply_tensors(&self, p: Tensor<1>, g: Tensor<1>, m: Tensor<1>, v: Tensor<1>) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
        let u = *self;
        let g = g * u.grad_factor;
        let m = m * u.b1 + g.clone() * (1.0 - u.b1);
        let v = v * u.b2 + g.clone() * g * (1.0 - u.b2);
        let p = p * (1.0 - u.lr * u.weight_decay) - m.clone() * (u.lr / u.bias1) / (v.clone().sqrt() / u.bias2_sqrt + u.eps);
        (p, m, v)
    }
}

fn host_values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 tensor")
}

struct NormVisitor<'a> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<1>>,
}

impl ModuleVisitor for NormVisitor<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            // Rows first: Burn's CPU backend sums a whole tensor of 4M elements or more on
            // several threads in an order that depends on their scheduling (SmolLM2's embedding
            // gradient has 28M), which made the norm, the clipping and every update of a step
            // differ between runs; a sum along the last dimension is one sequential pass per row.
            let s = g.square().sum_dim(D - 1).sum();
            self.sum = Some(match self.sum.take() {
                Some(acc) => acc + s,
                None => s,
            });
        }
    }
}

/// The global L2 norm of all gradients.
pub fn grad_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    let mut v = NormVisitor { grads, sum: None };
    model.visit(&mut v);
    v.sum.map_or(0.0, |s| s.into_scalar::<f32>() as f64).sqrt()
}

struct StepMapper<'a> {
    opt: &'a mut AdamW,
    grads: &'a GradientsParams,
    lr_factor: f64,
    grad_factor: f64,
}

impl MapByPath for StepMapper<'_> {
    fn map<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = self.grads.get::<D>(param.id) else {
            return param;
        };
        let path = path.to_string();
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let device = tensor.device();
        let p = tensor.inner();
        let shape = p.shape();
        let n = shape.num_elements();
        let o = &mut *self.opt;
        let spec = o.scale_params.get(&id).copied();
        let h = if spec.is_some() { o.scales } else { o.weights };
        let lr = h.lr * self.lr_factor;
        let [b1, b2] = o.betas;
        let t = o.step as i32;
        let update = Update {
            lr: lr as f32,
            weight_decay: h.weight_decay as f32,
            b1: b1 as f32,
            b2: b2 as f32,
            eps: o.eps as f32,
            bias1: (1.0 - b1.powi(t)) as f32,
            bias2_sqrt: (1.0 - b2.powi(t)).sqrt() as f32,
            grad_factor: self.grad_factor as f32,
        };
        let rounding = o.round_scales.zip(spec);
        // Rounded scales need their host-side masters; they are small.
        let on_host = rounding.is_some()
            || match o.placement {
                Placement::Auto => qat_model::fused::on_flex(&p),
                Placement::Host => true,
                Placement::Device => false,
            };
        if !on_host {
            let (m, v) = match o.moments.remove(&path) {
                Some(Moments::Device(mv)) => *mv,
                Some(Moments::Host(m, v)) => (Tensor::from_data(TensorData::new(m, [n]), &p.device()), Tensor::from_data(TensorData::new(v, [n]), &p.device())),
                None => (Tensor::zeros([n], &p.device()), Tensor::zeros([n], &p.device())),
            };
            let (values, m, v) = update.apply_tensors(p.reshape([n]), grad.reshape([n]), m, v);
            o.moments.insert(path, Moments::Device(Box::new((m, v))));
            let mut out = Tensor::from_inner(values.reshape(shape));
            if require_grad {
                out = out.require_grad();
            }
            return Param::from_mapped_value(id, out, mapper);
        }
        let g = host_values(grad);
        let (mut m, mut v) = match o.moments.remove(&path) {
            Some(moments) => moments.into_host(),
            None => (vec![0.0; n], vec![0.0; n]),
        };
        let mut values = match rounding {
            Some(_) => o.masters.remove(&path).unwrap_or_else(|| host_values(p)),
            None => host_values(p),
        };
        update.apply(&mut values, &g, &mut m, &mut v);
        o.moments.insert(path.clone(), Moments::Host(m, v));
        let values = match rounding {
            Some((dtype, spec)) => {
                // Every spec's grid was checked when the model was first rounded; steps with
                // non-finite gradients are skipped before the update, so the masters stay finite.
                let rounded = qat_quant::exact::round_scales(&spec, &values, dtype).expect("roundable scale");
                o.masters.insert(path, values);
                rounded
            }
            None => values,
        };
        let mut out = Tensor::from_data(TensorData::new(values, shape), &device);
        if require_grad {
            out = out.require_grad();
        }
        Param::from_mapped_value(id, out, mapper)
    }
}

impl AdamW {
    pub fn new(weights: GroupHyper, scales: GroupHyper, scale_params: HashMap<ParamId, QuantSpec>, betas: [f64; 2], eps: f64) -> Self {
        AdamW {
            weights,
            scales,
            scale_params,
            betas,
            eps,
            step: 0,
            moments: BTreeMap::new(),
            placement: Placement::Auto,
            round_scales: None,
            masters: BTreeMap::new(),
        }
    }

    /// One update of every parameter that has a gradient: the learning rates scaled by
    /// `lr_factor` (the schedule) and gradients by `grad_factor` (clipping).
    pub fn step<M: Module>(&mut self, model: M, grads: &GradientsParams, lr_factor: f64, grad_factor: f64) -> M {
        self.step += 1;
        map_by_path(model, &mut StepMapper { opt: self, grads, lr_factor, grad_factor })
    }
}

/// Learning-rate multiplier at `step` (0-based) of `total`: linear warmup over `warmup`
/// steps, then cosine or linear decay to `min_ratio`, or constant.
pub fn lr_factor(step: usize, total: usize, warmup: usize, schedule: crate::config::Schedule, min_ratio: f64) -> f64 {
    use crate::config::Schedule;
    if step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    let decay_steps = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / decay_steps as f64).min(1.0);
    match schedule {
        Schedule::Constant => 1.0,
        Schedule::Linear => min_ratio + (1.0 - min_ratio) * (1.0 - progress),
        Schedule::Cosine => min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}
