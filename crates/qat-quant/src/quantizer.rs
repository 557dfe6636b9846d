//! The quantizers of `shared/docs/quantization.md`, written once as `ŵ = step · L` where `L` is
//! the (straight-through) grid level and `step` the distance between levels. Fake quantization
//! ([`fake_quantize`]) and export ([`quantize`]) both call [`step_and_level`], so the values
//! training sees are exactly the values that are exported.
//!
//! Rounding is round-half-to-even (Burn's `round`), in training, export and tests alike.
//!
//! | scheme | α → step | level `L` | ∂L/∂α (inside / below / above the clip range) |
//! |---|---|---|---|
//! | SEQ b-bit, `k = 2^(b-1)`, `c = 0.99` | `α/k` | `round(k·clip(w/α,±c) − ½) + ½` | `q̂ − w/α` / `−Qp` / `+Qp`, `Qp = (k−½)/k` |
//! | ternary (`k = 1.5`) | `α/1.5` | `round(1.5·clip(w/α,±c))` | `q̂ − w/α` / `−1` / `+1` |
//! | int b-bit | `α` | `round(clip(w/α, −Qn, Qp))` | `round(w/α) − w/α` / `−Qn` / `+Qp` |
//! | asym b-bit | `s` | `round(clip((w−m)/s, 0, 2^b−1))` | `round(u) − u` / `0` / `2^b−1` |
//! | binary | `α` | `sign(w)` | `sign(w)` |
//! | bitnet | `β = mean|W|` (not learned) | `clip(round(w/(β+ε)), ±1)` | — |
//!
//! Asymmetric grids add a learned minimum: `ŵ = s·L + m`, `∂ŵ/∂m = 1` outside the clip range
//! and 0 inside (LSQ+).
//!
//! The weight gradient is the masked straight-through estimator `g·1[w/α inside the clip
//! range]` (plain STE for binary, bitnet and the AngelSlim variant). The scale gradient is
//! multiplied by `γ = 1/sqrt(numel(W)·Qp_int)` (`Qp_int = 2^(b-1)−1`, or 1 for ≤ 2-bit grids),
//! ParetoQ's factor, except for AngelSlim. All of these are what autodiff gives for the
//! forward expressions below, with `STE(f(x)) = x + detach(f(x) − x)` and
//! `grad_scale(α, γ) = detach(α) + α·γ − detach(α·γ)` (value exactly α).

use burn::tensor::Tensor;

use crate::scheme::{GradVariant, Granularity, QuantSpec, Scheme};

/// SEQ's clip (`c` in quantization.md §1). Also used for ternary, as ParetoQ's code does:
/// with quantization.md's clip of 1 and `α = max|w|` the largest weight would land on
/// `round(1.5) = 2`, outside the ternary grid.
pub const SEQ_CLIP: f64 = 0.99;
/// Floor of every learned scale in the forward pass (a step cannot reach 0 or turn negative).
pub(crate) const ALPHA_MIN: f64 = 1e-5;
const BITNET_EPS: f64 = 1e-5;

fn ste<const D: usize>(x: Tensor<D>, f: impl FnOnce(Tensor<D>) -> Tensor<D>) -> Tensor<D> {
    let y = f(x.clone());
    x.clone() + (y - x).detach()
}

/// Value `x` exactly, gradient scaled by `g`.
pub(crate) fn grad_scale<const D: usize>(x: Tensor<D>, g: f64) -> Tensor<D> {
    let xg = x.clone() * g;
    x.detach() + (xg.clone() - xg.detach())
}

/// `w: [out, in]` viewed as `[rows, groups, cols]` so that one scale covers one `[.., .., cols]`
/// slice: per channel `[out, 1, in]`, per group `[out, in/G, G]`, per tensor `[1, 1, out·in]`.
pub fn grouped(w: Tensor<2>, spec: &QuantSpec) -> Tensor<3> {
    let [out, inp] = w.dims();
    match spec.granularity {
        Granularity::Channel => w.reshape([out, 1, inp]),
        Granularity::Group => w.reshape([out, inp / spec.group_size, spec.group_size]),
        Granularity::Tensor => w.reshape([1, 1, out * inp]),
    }
}

