//! Softmax, RMSNorm, SwiGLU, RoPE and attention ([`attention`], its own file) with their own
//! backward on the CPU backend.
//!
//! Burn's autodiff composes each of them from element-wise operations — single-threaded passes
//! over full activations, each recorded with its own backward (RMSNorm: square, mean, add,
//! sqrt, reciprocal and two products; SwiGLU: sigmoid, two products; RoPE: two slices, a
//! negation, a concatenation, two products and a sum) — while one parallel pass
//! per row computes the value, and one the gradients. Each function here is that pass on the
//! CPU backend (plain or autodiff) and the composed expression on every other device; the
//! composed form stays the reference the fused one is tested against
//! (`tests/fused_ops.rs`, `tests/fused_softmax.rs`).
//!
//! Softmax runs the backend's fused, vectorised, multi-threaded kernel forward and keeps only
//! its output `p`; the backward is one parallel pass per row: `∂x = p ∘ (g − Σ g·p)`.

use burn::backend::ops::ActivationOps;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind, unary};
use qat_quant::fused::{FlexFloat, f32_values, f32_values_mut};
use rayon::prelude::*;

mod attention;
pub use attention::{attention, attention_composed};

#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Flex, 1> for SoftmaxBackward {
    /// The softmax output.
    type State = FlexFloat;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let p = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            let shape = p.layout().shape().clone();
            let row = *shape.last().expect("softmax of a tensor with dimensions");
            let (p, g) = (f32_values(&p), f32_values(&g));
            let mut dx = vec![0.0f32; p.len()];
            dx.par_chunks_mut(row).zip(p.par_chunks(row).zip(g.par_chunks(row))).for_each(|(dx, (p, g))| {
                let dot: f32 = p.iter().zip(g).map(|(p, g)| p * g).sum();
                for ((d, &p), &g) in dx.iter_mut().zip(p).zip(g) {
                    *d = p * (g - dot);
                }
            });
            FlexFloat::from_data(TensorData::new(dx, shape))
        });
    }
}

/// Whether `x` lives on the CPU backend without autodiff, whose tensors are host memory (where
/// AdamW updates in place on the host, `qat_train::optim::Placement::Auto`).
pub fn on_flex<const D: usize>(x: &Tensor<D>) -> bool {
    x.clone().try_into_primitive::<Flex>().is_ok()
}

/// `softmax(x, D − 1)`: the fused op on the CPU backend's autodiff device, Burn's softmax
/// elsewhere.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let ad = match x.clone().try_into_primitive::<Autodiff<Flex>>() {
        Ok(ad) => ad,
        Err(_) => return burn::tensor::activation::softmax(x, D - 1),
    };
    let node = ad.node();
    let p = <Flex as ActivationOps<Flex>>::softmax(ad.into_primitive(), D - 1);
    let out = match SoftmaxBackward.prepare::<NoCheckpointing>([node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(p.clone(), p),
        OpsKind::UnTracked(prep) => prep.finish(p),
    };
    Tensor::from_primitive::<Autodiff<Flex>>(out)
}

/// Rows of at least this many elements each go to one rayon task; shorter rows are grouped.
const ROWS_PER_TASK_ELEMENTS: usize = 1 << 14;

fn rows_per_task(row: usize) -> usize {
    (ROWS_PER_TASK_ELEMENTS / row.max(1)).max(1)
}

/// `x · w / √(mean(x²) + ε)` over the last dimension (RMSNorm as Llama defines it), composed
/// from tensor operations: every device, and the reference of [`rms_norm`].
pub fn rms_norm_composed<const D: usize>(x: Tensor<D>, w: Tensor<1>, eps: f64) -> Tensor<D> {
    let var = x.clone().square().mean_dim(D - 1);
    let w: Tensor<D> = w.unsqueeze();
    x * (var + eps).sqrt().recip() * w
}

/// Per row of `x` (length `d`): `r = 1/√(Σx²/d + ε)` and `y = x·r·w`.
fn rms_norm_forward(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let rows = x.len() / d;
    let mut y = vec![0.0f32; x.len()];
    let mut r = vec![0.0f32; rows];
    let per = rows_per_task(d);
    y.par_chunks_mut(d * per).zip(r.par_chunks_mut(per)).zip(x.par_chunks(d * per)).for_each(|((y, r), x)| {
        for ((y, r), x) in y.chunks_mut(d).zip(r.iter_mut()).zip(x.chunks(d)) {
            let ss: f32 = x.iter().map(|v| v * v).sum();
            *r = 1.0 / (ss / d as f32 + eps).sqrt();
            for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                *y = x * *r * w;
            }
        }
    });
    (y, r)
}

