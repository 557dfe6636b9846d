//! The training objective of [`crate::loss::objective`] as one CPU kernel with its own backward.
//!
//! Composed from tensor operations, CE + CAKLD over `[rows, vocab]` logits is about thirty
//! single-threaded passes over tensors of `rows·vocab` floats forward and backward (SmolLM2:
//! 49,152 columns, 200 MB per micro-batch of 1,024 tokens). Here each row is read from cache a
//! few times, rows run in parallel, and the forward pass writes the gradient with respect to
//! the student logits directly, over the logits themselves (the loss is a sum over rows of
//! functions of that row alone), so the backward is at most one scaling by the incoming
//! gradient and no second `[rows, vocab]` buffer exists. Used when the logits live on the CPU
//! backend (`Autodiff<Flex>`); [`crate::loss::objective`] is the reference it is tested against
//! and the path on every other device.
//!
//! Per target row, with `p = softmax(z)`, `q = softmax(t)` (teacher), `d = log p − log q`,
//! `conf = q[y]`:
//! - CE `= logsumexp(z) − z[y]`, `∂/∂z = p − onehot(y)`;
//! - forward KL `KL(q‖p) = −Σ q·d`, `∂/∂z = p − q`;
//! - reverse KL `KL(p‖q) = Σ p·d = r`, `∂/∂z = p ∘ (d − r)`;
//! - CAKLD `= conf·KL(p‖q) + (1 − conf)·KL(q‖p)` (conf constant), gradient likewise combined.
//!
//! The objective is `(w_ce·Σ CE + w_kd·Σ KD) / n`, so row gradients are scaled by `w/n`.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Shape, Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind, unary};
use rayon::prelude::*;

use crate::config::{KdKind, LossSection};
use crate::loss::Objective;

use qat_quant::fused::{FlexFloat, f32_values, f32_values_mut};
use qat_quant::simd;

/// Loss sums of one row: `(CE, KD)`; the row's logits `z` are replaced by the objective's
/// gradient with respect to them (the same arithmetic as from a separate buffer: with a
/// teacher the logits are read from a copy in `z_copy`).
#[inline(always)]
fn row(z: &mut [f32], teacher: Option<&[f32]>, target: i64, kind: KdKind, w: (f32, f32), scratch: &mut Vec<f32>, z_copy: &mut Vec<f32>) -> (f64, f64) {
    if target < 0 {
        z.fill(0.0);
        return (0.0, 0.0);
    }
    let y = target as usize;
    let lse = |x: &[f32]| {
        let m = simd::max(x);
        m + simd::sum_exp_shifted(x, m).ln()
    };
    let lse_z = lse(z);
    let ce = (lse_z - z[y]) as f64;
    let (w_ce, w_kd) = w;
    let Some(t) = teacher.filter(|_| kind != KdKind::None) else {
        for g in z.iter_mut() {
            *g = w_ce * simd::exp(*g - lse_z);
        }
        z[y] -= w_ce;
        return (ce, 0.0);
    };
    z_copy.clear();
    z_copy.extend_from_slice(z);
    let (grad, z) = (z, &z_copy[..]);
    let lse_t = lse(t);
    // p into `grad`, q into `scratch`, with the two KL sums.
    scratch.resize(t.len(), 0.0);
    let (mut rev, mut fwd) = (0.0f64, 0.0f64);
    for ((g, q), (&zv, &tv)) in grad.iter_mut().zip(scratch.iter_mut()).zip(z.iter().zip(t)) {
        let (lp, lq) = (zv - lse_z, tv - lse_t);
        let (p, qv) = (simd::exp(lp), simd::exp(lq));
        *g = p;
        *q = qv;
        rev += (p * (lp - lq)) as f64;
        fwd += (qv * (lq - lp)) as f64;
    }
    let conf = simd::exp(t[y] - lse_t);
    let (a, b) = match kind {
        KdKind::ForwardKl => (0.0, 1.0),
        KdKind::ReverseKl => (1.0, 0.0),
        _ => (conf, 1.0 - conf),
    };
    let kd = a as f64 * rev + b as f64 * fwd;
    let rev32 = rev as f32;
    for ((g, &q), (&zv, &tv)) in grad.iter_mut().zip(scratch.iter()).zip(z.iter().zip(t)) {
        let p = *g;
        let d = (zv - lse_z) - (tv - lse_t);
        *g = w_ce * p + w_kd * (a * p * (d - rev32) + b * (p - q));
    }
    grad[y] -= w_ce;
    (ce, kd)
}