/// `k` of the SEQ grid (levels at odd multiples of `α/(2k)`), or 1.5 for ternary.
fn seq_k(spec: &QuantSpec) -> f64 {
    match spec.scheme {
        Scheme::Ternary => 1.5,
        _ => (1u32 << (spec.bits - 1)) as f64,
    }
}

/// `Qn, Qp` of the signed integer grid.
pub(crate) fn int_range(bits: u32) -> (f64, f64) {
    let half = (1u32 << (bits - 1)) as f64;
    (half, half - 1.0)
}

/// Largest code `2^b − 1` of the asymmetric grid (codes `0..=qmax`).
pub(crate) fn asym_qmax(bits: u32) -> f64 {
    ((1u32 << bits) - 1) as f64
}

/// The scale-gradient factor γ for a weight with `numel` elements.
pub fn gamma(spec: &QuantSpec, numel: usize) -> f64 {
    if spec.grad == GradVariant::Angelslim {
        return 1.0;
    }
    let qp = match spec.scheme {
        Scheme::Seq | Scheme::Int => ((1u32 << (spec.bits - 1)) - 1).max(1) as f64,
        Scheme::Asym => asym_qmax(spec.bits),
        _ => 1.0,
    };
    1.0 / (numel as f64 * qp).sqrt()
}

/// The scales the quantizer uses: `α` with ParetoQ's gradient factor γ, floored at
/// [`ALPHA_MIN`] (a collapsing scale cannot divide by zero; asymmetric grids floor their steps
/// where they use them, the minimums may be any value), and for k-quant specs snapped onto the
/// super-block grid ([`crate::exact::snap_sub_scales`]) with a straight-through gradient; with
/// the super-scales in that case.
pub(crate) fn learned_alpha(alpha: Tensor<2>, spec: &QuantSpec, numel: usize) -> (Tensor<2>, Option<Vec<f32>>) {
    let alpha = grad_scale(alpha, gamma(spec, numel));
    let alpha = if spec.scheme == Scheme::Asym { alpha } else { alpha.clamp_min(ALPHA_MIN) };
    if spec.sub_scale_bits == 0 {
        return (alpha, None);
    }
    let dims = alpha.dims();
    let values = alpha.clone().detach().into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 scales");
    let (snapped, supers) = crate::exact::snap_sub_scales(&values, dims[1], spec);
    let snapped = Tensor::<2>::from_data(burn::tensor::TensorData::new(snapped, dims), &alpha.device());
    (alpha.clone() + (snapped - alpha.detach()), Some(supers))
}

/// A grouped weight on its grid: `ŵ = step·level (+ offset)`.
pub struct OnGrid {
    /// `[rows, groups, 1]`.
    pub step: Tensor<3>,
    /// `[rows, groups, cols]`, straight-through.
    pub level: Tensor<3>,
    /// The minimum `m` of asymmetric grids, `[rows, groups, 1]`.
    pub offset: Option<Tensor<3>>,
}

impl OnGrid {
    /// `step·level + offset`, in this order of f32 operations everywhere.
    pub fn values(self) -> Tensor<3> {
        let v = self.step * self.level;
        match self.offset {
            Some(m) => v + m,
            None => v,
        }
    }
}