#[derive(Debug)]
struct RmsNormBackward;

impl Backward<Flex, 2> for RmsNormBackward {
    /// The input, the weight and each row's `r`.
    type State = (FlexFloat, FlexFloat, Vec<f32>);

    /// With `ĝ = g ∘ w` per row: `∂x = r·ĝ − x·r³·(Σ ĝ·x)/d`; `∂w = Σ_rows g ∘ x · r`.
    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (x_t, w_t, r) = ops.state;
        let [x_node, w_node] = ops.parents;
        let g_t = grads.consume::<Flex>(&ops.node);
        let shape = x_t.layout().shape().clone();
        let (x, w, g) = (f32_values(&x_t), f32_values(&w_t), f32_values(&g_t));
        let d = w.len();
        let per = rows_per_task(d);
        if let Some(node) = x_node {
            let mut dx = vec![0.0f32; x.len()];
            dx.par_chunks_mut(d * per).zip(x.par_chunks(d * per)).zip(g.par_chunks(d * per).zip(r.par_chunks(per))).for_each(|((dx, x), (g, r))| {
                for (((dx, x), g), &r) in dx.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)).zip(r) {
                    let dot: f32 = x.iter().zip(g).zip(w.iter()).map(|((x, g), w)| g * w * x).sum();
                    let c = r * r * r * dot / d as f32;
                    for (((dx, &x), &g), &w) in dx.iter_mut().zip(x).zip(g).zip(w.iter()) {
                        *dx = r * g * w - x * c;
                    }
                }
            });
            grads.register::<Flex>(node.id, FlexFloat::from_data(TensorData::new(dx, shape)));
        }
        if let Some(node) = w_node {
            // A partial sum per task of `per` rows, then the partials added in task order: the
            // same sum whichever thread ran which task. (A rayon `fold`/`reduce` groups rows by
            // how the work happened to be split between threads, so two runs of the same step
            // differed in the last bits and a resumed run drifted from an uninterrupted one.)
            let partials: Vec<Vec<f32>> = x
                .par_chunks(d * per)
                .zip(g.par_chunks(d * per).zip(r.par_chunks(per)))
                .map(|(x, (g, r))| {
                    let mut acc = vec![0.0f32; d];
                    for ((x, g), &r) in x.chunks(d).zip(g.chunks(d)).zip(r) {
                        for ((a, &x), &g) in acc.iter_mut().zip(x).zip(g) {
                            *a += g * x * r;
                        }
                    }
                    acc
                })
                .collect();
            let mut dw = vec![0.0f32; d];
            for partial in &partials {
                dw.iter_mut().zip(partial).for_each(|(a, b)| *a += b);
            }
            grads.register::<Flex>(node.id, FlexFloat::from_data(TensorData::new(dw, [d])));
        }
    }
}

/// [`rms_norm_composed`] as one parallel pass per row on the CPU backend (and one backward
/// pass, [`RmsNormBackward`]); the composed expression elsewhere.
pub fn rms_norm<const D: usize>(x: Tensor<D>, w: Tensor<1>, eps: f64) -> Tensor<D> {
    binary_on_flex(&x, &w, RmsNormBackward, |x, w| rms_norm_forward(x, w, eps as f32)).unwrap_or_else(|| rms_norm_composed(x, w, eps))
}

