//! [`crate::quantizer::fake_quantize`] for SEQ, integer and asymmetric grids as one operation
//! with its own backward: a CPU kernel, and the same formulas as tensor operations for every
//! other backend.
//!
//! Composed from tensor operations, fake quantization is about fifteen autodiff operations per
//! weight forward and more backward (the scale gradients reduce over broadcasts), once per
//! micro-batch: for SmolLM2 on the CPU a fixed cost of seconds per step, whatever the batch.
//! On the CPU one parallel pass computes `ŵ`, and one pass in the backward computes both
//! gradients. On GPU backends ([`portable`]) the autodiff graph holds one node per weight
//! instead of ~15, keeps no intermediate `[out, in]` tensors, and the backward is a few
//! element-wise operations and a reduction per learned value (two for asymmetric grids),
//! which the fusion backend compiles into few kernels. The values are bit for bit those of the composed expression (same f32 operations
//! in the same order), so what export writes ([`crate::quantizer::quantize`], composed) is
//! still exactly what training saw.
//!
//! With `u = w/α` (α after [`crate::quantizer::learned_alpha`]), `c = clamp(u, lo, hi)`,
//! `L = round(k·c − s) + s` (SEQ: `k = 2^(b−1)`, `s = ½`, `±0.99`; int: `k = 1`, `s = 0`,
//! `[−Qn, Qp]`), `step = α/k`, `ŵ = step·L`:
//! `∂ŵ/∂w = 1[lo ≤ u ≤ hi]` (masked STE) and `∂ŵ/∂α = L/k − 1[lo ≤ u ≤ hi]·u`, summed over each
//! scale's group — what autodiff gives for the composed expression.
//!
//! Asymmetric grids ([`Affine`]): with `s' = max(s, ALPHA_MIN)`, `u = (w − m)/s'`,
//! `L = round(clamp(u, 0, 2^b − 1))`, `ŵ = s'·L + m`: `∂ŵ/∂w = 1[0 ≤ u ≤ 2^b − 1]`,
//! `∂ŵ/∂s = (L − 1[inside]·u)·1[s ≥ ALPHA_MIN]`, `∂ŵ/∂m = 1 − 1[inside]`.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::{Autodiff, Backend, DispatchKindConversion, DispatchTensor, Flex};
use burn::tensor::{Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use rayon::prelude::*;

use crate::quantizer::{ALPHA_MIN, SEQ_CLIP, asym_qmax, int_range, learned_alpha};
use crate::scheme::{GradVariant, QuantSpec, Scheme};

/// The CPU backend's float tensor.
pub type FlexFloat = <Flex as burn::backend::BackendTypes>::FloatTensorPrimitive;

/// The grid of one spec, as the composed expression applies it.
#[derive(Debug, Clone, Copy)]
struct Grid {
    lo: f32,
    hi: f32,
    k: f32,
    shift: f32,
}

impl Grid {
    /// `None` for the schemes and gradient variants left to the composed expression.
    fn of(spec: &QuantSpec) -> Option<Grid> {
        if spec.grad == GradVariant::Angelslim {
            return None;
        }
        match spec.scheme {
            Scheme::Seq => Some(Grid { lo: -SEQ_CLIP as f32, hi: SEQ_CLIP as f32, k: (1u32 << (spec.bits - 1)) as f32, shift: 0.5 }),
            Scheme::Int => {
                let (qn, qp) = int_range(spec.bits);
                Some(Grid { lo: -qn as f32, hi: qp as f32, k: 1.0, shift: 0.0 })
            }
            _ => None,
        }
    }

    /// `(u, inside, L)` of one weight.
    #[inline]
    fn level(&self, w: f32, alpha: f32) -> (f32, bool, f32) {
        let u = w / alpha;
        let inside = u >= self.lo && u <= self.hi;
        let c = u.clamp(self.lo, self.hi);
        (u, inside, round_half_even(c * self.k - self.shift) + self.shift)
    }

    /// `ŵ` of every weight; `alpha` holds one scale per `w.len() / alpha.len()` consecutive weights.
    fn forward(&self, w: &[f32], alpha: &[f32]) -> Vec<f32> {
        let group = w.len() / alpha.len();
        let mut out = vec![0.0f32; w.len()];
        out.par_chunks_mut(group).zip(w.par_chunks(group)).zip(alpha.par_iter()).for_each(|((o, w), &a)| {
            let step = a / self.k;
            for (o, &w) in o.iter_mut().zip(w) {
                *o = step * self.level(w, a).2;
            }
        });
        out
    }

    /// `∂/∂α`, and `∂/∂w` written over the incoming gradient `g` of `ŵ` (which the backward
    /// owns: the weight gradient needs no buffer of its own).
    fn backward(&self, w: &[f32], alpha: &[f32], g: &mut [f32]) -> Vec<f32> {
        let group = w.len() / alpha.len();
        let mut da = vec![0.0f32; alpha.len()];
        g.par_chunks_mut(group).zip(da.par_iter_mut()).zip(w.par_chunks(group)).zip(alpha.par_iter()).for_each(|(((g, da), w), &a)| {
            let mut acc = 0.0f64;
            for (g, &w) in g.iter_mut().zip(w) {
                let (u, inside, level) = self.level(w, a);
                let dl = level / self.k - if inside { u } else { 0.0 };
                acc += (*g * dl) as f64;
                if !inside {
                    *g = 0.0;
                }
            }
            *da = acc as f32;
        });
        da
    }
}

/// The asymmetric grid `0..=qmax` with a step and a minimum per group ([`Scheme::Asym`]).
#[derive(Debug, Clone, Copy)]
struct Affine {
    qmax: f32,
}

impl Affine {
    /// `(u, inside, L)` of one weight under the floored step `s` and minimum `m`.
    #[inline]
    fn level(&self, w: f32, s: f32, m: f32) -> (f32, bool, f32) {
        let u = (w - m) / s;
        (u, (0.0..=self.qmax).contains(&u), round_half_even(u.clamp(0.0, self.qmax)))
    }

    /// `ŵ` of every weight; `pairs` holds `(s, m)` per `w.len() / (pairs.len() / 2)` weights.
    fn forward(&self, w: &[f32], pairs: &[f32]) -> Vec<f32> {
        let group = 2 * w.len() / pairs.len();
        let mut out = vec![0.0f32; w.len()];
        out.par_chunks_mut(group).zip(w.par_chunks(group)).zip(pairs.par_chunks(2)).for_each(|((o, w), p)| {
            let (s, m) = (p[0].max(ALPHA_MIN as f32), p[1]);
            for (o, &w) in o.iter_mut().zip(w) {
                *o = s * self.level(w, s, m).2 + m;
            }
        });
        out
    }

    /// `∂/∂(s, m)`, and `∂/∂w` written over the incoming gradient `g` of `ŵ`.
    fn backward(&self, w: &[f32], pairs: &[f32], g: &mut [f32]) -> Vec<f32> {
        let group = 2 * w.len() / pairs.len();
        let mut dp = vec![0.0f32; pairs.len()];
        g.par_chunks_mut(group).zip(dp.par_chunks_mut(2)).zip(w.par_chunks(group)).zip(pairs.par_chunks(2)).for_each(|(((g, dp), w), p)| {
            let (s, m) = (p[0].max(ALPHA_MIN as f32), p[1]);
            let (mut ds, mut dm) = (0.0f64, 0.0f64);
            for (g, &w) in g.iter_mut().zip(w) {
                let (u, inside, level) = self.level(w, s, m);
                ds += (*g * (level - if inside { u } else { 0.0 })) as f64;
                if !inside {
                    dm += *g as f64;
                    *g = 0.0;
                }
            }
            // The floor's gradient: none below it (as Burn's clamp_min).
            dp[0] = if p[0] < ALPHA_MIN as f32 { 0.0 } else { ds as f32 };
            dp[1] = dm as f32;
        });
        dp
    }
}

/// One fused fake quantization: symmetric grids get one learned value per group, asymmetric
/// ones two.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    Symmetric(Grid),
    Affine(Affine),
}