/// The grid of grouped weights `w3` under scales `alpha:` [`QuantSpec::scale_shape`] (ignored
/// for bitnet). `numel` is the whole matrix's size (for γ).
pub fn step_and_level(w3: Tensor<3>, alpha: Option<Tensor<2>>, spec: &QuantSpec, numel: usize) -> OnGrid {
    let symmetric = |(step, level)| OnGrid { step, level, offset: None };
    if spec.scheme == Scheme::Bitnet {
        // β from the current weights, not learned; ŵ = β·W_t with a plain STE for w.
        let beta = w3.clone().abs().mean().detach().reshape([1, 1, 1]);
        let ternary = (w3.clone().detach() / (beta.clone() + BITNET_EPS)).round().clamp(-1.0, 1.0);
        let level = ternary + (w3.clone() - w3.detach()) / beta.clone();
        return symmetric((beta, level));
    }
    if spec.scheme == Scheme::Asym {
        let alpha = learned_alpha(alpha.expect("learned schemes have a scale"), spec, numel).0;
        let [rows, values] = alpha.dims();
        let pairs = alpha.reshape([rows, values / 2, 2]);
        let step = pairs.clone().narrow(2, 0, 1).clamp_min(ALPHA_MIN);
        let min = pairs.narrow(2, 1, 1);
        let qmax = asym_qmax(spec.bits);
        let level = ste(((w3 - min.clone()) / step.clone()).clamp(0.0, qmax), |x| x.round());
        return OnGrid { step, level, offset: Some(min) };
    }
    let alpha = learned_alpha(alpha.expect("learned schemes have a scale"), spec, numel).0.unsqueeze_dim::<3>(2);
    let angel = spec.grad == GradVariant::Angelslim;
    match spec.scheme {
        Scheme::Seq | Scheme::Ternary => {
            let k = seq_k(spec);
            let shift = if spec.scheme == Scheme::Seq { 0.5 } else { 0.0 };
            let u = w3 / alpha.clone();
            let clipped = if angel { ste(u.clone(), |u| u.clamp(-SEQ_CLIP, SEQ_CLIP)) } else { u.clone().clamp(-SEQ_CLIP, SEQ_CLIP) };
            let level = ste(clipped * k - shift, |x| x.round()) + shift;
            if spec.scheme == Scheme::Ternary && !angel {
                // Outside the clip range ParetoQ's ternary α-gradient is ±Qp = ±1, while the
                // level there is ±1 step = ±2/3 of α. Add that difference to the α-gradient
                // only: the term is exactly zero in value.
                let u = u.detach();
                let outside = u.clone().abs().greater_elem(SEQ_CLIP).float() * u.sign() * (1.0 - 1.0 / k);
                let level = level + outside * (alpha.clone() - alpha.clone().detach()) * (k / alpha.clone().detach());
                return symmetric((alpha / k, level));
            }
            symmetric((alpha / k, level))
        }
        Scheme::Int => {
            let (qn, qp) = int_range(spec.bits);
            let level = ste((w3 / alpha.clone()).clamp(-qn, qp), |x| x.round());
            symmetric((alpha, level))
        }
        Scheme::Binary => {
            // ŵ = α·sign(w) with d/dw = 1: sign(w) forward, (w − detach(w))/α backward.
            let level = w3.clone().sign().detach() + (w3.clone() - w3.detach()) / alpha.clone().detach();
            symmetric((alpha, level))
        }
        Scheme::Bitnet | Scheme::Asym => unreachable!("handled above"),
    }
}

/// The fake-quantized weight `ŵ`, differentiable in `w` and `alpha` as documented above.
///
/// # Shapes
/// `w: [out, in]`, `alpha:` [`QuantSpec::scale_shape`] → `[out, in]`.
pub fn fake_quantize(w: Tensor<2>, alpha: Option<Tensor<2>>, spec: &QuantSpec) -> Tensor<2> {
    if let Some(fused) = alpha.as_ref().and_then(|a| crate::fused::fake_quantize(&w, a, spec)) {
        return fused;
    }
    fake_quantize_composed(w, alpha, spec)
}

/// [`fake_quantize`] composed from tensor operations: every scheme on every device, and the
/// reference of the fused CPU kernel ([`crate::fused`]) that [`fake_quantize`] uses where it can.
pub fn fake_quantize_composed(w: Tensor<2>, alpha: Option<Tensor<2>>, spec: &QuantSpec) -> Tensor<2> {
    let dims = w.dims();
    step_and_level(grouped(w, spec), alpha, spec, dims[0] * dims[1]).values().reshape(dims)
}

/// Integer-valued grid levels and per-group steps (and minimums) of a quantized weight;
/// `step·level + offset` is the fake-quantized weight bit for bit.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeight {
    pub spec: QuantSpec,
    /// `[out, in]`.
    pub dims: [usize; 2],
    /// Row-major levels (half-integers for SEQ, integers otherwise).
    pub levels: Vec<f32>,
    /// One per scale group, row-major `[rows, groups]`.
    pub steps: Vec<f32>,
    /// The minimum `m` per scale group of asymmetric grids (levels `0..2^b`); empty otherwise.
    pub offsets: Vec<f32>,
    /// Elements per scale group (contiguous in row-major order).
    pub group_len: usize,
    /// k-quant super-scales `d`, one per [`crate::scheme::SUPER_BLOCK`] weights (row-major);
    /// empty otherwise. Every step is `d · sc / k` with an integer `sc`.
    pub super_scales: Vec<f32>,
}

