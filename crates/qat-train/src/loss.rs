//! Training losses (`shared/docs/quantization.md` §5): next-token cross entropy over
//! positions with a target, and distillation from the frozen full-precision model — forward
//! KL `KL(p_T‖p_S)`, reverse KL `KL(p_S‖p_T)`, and CAKLD
//! `conf·KL(p_S‖p_T) + (1−conf)·KL(p_T‖p_S)` with `conf = p_T(label)` — all in f32, averaged
//! over the same positions.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

use crate::config::KdKind;

/// Targets of a micro-batch as tensors: clamped ids `[B, T, 1]` and a 0/1 mask `[B, T]`.
pub struct Targets {
    pub ids: Tensor<3, Int>,
    pub mask: Tensor<2>,
    pub count: usize,
}

impl Targets {
    /// From targets with −1 for "no target".
    pub fn new(targets: &[i64], rows: usize, t: usize, device: &burn::tensor::Device) -> Self {
        let ids: Vec<i64> = targets.iter().map(|&x| x.max(0)).collect();
        let mask: Vec<f32> = targets.iter().map(|&x| if x >= 0 { 1.0 } else { 0.0 }).collect();
        let count = targets.iter().filter(|&&x| x >= 0).count();
        Targets { ids: Tensor::from_data(TensorData::new(ids, [rows, t, 1]), device), mask: Tensor::from_data(TensorData::new(mask, [rows, t]), device), count }
    }
}

/// Sum over target positions of the token NLL (divide by `count` for the mean).
pub fn ce_sum(logits: Tensor<3>, targets: &Targets) -> Tensor<1> {
    let [b, t, _] = logits.dims();
    let nll = log_softmax(logits, 2).gather(2, targets.ids.clone()).reshape([b, t]).neg();
    (nll * targets.mask.clone()).sum()
}

/// Sum over target positions of the per-token distillation divergence.
pub fn kd_sum(student: Tensor<3>, teacher: Tensor<3>, targets: &Targets, kind: KdKind) -> Tensor<1> {
    let [b, t, _] = student.dims();
    let lp_s = log_softmax(student, 2);
    let lp_t = log_softmax(teacher, 2).detach();
    let forward = || (lp_t.clone().exp() * (lp_t.clone() - lp_s.clone())).sum_dim(2).reshape([b, t]);
    let reverse = || (lp_s.clone().exp() * (lp_s.clone() - lp_t.clone())).sum_dim(2).reshape([b, t]);
    let per_token = match kind {
        KdKind::None => return Tensor::zeros([1], &lp_s.device()),
        KdKind::ForwardKl => forward(),
        KdKind::ReverseKl => reverse(),
        KdKind::Cakld => {
            let conf = lp_t.clone().gather(2, targets.ids.clone()).reshape([b, t]).exp();
            conf.clone() * reverse() + (conf.neg() + 1.0) * forward()
        }
    };
    (per_token * targets.mask.clone()).sum()
}