impl Kernel {
    /// `None` for the schemes and gradient variants left to the composed expression.
    fn of(spec: &QuantSpec) -> Option<Kernel> {
        match spec.scheme {
            Scheme::Asym => Some(Kernel::Affine(Affine { qmax: asym_qmax(spec.bits) as f32 })),
            _ => Grid::of(spec).map(Kernel::Symmetric),
        }
    }

    fn forward(&self, w: &[f32], scales: &[f32]) -> Vec<f32> {
        match self {
            Kernel::Symmetric(g) => g.forward(w, scales),
            Kernel::Affine(a) => a.forward(w, scales),
        }
    }

    fn backward(&self, w: &[f32], scales: &[f32], g: &mut [f32]) -> Vec<f32> {
        match self {
            Kernel::Symmetric(grid) => grid.backward(w, scales, g),
            Kernel::Affine(a) => a.backward(w, scales, g),
        }
    }

    /// [`Kernel::forward`] as tensor operations (any backend, no autodiff): `w: [out, in]` and
    /// its effective scales (any shape holding one value, or one `(s, m)` pair, per group of
    /// consecutive weights) → `ŵ: [out, in]`, the same f32 operations in the same order.
    fn forward_tensors(&self, w: Tensor<2>, scales: Tensor<2>) -> Tensor<2> {
        let dims = w.dims();
        let (w, scales) = self.per_group(w, scales);
        let values = match self {
            Kernel::Symmetric(grid) => {
                let level = grid.level_tensors(w / scales.clone()).1;
                scales / grid.k as f64 * level
            }
            Kernel::Affine(a) => {
                let (s, m) = Affine::step_and_min(scales);
                let level = a.level_tensors((w - m.clone()) / s.clone()).1;
                s * level + m
            }
        };
        values.reshape(dims)
    }