impl QuantizedWeight {
    /// `step·level (+ offset)`, in the same f32 arithmetic as [`fake_quantize`].
    pub fn dequantize(&self) -> Vec<f32> {
        let g = self.group_len;
        match self.offsets.is_empty() {
            true => self.levels.iter().enumerate().map(|(i, &l)| self.steps[i / g] * l).collect(),
            false => self.levels.iter().enumerate().map(|(i, &l)| self.steps[i / g] * l + self.offsets[i / g]).collect(),
        }
    }
}

/// Quantizes a weight for export with the same computation as [`fake_quantize`].
pub fn quantize(w: Tensor<2>, alpha: Option<Tensor<2>>, spec: &QuantSpec) -> QuantizedWeight {
    let dims = w.dims();
    let w3 = grouped(w, spec);
    let group_len = w3.dims()[2];
    let numel = dims[0] * dims[1];
    let super_scales = match &alpha {
        Some(a) if spec.sub_scale_bits > 0 => learned_alpha(a.clone(), spec, numel).1.unwrap_or_default(),
        _ => Vec::new(),
    };
    let grid = step_and_level(w3, alpha, spec, numel);
    let host = |t: Tensor<3>| t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 values");
    QuantizedWeight {
        spec: *spec,
        dims,
        levels: host(grid.level),
        steps: host(grid.step),
        offsets: grid.offset.map(host).unwrap_or_default(),
        group_len,
        super_scales,
    }
}

/// Initial scales `α` for `w` under `spec` ([`crate::scheme::ScaleInit`]); `None` for bitnet.
///
/// # Shapes
/// `w: [out, in]` → [`QuantSpec::scale_shape`].
pub fn init_scale(w: Tensor<2>, spec: &QuantSpec) -> Option<Tensor<2>> {
    init_scale_weighted(w, spec, None)
}

/// [`init_scale`] where the `mse` search weighs each input column's squared error by
/// `col_weights[j]` (`in` values), e.g. the diagonal of the layer's input Hessian `E[x_j²]`, so
/// that the scale minimises the expected output error `Σ_j E[x_j²]·(w_j − ŵ_j)²` rather than the
/// weight error (activation-aware clipping). Other init rules ignore the weights, and so does
/// per-tensor granularity.
pub fn init_scale_weighted(w: Tensor<2>, spec: &QuantSpec, col_weights: Option<&[f32]>) -> Option<Tensor<2>> {
    use crate::scheme::ScaleInit;
    if spec.scheme == Scheme::Bitnet {
        return None;
    }
    let dims = w.dims();
    let shape = spec.scale_shape(dims);
    if spec.grad == GradVariant::Angelslim {
        return Some(Tensor::ones(shape, &w.device()));
    }
    let w3 = grouped(w, spec);
    if spec.scheme == Scheme::Asym {
        return Some(init_affine(w3, spec, col_weights));
    }
    let absmax = w3.clone().abs().max_dim(2).reshape(shape);
    let absmean = w3.clone().abs().mean_dim(2).reshape(shape);
    // step = alpha · step_per_alpha; Lmax = largest |level|.
    let (step_per_alpha, lmax) = match spec.scheme {
        Scheme::Seq => {
            let k = seq_k(spec);
            (1.0 / k, (k - 0.5))
        }
        Scheme::Ternary => (1.0 / 1.5, 1.0),
        Scheme::Int => (1.0, int_range(spec.bits).1),
        Scheme::Binary => (1.0, 1.0),
        Scheme::Bitnet | Scheme::Asym => unreachable!("handled above"),
    };
    let max_rule = match spec.scheme {
        Scheme::Int => absmax.clone() / int_range(spec.bits).1,
        Scheme::Binary => absmean.clone(),
        _ => absmax.clone(),
    };
    let alpha = match spec.init {
        ScaleInit::Max => max_rule,
        ScaleInit::Absmean => absmean / step_per_alpha,
        // For the two-level binary grid LSQ's rule gives 2·mean|w|, whose error equals the
        // weights' own power; mean|w| is the least-squares optimum there.
        ScaleInit::Lsq if spec.scheme == Scheme::Binary => absmean,
        ScaleInit::Lsq => absmean * (2.0 / lmax.sqrt() / step_per_alpha),
        ScaleInit::Mse => least_error_scales(w3, spec, col_weights, |frac| (max_rule.clone() * frac).clamp_min(1e-8)),
    };
    // An all-zero row would give α = 0 and NaN; any positive scale quantizes it to ~0.
    Some(alpha.clamp_min(1e-8))
}