/// A two-input op on the CPU backend (plain or autodiff): `forward(a, b)` gives the output's
/// values (`a`'s shape) and what the backward keeps besides the inputs; under autodiff `op` is
/// recorded with `(a, b, kept)`. `None` on other devices, where the caller composes the op.
fn binary_on_flex<const D: usize, const DB: usize, K, Op>(
    a: &Tensor<D>,
    b: &Tensor<DB>,
    op: Op,
    forward: impl Fn(&[f32], &[f32]) -> (Vec<f32>, K),
) -> Option<Tensor<D>>
where
    K: Clone + Send + std::fmt::Debug + 'static,
    Op: Backward<Flex, 2, State = (FlexFloat, FlexFloat, K)>,
{
    let values = |a: &FlexFloat, b: &FlexFloat| {
        let (y, kept) = forward(&f32_values(a), &f32_values(b));
        (FlexFloat::from_data(TensorData::new(y, a.layout().shape().clone())), kept)
    };
    if let (Ok(a_ad), Ok(b_ad)) = (a.clone().try_into_primitive::<Autodiff<Flex>>(), b.clone().try_into_primitive::<Autodiff<Flex>>()) {
        let nodes = [a_ad.node(), b_ad.node()];
        let (a_p, b_p) = (a_ad.into_primitive(), b_ad.into_primitive());
        let (y, kept) = values(&a_p, &b_p);
        let out = match op.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((a_p, b_p, kept), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        return Some(Tensor::from_primitive::<Autodiff<Flex>>(out));
    }
    let (a_p, b_p) = (a.clone().try_into_primitive::<Flex>().ok()?, b.clone().try_into_primitive::<Flex>().ok()?);
    Some(Tensor::from_primitive::<Flex>(values(&a_p, &b_p).0))
}

/// `silu(g) · u = g·σ(g)·u` (the SwiGLU MLP's hidden activation), composed from tensor
/// operations: every device, and the reference of [`swiglu`].
pub fn swiglu_composed<const D: usize>(g: Tensor<D>, u: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::silu(g) * u
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + qat_quant::simd::exp(-x))
}

#[derive(Debug)]
struct SwigluBackward;

impl Backward<Flex, 2> for SwigluBackward {
    /// The gate and up projections' outputs.
    type State = (FlexFloat, FlexFloat, ());

    /// `∂g = h̄·u·σ(g)·(1 + g·(1 − σ(g)))`, `∂u = h̄·g·σ(g)`: one pass that overwrites the
    /// kept `g` and `u` (held by nothing else) with their gradients.
    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (mut g_t, mut u_t, ()) = ops.state;
        let [g_node, u_node] = ops.parents;
        let h_t = grads.consume::<Flex>(&ops.node);
        let h = f32_values(&h_t);
        let (g, u) = (f32_values_mut(&mut g_t), f32_values_mut(&mut u_t));
        assert!(g.len() == h.len() && u.len() == h.len(), "swiglu backward: {} and {} values for a gradient of {}", g.len(), u.len(), h.len());
        g.par_chunks_mut(CHUNK).zip(u.par_chunks_mut(CHUNK)).zip(h.par_chunks(CHUNK)).for_each(|((g, u), h)| {
            qat_quant::simd::vectorized(|| {
                for ((g, u), &h) in g.iter_mut().zip(u.iter_mut()).zip(h) {
                    let (gv, uv) = (*g, *u);
                    let s = sigmoid(gv);
                    *g = h * uv * s * (1.0 + gv * (1.0 - s));
                    *u = h * gv * s;
                }
            })
        });
        if let Some(node) = g_node {
            grads.register::<Flex>(node.id, g_t);
        }
        if let Some(node) = u_node {
            grads.register::<Flex>(node.id, u_t);
        }
    }
}

/// `f` element by element over two equally long slices, in parallel (generic, so that `f` is
/// inlined into the loop, which is compiled for the CPU's vector instructions). The output is
/// written into uninitialised capacity (no zero-filling pass first).
fn map2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let n = a.len();
    assert_eq!(b.len(), n, "map2: slices of {n} and {} elements", b.len());
    let mut out = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n].par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(o, (a, b))| {
        qat_quant::simd::vectorized(|| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                o.write(f(a, b));
            }
        })
    });
    // SAFETY: the chunks above cover all `n` elements and each was written.
    unsafe { out.set_len(n) };
    out
}

/// Elements per rayon task of the element-wise passes.
const CHUNK: usize = 1 << 14;

/// [`swiglu_composed`] as one parallel pass on the CPU backend (and one backward pass per
/// input, [`SwigluBackward`]); the composed expression elsewhere.
pub fn swiglu<const D: usize>(g: Tensor<D>, u: Tensor<D>) -> Tensor<D> {
    binary_on_flex(&g, &u, SwigluBackward, |g, u| (map2(g, u, |g, u| g * sigmoid(g) * u), ())).unwrap_or_else(|| swiglu_composed(g, u))
}