    /// [`Kernel::backward`] as tensor operations: `(∂/∂w, ∂/∂scales)` from the gradient `g` of
    /// `ŵ`, in the shapes of `w` and `scales`. The group sums run in f32 (the CPU kernel sums in
    /// f64).
    fn backward_tensors(&self, w: Tensor<2>, scales: Tensor<2>, g: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let (w_dims, s_dims) = (w.dims(), scales.dims());
        let (w, scales) = self.per_group(w, scales);
        let g = g.reshape(w.dims());
        let (dw, ds) = match self {
            Kernel::Symmetric(grid) => {
                let u = w / scales;
                let (inside, level) = grid.level_tensors(u.clone());
                let dl = level / grid.k as f64 - u.mask_fill(inside.clone().bool_not(), 0.0);
                let da = (g.clone() * dl).sum_dim(1);
                (g.mask_fill(inside.bool_not(), 0.0), da)
            }
            Kernel::Affine(a) => {
                let floored = scales.clone().narrow(1, 0, 1).lower_elem(ALPHA_MIN);
                let (s, m) = Affine::step_and_min(scales);
                let u = (w - m) / s;
                let (inside, level) = a.level_tensors(u.clone());
                let outside = inside.clone().bool_not();
                let ds = (g.clone() * (level - u.mask_fill(outside.clone(), 0.0))).sum_dim(1).mask_fill(floored, 0.0);
                let dm = g.clone().mask_fill(inside, 0.0).sum_dim(1);
                (g.mask_fill(outside, 0.0), Tensor::cat(vec![ds, dm], 1))
            }
        };
        (dw.reshape(w_dims), ds.reshape(s_dims))
    }

    /// `w` as `[groups, group length]` and the scales as `[groups, 1]` (`[groups, 2]` pairs).
    fn per_group(&self, w: Tensor<2>, scales: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let per = match self {
            Kernel::Symmetric(_) => 1,
            Kernel::Affine(_) => 2,
        };
        let groups = scales.shape().num_elements() / per;
        let len = w.shape().num_elements() / groups;
        (w.reshape([groups, len]), scales.reshape([groups, per]))
    }
}

impl Grid {
    /// `(inside, L)` of [`Grid::level`] for a tensor of `u = w/α`.
    fn level_tensors(&self, u: Tensor<2>) -> (Tensor<2, burn::tensor::Bool>, Tensor<2>) {
        let c = u.clone().clamp(self.lo as f64, self.hi as f64);
        let inside = c.clone().equal(u);
        (inside, (c * self.k as f64 - self.shift as f64).round() + self.shift as f64)
    }
}

impl Affine {
    /// `(inside, L)` of [`Affine::level`] for a tensor of `u = (w − m)/s'`.
    fn level_tensors(&self, u: Tensor<2>) -> (Tensor<2, burn::tensor::Bool>, Tensor<2>) {
        let c = u.clone().clamp(0.0, self.qmax as f64);
        let inside = c.clone().equal(u);
        (inside, c.round())
    }

    /// The floored steps `s'` and the minimums `m` of `[groups, 2]` pairs, each `[groups, 1]`.
    fn step_and_min(pairs: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        (pairs.clone().narrow(1, 0, 1).clamp_min(ALPHA_MIN), pairs.narrow(1, 1, 1))
    }
}