/// Sums of all rows, and every row of `z` replaced by its gradient, rows in parallel; the sums
/// are added in row order, so that the reported loss does not depend on how the rows were
/// shared among threads.
fn kernel(z: &mut [f32], teacher: Option<&[f32]>, targets: &[i64], vocab: usize, kind: KdKind, w: (f32, f32)) -> (f64, f64) {
    let rows: Vec<(f64, f64)> = z
        .par_chunks_mut(vocab)
        .enumerate()
        .map_init(
            || (Vec::new(), Vec::new()),
            |(scratch, z_copy), (r, zr)| {
                let tr = teacher.map(|t| &t[r * vocab..(r + 1) * vocab]);
                simd::vectorized(|| row(zr, tr, targets[r], kind, w, scratch, z_copy))
            },
        )
        .collect();
    rows.iter().fold((0.0, 0.0), |acc, r| (acc.0 + r.0, acc.1 + r.1))
}

#[derive(Debug)]
struct ScaleStoredGradient;

impl Backward<Flex, 1> for ScaleStoredGradient {
    /// `∂objective/∂logits`, computed in the forward pass.
    type State = FlexFloat;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let stored = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |upstream| {
            let s = upstream.into_data().try_to_vec::<f32>().expect("f32 loss gradient")[0];
            // `loss.backward()` seeds 1: no pass over the `[rows, vocab]` gradient then.
            if s == 1.0 { stored } else { <Flex as burn::backend::ops::FloatTensorOps<Flex>>::float_mul_scalar(stored, s.into()) }
        });
    }
}

/// [`crate::loss::objective`] computed by the fused kernel when `logits` are on the CPU
/// backend's autodiff device; elsewhere `Err(logits)`, giving them back to the caller (boxed:
/// a tensor handle is larger than the `Ok` value).
/// `targets` are the host targets (−1: no target) of the `[B, T]` positions.
///
/// `logits` are taken by value so that, when the caller holds no other handle on them, the
/// kernel writes the gradient over them instead of into a copy.
pub fn objective(
    logits: Tensor<3>,
    teacher_logits: Option<&Tensor<3>>,
    targets: &[i64],
    weights: &LossSection,
    n_targets: usize,
) -> Result<Objective, Box<Tensor<3>>> {
    let LossSection { ce_weight, kd, kd_weight } = *weights;
    let teacher = match teacher_logits {
        Some(t) => match t.clone().inner().try_into_primitive::<Flex>() {
            Ok(t) => Some(t),
            Err(_) => return Err(Box::new(logits)),
        },
        None => None,
    };
    let Ok(student) = logits.clone().try_into_primitive::<Autodiff<Flex>>() else { return Err(Box::new(logits)) };
    let [_, _, vocab] = logits.dims();
    drop(logits);
    let n = n_targets.max(1) as f64;
    let w = ((ce_weight / n) as f32, (kd_weight / n) as f32);
    let guard = student.node();
    // The logits' buffer becomes the gradient (in place when nothing else holds it, as after
    // the head's product; copied on write otherwise): no second `[rows, vocab]` buffer.
    let mut z = student.into_primitive();
    let kind = if teacher.is_some() { kd } else { KdKind::None };
    let t = teacher.as_ref().map(f32_values);
    let (ce, kd_sum) = kernel(f32_values_mut(&mut z), t.as_deref(), targets, vocab, kind, w);
    drop(t);
    let value = (ce_weight * ce + kd_weight * kd_sum) / n;
    let loss = FlexFloat::from_data(TensorData::new(vec![value as f32], Shape::new([1])));
    let out = match ScaleStoredGradient.prepare::<NoCheckpointing>([guard]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(z, loss),
        OpsKind::UnTracked(prep) => prep.finish(loss),
    };
    Ok(Objective { loss: Tensor::from_primitive::<Autodiff<Flex>>(out), ce_sum: ce, kd_sum: teacher_logits.map(|_| kd_sum) })
}
