//! AdamW with two parameter groups (weights, quantizer scales), global-norm gradient clipping,
//! and state stored by parameter path so that a checkpoint restores it exactly.
//!
//! Written here rather than through burn-optim because the run needs, together: per-group
//! learning rate and weight decay chosen by module path, clipping by the global norm (Burn's
//! built-in clipping is per tensor, see burn-notes.md), and moments saved by path next to the
//! weights. The update is PyTorch's `torch.optim.AdamW` (decoupled decay, bias-corrected).
//!
//! With scale rounding on (`[quant] round_scales`), the model's scales always sit on the grid
//! export stores exactly, and the optimizer keeps their unrounded values ("master" scales) so
//! that updates smaller than the grid spacing still accumulate; the gradient of the rounded
//! scale updates the master (straight-through).

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use qat_quant::{HfDtype, QuantSpec};

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
    pub betas: [f64; 2],
    pub eps: f64,
    pub step: u64,
    /// First and second moments by parameter path, flattened.
    pub moments: BTreeMap<String, (Tensor<1>, Tensor<1>)>,
    pub rounding: Option<ScaleRounding>,
    /// Unrounded scales by parameter path (only with `rounding`), flattened.
    pub masters: BTreeMap<String, Tensor<1>>,
}

/// Scales kept on export's exact grid during training.
#[derive(Debug, Clone)]
pub struct ScaleRounding {
    pub dtype: HfDtype,
    /// The quantizer of each scale parameter, by its path.
    pub specs: BTreeMap<String, QuantSpec>,
}

impl ScaleRounding {
    fn round(&self, path: &str, flat: Tensor<1>) -> Tensor<1> {
        let spec = self.specs.get(path).unwrap_or_else(|| panic!("scale parameter {path} has no quantizer spec"));
        let device = flat.device();
        let values = flat.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 scales");
        let n = values.len();
        // Every spec's grid was checked when the model was first rounded; steps with non-finite
        // gradients are skipped before the update, so the masters stay finite.
        let rounded: Vec<f32> = values.into_iter().map(|a| qat_quant::exact::round_alpha(spec, a, self.dtype).expect("roundable scale")).collect();
        Tensor::from_data(TensorData::new(rounded, [n]), &device)
    }
}

/// Quantizer scales are the parameters named `…quant.scale`.
pub fn is_scale(path: &str) -> bool {
    path.ends_with("quant.scale")
}

struct NormVisitor<'a> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<1>>,
}

impl ModuleVisitor for NormVisitor<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let s = g.square().sum();
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
    path: Vec<String>,
}

impl ModuleMapper for StepMapper<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = self.grads.get::<D>(param.id) else {
            return param;
        };
        let path = self.path.join(".");
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let p = tensor.inner();
        let shape = p.shape();
        let n = shape.num_elements();
        let g: Tensor<1> = (grad * self.grad_factor).reshape([n]);
        let o = &mut *self.opt;
        let h = if is_scale(&path) { o.scales } else { o.weights };
        let lr = h.lr * self.lr_factor;
        let [b1, b2] = o.betas;
        let (m, v) = match o.moments.remove(&path) {
            Some((m, v)) => (m * b1 + g.clone() * (1.0 - b1), v * b2 + g.square() * (1.0 - b2)),
            None => (g.clone() * (1.0 - b1), g.square() * (1.0 - b2)),
        };
        let t = o.step as i32;
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let denom = v.clone().sqrt() / bc2.sqrt() + o.eps;
        let rounding = o.rounding.as_ref().filter(|_| is_scale(&path));
        let flat: Tensor<1> = match rounding {
            Some(_) => o.masters.remove(&path).unwrap_or_else(|| p.reshape([n])),
            None => p.reshape([n]),
        };
        let flat = if h.weight_decay != 0.0 { flat * (1.0 - lr * h.weight_decay) } else { flat };
        let updated = flat - m.clone() / denom * (lr / bc1);
        let updated = match rounding {
            Some(r) => {
                let rounded = r.round(&path, updated.clone());
                o.masters.insert(path.clone(), updated);
                rounded
            }
            None => updated,
        };
        o.moments.insert(path, (m, v));
        let mut out = Tensor::from_inner(updated.reshape(shape));
        if require_grad {
            out = out.require_grad();
        }
        Param::from_mapped_value(id, out, mapper)
    }
}

impl AdamW {
    pub fn new(weights: GroupHyper, scales: GroupHyper, betas: [f64; 2], eps: f64) -> Self {
        AdamW { weights, scales, betas, eps, step: 0, moments: BTreeMap::new(), rounding: None, masters: BTreeMap::new() }
    }

    /// One update of every parameter that has a gradient: the learning rates scaled by
    /// `lr_factor` (the schedule) and gradients by `grad_factor` (clipping).
    pub fn step<M: Module>(&mut self, model: M, grads: &GradientsParams, lr_factor: f64, grad_factor: f64) -> M {
        self.step += 1;
        let mut mapper = StepMapper { opt: self, grads, lr_factor, grad_factor, path: Vec::new() };
        model.map(&mut mapper)
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
