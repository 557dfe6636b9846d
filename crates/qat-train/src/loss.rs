//! Training losses (`shared/docs/quantization.md` §5): next-token cross entropy over
//! positions with a target, and distillation from the frozen full-precision model — forward
//! KL `KL(p_T‖p_S)`, reverse KL `KL(p_S‖p_T)`, and CAKLD
//! `conf·KL(p_S‖p_T) + (1−conf)·KL(p_T‖p_S)` with `conf = p_T(label)` — all in f32, averaged
//! over the same positions.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

use crate::config::{KdKind, LossSection};

/// Targets of a micro-batch as tensors: clamped ids `[B, T, 1]` and a 0/1 mask `[B, T]`.
pub struct Targets {
    pub ids: Tensor<3, Int>,
    pub mask: Tensor<2>,
    pub count: usize,
    /// The targets as given (−1: none), for the fused CPU kernel.
    pub host: Vec<i64>,
}

impl Targets {
    /// From targets with −1 for "no target".
    pub fn new(targets: &[i64], rows: usize, t: usize, device: &burn::tensor::Device) -> Self {
        let ids: Vec<i64> = targets.iter().map(|&x| x.max(0)).collect();
        let mask: Vec<f32> = targets.iter().map(|&x| if x >= 0 { 1.0 } else { 0.0 }).collect();
        let count = targets.iter().filter(|&&x| x >= 0).count();
        Targets {
            ids: Tensor::from_data(TensorData::new(ids, [rows, t, 1]), device),
            mask: Tensor::from_data(TensorData::new(mask, [rows, t]), device),
            count,
            host: targets.to_vec(),
        }
    }
}

/// Sum over target positions of the token NLL (divide by `count` for the mean).
pub fn ce_sum(logits: Tensor<3>, targets: &Targets) -> Tensor<1> {
    ce_sum_from_log_probs(log_softmax(logits, 2), targets)
}

fn ce_sum_from_log_probs(lp: Tensor<3>, targets: &Targets) -> Tensor<1> {
    let [b, t, _] = lp.dims();
    let nll = lp.gather(2, targets.ids.clone()).reshape([b, t]).neg();
    (nll * targets.mask.clone()).sum()
}

/// Sum over target positions of the per-token distillation divergence.
pub fn kd_sum(student: Tensor<3>, teacher: Tensor<3>, targets: &Targets, kind: KdKind) -> Tensor<1> {
    kd_sum_from_log_probs(log_softmax(student, 2), teacher, targets, kind)
}

/// The divergences from the student's log-probabilities `lp_s`, each written as one weighted
/// sum over the vocabulary of `d = log p_S − log p_T`:
/// forward KL `Σ −p_T·d`, reverse KL `Σ p_S·d`, CAKLD `Σ (conf·p_S − (1−conf)·p_T)·d`.
fn kd_sum_from_log_probs(lp_s: Tensor<3>, teacher: Tensor<3>, targets: &Targets, kind: KdKind) -> Tensor<1> {
    let [b, t, _] = lp_s.dims();
    let lp_t = log_softmax(teacher, 2).detach();
    let d = lp_s.clone() - lp_t.clone();
    let per_token = match kind {
        KdKind::None => return Tensor::zeros([1], &lp_s.device()),
        KdKind::ForwardKl => (lp_t.exp().neg() * d).sum_dim(2),
        KdKind::ReverseKl => (lp_s.exp() * d).sum_dim(2),
        KdKind::Cakld => {
            let conf = lp_t.clone().gather(2, targets.ids.clone()).exp();
            let teacher_weight = lp_t.exp() * (conf.clone().neg() + 1.0);
            ((lp_s.exp() * conf - teacher_weight) * d).sum_dim(2)
        }
    };
    (per_token.reshape([b, t]) * targets.mask.clone()).sum()
}

/// The training objective of one micro-batch and its parts.
pub struct Objective {
    /// `(ce_weight·Σ CE + kd_weight·Σ KD) / n_targets`, differentiable.
    pub loss: Tensor<1>,
    /// Unweighted `Σ CE` over target positions.
    pub ce_sum: f64,
    /// Unweighted `Σ KD` (`None` without a teacher).
    pub kd_sum: Option<f64>,
}

/// The training objective of one micro-batch, normalised by the optimizer step's target count
/// `n_targets` so that micro-batch gradients add up to the step's mean:
/// `(ce_weight·Σ CE + kd_weight·Σ KD) / n_targets` with the weights and divergence of `weights`. On the CPU backend it is one fused kernel
/// ([`crate::fused_loss`]); elsewhere [`objective_composed`].
pub fn objective(logits: Tensor<3>, teacher_logits: Option<Tensor<3>>, targets: &Targets, weights: &LossSection, n_targets: usize) -> Objective {
    match crate::fused_loss::objective(logits, teacher_logits.as_ref(), &targets.host, weights, n_targets) {
        Ok(objective) => objective,
        Err(logits) => objective_composed(*logits, teacher_logits, targets, weights, n_targets),
    }
}

/// [`objective`] composed from tensor operations (any device; the fused kernel's reference).
pub fn objective_composed(logits: Tensor<3>, teacher_logits: Option<Tensor<3>>, targets: &Targets, weights: &LossSection, n_targets: usize) -> Objective {
    let LossSection { ce_weight, kd, kd_weight } = *weights;
    let n = n_targets.max(1) as f64;
    // One log-softmax of the student serves both terms.
    let lp_s = log_softmax(logits, 2);
    let ce = ce_sum_from_log_probs(lp_s.clone(), targets);
    let ce_sum = ce.clone().into_scalar::<f32>() as f64;
    let total = ce * (ce_weight / n);
    match teacher_logits {
        Some(t) => {
            let kd = kd_sum_from_log_probs(lp_s, t, targets, kd);
            let kd_sum = kd.clone().into_scalar::<f32>() as f64;
            Objective { loss: total + kd * (kd_weight / n), ce_sum, kd_sum: Some(kd_sum) }
        }
        None => Objective { loss: total, ce_sum, kd_sum: None },
    }
}