/// Rotary position embedding in rotate-half (NEOX) form, as transformers applies it, composed
/// from tensor operations: every device, and the reference of [`rope`].
/// `y = x ∘ cos + rot(x) ∘ sin` with `rot([x₁, x₂]) = [−x₂, x₁]` (halves of the head dim).
///
/// # Shapes
/// `x: [B, heads, T, hd]`, tables `[B, 1, T, hd]`.
pub fn rope_composed(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let hd = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, hd / 2);
    let x2 = x.clone().narrow(3, hd / 2, hd / 2);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// `y = x∘cos + rot(x)∘sin` over contiguous `x [B, H, T, hd]` with tables `[B, T, hd]`; with
/// `transpose`, `rotᵀ(z) = [z₂, −z₁]` instead of `rot`, which makes the same pass the backward:
/// `∂x = g∘cos + rotᵀ(g∘sin)`.
fn rope_pass(x: &[f32], cos: &[f32], sin: &[f32], [_, h, t, hd]: [usize; 4], transpose: bool) -> Vec<f32> {
    let half = hd / 2;
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(t * hd).zip(x.par_chunks(t * hd)).enumerate().for_each(|(bh, (y, x))| {
        let table = (bh / h) * t * hd;
        for ((y, x), (c, s)) in y.chunks_mut(hd).zip(x.chunks(hd)).zip(cos[table..table + t * hd].chunks(hd).zip(sin[table..table + t * hd].chunks(hd))) {
            for i in 0..half {
                let (x1, x2) = (x[i], x[i + half]);
                if transpose {
                    y[i] = x1 * c[i] + x2 * s[i + half];
                    y[i + half] = x2 * c[i + half] - x1 * s[i];
                } else {
                    y[i] = x1 * c[i] - x2 * s[i];
                    y[i + half] = x2 * c[i + half] + x1 * s[i + half];
                }
            }
        }
    });
    y
}

#[derive(Debug)]
struct RopeBackward;

impl Backward<Flex, 1> for RopeBackward {
    /// The cos and sin tables and the input's shape.
    type State = (FlexFloat, FlexFloat, [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (cos, sin, dims) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            let dx = rope_pass(&f32_values(&g), &f32_values(&cos), &f32_values(&sin), dims, true);
            FlexFloat::from_data(TensorData::new(dx, dims))
        });
    }
}

/// [`rope_composed`] as one parallel pass on the CPU backend (plain or autodiff; the tables
/// carry no gradient), the composed expression elsewhere.
pub fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let dims = x.dims();
    let table = cos.dims();
    if !dims[3].is_multiple_of(2) || table != [dims[0], 1, dims[2], dims[3]] || sin.dims() != table {
        return rope_composed(x, cos, sin);
    }
    if let (Ok(x_ad), Ok(c_ad), Ok(s_ad)) = (
        x.clone().try_into_primitive::<Autodiff<Flex>>(),
        cos.clone().try_into_primitive::<Autodiff<Flex>>(),
        sin.clone().try_into_primitive::<Autodiff<Flex>>(),
    ) {
        let node = x_ad.node();
        let (x_p, c_p, s_p) = (x_ad.into_primitive(), c_ad.into_primitive(), s_ad.into_primitive());
        let y = FlexFloat::from_data(TensorData::new(rope_pass(&f32_values(&x_p), &f32_values(&c_p), &f32_values(&s_p), dims, false), dims));
        let out = match RopeBackward.prepare::<NoCheckpointing>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((c_p, s_p, dims), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        return Tensor::from_primitive::<Autodiff<Flex>>(out);
    }
    if let (Ok(x_p), Ok(c_p), Ok(s_p)) =
        (x.clone().try_into_primitive::<Flex>(), cos.clone().try_into_primitive::<Flex>(), sin.clone().try_into_primitive::<Flex>())
    {
        let y = rope_pass(&f32_values(&x_p), &f32_values(&c_p), &f32_values(&s_p), dims, false);
        return Tensor::from_primitive::<Flex>(FlexFloat::from_data(TensorData::new(y, dims)));
    }
    rope_composed(x, cos, sin)
}