/// Per scale group, among the 64 candidate scale tensors `candidate(p)` for `p` in 0.2..=1.0,
/// the values with the least squared quantization error, each input column's error weighted by
/// `col_weights` when given (not per tensor).
fn least_error_scales(w3: Tensor<3>, spec: &QuantSpec, col_weights: Option<&[f32]>, candidate: impl Fn(f64) -> Tensor<2>) -> Tensor<2> {
    let [r, g, c] = w3.dims();
    let numel = r * g * c;
    let weights = col_weights.filter(|_| spec.granularity != Granularity::Tensor).map(|v| {
        assert_eq!(v.len(), g * c, "one weight per input column");
        Tensor::<3>::from_data(burn::tensor::TensorData::new(v.to_vec(), [1, g, c]), &w3.device())
    });
    let per = spec.values_per_group();
    let mut best: Option<(Tensor<2>, Tensor<2>)> = None;
    for i in 0..64 {
        let scales = candidate(0.2 + 0.8 * i as f64 / 63.0);
        let err = weighted_error(w3.clone(), step_and_level(w3.clone(), Some(scales.clone()), spec, numel).values(), &weights);
        best = Some(match best {
            None => (err, scales),
            Some((e, b)) => {
                let better = err.clone().lower(e.clone());
                let each_value = better.clone().unsqueeze_dim::<3>(2).repeat_dim(2, per).reshape([r, g * per]);
                (e.mask_where(better, err), b.mask_where(each_value, scales))
            }
        });
    }
    best.expect("64 candidates").1
}

/// `Σ_cols weights·(ŵ − w)²` per group, `[rows, groups]`.
fn weighted_error(w3: Tensor<3>, fake: Tensor<3>, weights: &Option<Tensor<3>>) -> Tensor<2> {
    let [r, g, _] = w3.dims();
    let sq = (fake - w3).square();
    let sq = match weights {
        Some(wt) => sq * wt.clone(),
        None => sq,
    };
    sq.sum_dim(2).reshape([r, g])
}

/// The initial `(s, m)` pairs of an asymmetric grid, `[rows, 2·groups]`. `max`: ggml's Q4_1
/// rule, `m = min w`, `s = (max w − min w)/(2^b − 1)`. `mse`: that range shrunk about its
/// centre by the fraction (64 candidates in 0.2..=1.0) with the least squared error, weighted
/// per input column by `col_weights` as in [`init_scale_weighted`].
fn init_affine(w3: Tensor<3>, spec: &QuantSpec, col_weights: Option<&[f32]>) -> Tensor<2> {
    use crate::scheme::ScaleInit;
    let [r, g, _] = w3.dims();
    let qmax = asym_qmax(spec.bits);
    let (lo, hi) = (w3.clone().min_dim(2), w3.clone().max_dim(2));
    let pair = |p: f64| {
        let range = (hi.clone() - lo.clone()) * p;
        let min = if p == 1.0 { lo.clone() } else { (hi.clone() + lo.clone()) * 0.5 - range.clone() * 0.5 };
        let step = (range / qmax).clamp_min(1e-8);
        Tensor::cat(vec![step, min], 2).reshape([r, 2 * g])
    };
    match spec.init {
        ScaleInit::Mse => least_error_scales(w3, spec, col_weights, pair),
        _ => pair(1.0),
    }
}

/// BitNet per-token int8 activation fake quantization with a straight-through gradient:
/// `s = 127/max|x|` over the last dimension, `x̂ = clamp(round(x·s), −128, 127)/s`.
pub fn fake_quantize_act_int8<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    ste(x, |x| {
        let s = x.clone().abs().max_dim(D - 1).clamp_min(1e-5).recip() * 127.0;
        (x * s.clone()).round().clamp(-128.0, 127.0) / s
    })
}