/// `round_ties_even(x)` for `|x| < 2²²` (grid levels are at most 128): adding `1.5·2²³` leaves no
/// fraction bits, so the addition itself rounds to the nearest integer, ties to even. Unlike
/// the library call it vectorises on every x86-64.
#[inline]
fn round_half_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

#[derive(Debug)]
struct FakeQuantBackward;

impl Backward<Flex, 2> for FakeQuantBackward {
    /// The weight, the effective scales and the kernel.
    type State = (FlexFloat, FlexFloat, Kernel);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (w, alpha, grid) = ops.state;
        let [w_node, alpha_node] = ops.parents;
        // The gradient of `ŵ` becomes the weight's (copied first only if something else holds it).
        let mut g = grads.consume::<Flex>(&ops.node);
        let a_shape = alpha.layout().shape().clone();
        let da = grid.backward(&f32_values(&w), &f32_values(&alpha), f32_values_mut(&mut g));
        if let Some(node) = w_node {
            grads.register::<Flex>(node.id, g);
        }
        if let Some(node) = alpha_node {
            grads.register::<Flex>(node.id, FlexFloat::from_data(TensorData::new(da, a_shape)));
        }
    }
}

/// [`FakeQuantBackward`] for any backend, as tensor operations ([`Kernel::backward_tensors`]).
#[derive(Debug)]
struct TensorOpsBackward;

impl<B: Backend> Backward<B, 2> for TensorOpsBackward
where
    DispatchTensor: DispatchKindConversion<B>,
{
    /// The weight, the effective scales and the kernel.
    type State = (B::FloatTensorPrimitive, B::FloatTensorPrimitive, Kernel);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (w, scales, kernel) = ops.state;
        let [w_node, scales_node] = ops.parents;
        let g = grads.consume::<B>(&ops.node);
        let (dw, ds) = kernel.backward_tensors(Tensor::from_primitive::<B>(w), Tensor::from_primitive::<B>(scales), Tensor::from_primitive::<B>(g));
        if let Some(node) = w_node {
            grads.register::<B>(node.id, primitive::<B>(dw));
        }
        if let Some(node) = scales_node {
            grads.register::<B>(node.id, primitive::<B>(ds));
        }
    }
}

/// The primitive of a tensor computed on backend `B` from `B`'s own primitives.
fn primitive<B: Backend>(t: Tensor<2>) -> B::FloatTensorPrimitive
where
    DispatchTensor: DispatchKindConversion<B>,
{
    t.try_into_primitive::<B>().expect("operations on a backend's tensors stay on that backend")
}

/// The values of an f32 CPU tensor in row-major order, borrowed where its storage already is
/// that (no copy of weights that the model still holds).
pub fn f32_values(t: &FlexFloat) -> std::borrow::Cow<'_, [f32]> {
    let n = t.layout().num_elements();
    if t.is_contiguous() && t.layout().start_offset() == 0 {
        std::borrow::Cow::Borrowed(&t.storage::<f32>()[..n])
    } else {
        std::borrow::Cow::Owned(t.to_contiguous().storage::<f32>()[..n].to_vec())
    }
}

/// The values of an f32 CPU tensor in row-major order, to overwrite: in place when nothing else
/// holds its storage and it is laid out row-major from its start, else in a copy the tensor
/// then owns (copy on write).
pub fn f32_values_mut(t: &mut FlexFloat) -> &mut [f32] {
    if !(t.is_contiguous() && t.layout().start_offset() == 0) {
        *t = t.to_contiguous();
    }
    let n = t.layout().num_elements();
    &mut t.storage_mut::<f32>()[..n]
}

/// Whether [`crate::quantizer::fake_quantize`] takes the fused operation where it can (the
/// default); `qat bench --fake-quant composed` turns it off to measure what it saves.
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the fused fake quantization on or off for the whole process (a benchmark switch: the
/// values are the same either way, the gradients equal up to summation order).
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// The fused [`crate::quantizer::fake_quantize`] for SEQ, integer and asymmetric specs without the
/// AngelSlim gradient: the CPU kernel when `w` lives on the CPU backend (plain or autodiff), the
/// tensor-operation form ([`portable`]) on GPU backends; `None` otherwise or when turned off
/// ([`set_enabled`]).
pub(crate) fn fake_quantize(w: &Tensor<2>, alpha: &Tensor<2>, spec: &QuantSpec) -> Option<Tensor<2>> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    on_gpu(w, alpha, spec).or_else(|| cpu_kernel(w, alpha, spec))
}

/// [`portable_on`] the GPU backend when the build has one and `w` lives there, else `None`.
fn on_gpu(w: &Tensor<2>, alpha: &Tensor<2>, spec: &QuantSpec) -> Option<Tensor<2>> {
    #[cfg(any(feature = "vulkan", feature = "wgpu"))]
    return portable_on::<burn::backend::Cube>(w, alpha, spec);
    #[cfg(not(any(feature = "vulkan", feature = "wgpu")))]
    {
        let _ = (w, alpha, spec);
        None
    }
}

/// The fused fake quantization as tensor operations with its own backward, on the CPU backend
/// (where [`crate::quantizer::fake_quantize`] takes the CPU kernel instead) or a GPU backend:
/// the form GPU training runs, callable on the CPU so that tests check it against the composed
/// expression. `None` for specs left to the composed expression.
pub fn portable(w: Tensor<2>, alpha: Option<Tensor<2>>, spec: &QuantSpec) -> Option<Tensor<2>> {
    let alpha = alpha?;
    on_gpu(&w, &alpha, spec).or_else(|| portable_on::<Flex>(&w, &alpha, spec))
}

/// [`portable`] on backend `B`: one autodiff node whose backward is [`TensorOpsBackward`] when
/// `w` is an autodiff tensor of `B`, the plain forward when it is a plain one, `None` when it
/// lives elsewhere.
fn portable_on<B: Backend>(w: &Tensor<2>, alpha: &Tensor<2>, spec: &QuantSpec) -> Option<Tensor<2>>
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    let kernel = Kernel::of(spec)?;
    let numel = w.dims().iter().product();
    if let Ok(w_ad) = w.clone().try_into_primitive::<Autodiff<B>>() {
        let a_ad = learned_alpha(alpha.clone(), spec, numel).0.try_into_primitive::<Autodiff<B>>().ok()?;
        let nodes = [w_ad.node(), a_ad.node()];
        let (w_p, a_p) = (w_ad.into_primitive(), a_ad.into_primitive());
        let out = primitive::<B>(kernel.forward_tensors(Tensor::from_primitive::<B>(w_p.clone()), Tensor::from_primitive::<B>(a_p.clone())));
        let out = match TensorOpsBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((w_p, a_p, kernel), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        return Some(Tensor::from_primitive::<Autodiff<B>>(out));
    }
    // Both on plain `B` before any work: on another backend the caller tries the next path.
    w.clone().try_into_primitive::<B>().ok()?;
    alpha.clone().try_into_primitive::<B>().ok()?;
    Some(kernel.forward_tensors(w.clone(), learned_alpha(alpha.clone(), spec, numel).0))
}

/// The CPU kernel ([`FakeQuantBackward`]) when `w` lives on the CPU backend, `None` otherwise.
fn cpu_kernel(w: &Tensor<2>, alpha: &Tensor<2>, spec: &QuantSpec) -> Option<Tensor<2>> {
    let grid = Kernel::of(spec)?;
    let dims = w.dims();
    let numel = dims[0] * dims[1];
    let values = |w: &FlexFloat, a: &FlexFloat| FlexFloat::from_data(TensorData::new(grid.forward(&f32_values(w), &f32_values(a)), dims));
    if let Ok(w_ad) = w.clone().try_into_primitive::<Autodiff<Flex>>() {
        let a_ad = learned_alpha(alpha.clone(), spec, numel).0.try_into_primitive::<Autodiff<Flex>>().ok()?;
        let nodes = [w_ad.node(), a_ad.node()];
        let (w_p, a_p) = (w_ad.into_primitive(), a_ad.into_primitive());
        let out = values(&w_p, &a_p);
        let out = match FakeQuantBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((w_p, a_p, grid), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        return Some(Tensor::from_primitive::<Autodiff<Flex>>(out));
    }
    let w_p = w.clone().try_into_primitive::<Flex>().ok()?;
    let a_p = learned_alpha(alpha.clone(), spec, numel).0.try_into_primitive::<Flex>().ok()?;
    Some(Tensor::from_primitive::<Flex>(values(&w_p, &a_p)))
}
