//! GPTQ: error-compensating rounding in the order of a layer's input Hessian (Frantar et al.,
//! "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers", 2022).
//!
//! A linear layer `y = x·Wᵀ` is quantized one input column at a time so as to minimise the
//! layer's output error on calibration inputs, `‖X·Wᵀ − X·Qᵀ‖²`, whose Hessian in `W`'s rows
//! is `H = 2·XᵀX / N`. With `U` the upper Cholesky factor of `H⁻¹` (`H⁻¹ = UᵀU`), column `j`
//! is rounded with the scheme's own quantizer and its error is spread over the columns not yet
//! quantized:
//!
//! `e = (w_j − q_j) / U_jj`,  `W[:, k] −= e · U_jk` for `k > j`,
//!
//! which is the optimal (OBS) update of the remaining weights for the error of column `j`.
//! `H` is damped by `damp · mean(diag H)` on its diagonal; inputs that are always zero ("dead")
//! get `H_jj = 1` and a zero weight. Columns are processed in blocks of `block_size` with the
//! update of later blocks applied once per block ("lazy batch"), which is the same arithmetic
//! reordered. Scale groups take their scale from the scheme's init rule ([`init_scale`]) when
//! their first column is reached, on the weights as the blocks before left them (the reference's
//! choice); with `act_order` (columns in order
//! of decreasing `H_jj`) the scales are fixed beforehand from the original weights ("static
//! groups"), so that every group keeps its columns.
//!
//! Rounding a column calls [`quantize`], the function of fake quantization and export, so the
//! result is a weight `Q` and scales `α` with `fake_quantize(Q, α) = Q`.
//!
//! With `asymmetric` (GPTAQ: Li et al., "GPTAQ: Efficient Finetuning-Free Quantization for
//! Asymmetric Calibration", 2025) the objective is the layer's output error against the
//! *full-precision* model's input `X̃` at the same place, `‖X̃·Wᵀ − X·Qᵀ‖²`, where `X` is the
//! input as the already-quantized layers before produce it. Its `Q`-dependent part equals that
//! of `‖X·W'ᵀ − X·Qᵀ‖²` with
//!
//! `W' = W·X̃ᵀX·H⁻¹ = W + W·D·H⁻¹`,  `D = (X̃ − X)ᵀX` (scaled like `H`),
//!
//! so the layer is quantized by plain GPTQ towards the target `W'` (with the damped `H`; `W' = W`
//! when the inputs agree). The layer then also compensates what the layers before it lost.
//! A strength `a ∈ (0, 1]` aims at the output for the input `X + a·(X̃ − X)` instead, part of
//! the way from the quantized input to the full-precision one: `W' = W + a·W·D·H⁻¹` (the
//! reference implementation's default is `a = 0.25`).
//!
//! GPTQ chooses the levels; the scales stay those of the init rule, fitted to the weights
//! before rounding. With `refit_scales` each row's group scales are then refitted to the levels
//! GPTQ chose, under the same objective ([`RowError`]; not in the reference).

use burn::tensor::{Device, Tensor, TensorData};

use crate::QuantError;
use crate::exact::{HfDtype, round_scales, snap_sub_scales};
use crate::quantizer::{init_scale_weighted, quantize};
use crate::scheme::{Granularity, QuantSpec, SUPER_BLOCK, Scheme};

/// GPTQ's settings, as in the reference implementation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptqOptions {
    /// Diagonal damping as a fraction of `mean(diag H)` (reference: 0.01).
    pub damp: f64,
    /// Columns per lazy-update block (reference: 128).
    pub block_size: usize,
    /// Quantize columns in order of decreasing `H_jj` (the reference's `--act-order`, with
    /// static groups).
    pub act_order: bool,
    /// After rounding, refit each row's group scales to its levels by least squares under the
    /// layer's output error ([`RowError`]; not in the reference).
    pub refit_scales: bool,
    /// Strength `a ∈ [0, 1]` of the aim at the full-precision model's output (GPTAQ's
    /// asymmetric calibration, module doc); 0: plain GPTQ. Above 0 the Hessians must carry the
    /// full-precision inputs ([`Hessian::add_with_reference`]).
    pub asymmetric: f64,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions { damp: 0.01, block_size: 128, act_order: false, refit_scales: false, asymmetric: 0.0 }
    }
}

/// `Σ xᵀx` over calibration inputs of one linear layer, accumulated in f64; with
/// [`Self::add_with_reference`] also `Σ (x̃ − x)ᵀx` for the asymmetric objective.
#[derive(Debug, Clone)]
pub struct Hessian {
    dim: usize,
    sum: Vec<f64>,
    /// `Σ (x̃ − x)ᵀx`, when every input came with its full-precision reference.
    shift: Option<Vec<f64>>,
    samples: usize,
}

/// Adds `aᵀb` (`a, b: [n, dim]`, computed in f32) into `sum`.
fn accumulate(sum: &mut [f64], a: Tensor<2>, b: Tensor<2>) {
    let atb = a.transpose().matmul(b).into_data().convert::<f32>();
    for (s, v) in sum.iter_mut().zip(atb.as_slice::<f32>().expect("f32 data")) {
        *s += *v as f64;
    }
}

impl Hessian {
    pub fn new(dim: usize) -> Self {
        Hessian { dim, sum: vec![0.0; dim * dim], shift: None, samples: 0 }
    }

    /// Adds the rows of `x: [n, dim]` (one row per token).
    pub fn add(&mut self, x: Tensor<2>) {
        let [n, d] = x.dims();
        assert_eq!(d, self.dim, "Hessian of dimension {} fed inputs of width {d}", self.dim);
        assert!(self.shift.is_none(), "a Hessian with reference inputs fed an input without one");
        accumulate(&mut self.sum, x.clone(), x);
        self.samples += n;
    }

    /// Adds the rows of `x: [n, dim]` and of `reference`, the full-precision model's input at
    /// the same place for the same tokens (for [`GptqOptions::asymmetric`]).
    pub fn add_with_reference(&mut self, x: Tensor<2>, reference: Tensor<2>) {
        let [n, d] = x.dims();
        assert_eq!(d, self.dim, "Hessian of dimension {} fed inputs of width {d}", self.dim);
        assert_eq!(reference.dims(), [n, d], "reference inputs of another shape than the inputs");
        assert!(self.samples == 0 || self.shift.is_some(), "a Hessian without reference inputs fed one with");
        let shift = self.shift.get_or_insert_with(|| vec![0.0; d * d]);
        accumulate(shift, reference - x.clone(), x.clone());
        accumulate(&mut self.sum, x.clone(), x);
        self.samples += n;
    }

    /// Tokens seen.
    pub fn samples(&self) -> usize {
        self.samples
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `H = 2/N · Σ xᵀx`, row-major `[dim, dim]`.
    pub fn matrix(&self) -> Vec<f64> {
        let c = 2.0 / self.samples.max(1) as f64;
        self.sum.iter().map(|v| v * c).collect()
    }

    /// `D = 2/N · Σ (x̃ − x)ᵀx` (scaled like [`Self::matrix`]), if the inputs came with
    /// references.
    pub fn shift_matrix(&self) -> Option<Vec<f64>> {
        let c = 2.0 / self.samples.max(1) as f64;
        self.shift.as_ref().map(|d| d.iter().map(|v| v * c).collect())
    }
}

/// A GPTQ-quantized weight.
#[derive(Debug, Clone)]
pub struct GptqResult {
    /// The quantized weight `Q`, `[out, in]`: on the grid of `alpha`.
    pub weight: Tensor<2>,
    /// Scales, shaped [`QuantSpec::scale_shape`].
    pub alpha: Tensor<2>,
    /// GPTQ's error estimate `½ Σ (w_j − q_j)² / U_jj²` (the reference's printed `error`),
    /// before any scale refit.
    pub loss: f64,
    /// Rows whose scales `refit_scales` replaced (0 without it, and for grids it does not
    /// apply to).
    pub refit_rows: usize,
}

/// In-place lower Cholesky factor of a symmetric positive definite `a` (`n×n`, row-major);
/// `A = L·Lᵀ`. Fails when a pivot is not positive.
fn cholesky_lower(a: &mut [f64], n: usize) -> Result<(), QuantError> {
    for j in 0..n {
        let row_j = a[j * n..j * n + j].to_vec();
        let d = a[j * n + j] - row_j.iter().map(|v| v * v).sum::<f64>();
        if !(d > 0.0 && d.is_finite()) {
            return Err(QuantError::Gptq(format!("the damped Hessian is not positive definite (pivot {j} is {d:e}); raise damp")));
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        a[j * n + j + 1..j * n + n].fill(0.0);
        // Rows below j: L_ij = (A_ij − Σ_k<j L_ik L_jk) / L_jj.
        for i in j + 1..n {
            let dot: f64 = a[i * n..i * n + j].iter().zip(&row_j).map(|(x, y)| x * y).sum();
            a[i * n + j] = (a[i * n + j] - dot) / d;
        }
    }
    Ok(())
}

/// The upper Cholesky factor `U` of `H⁻¹` (`H⁻¹ = UᵀU`), row-major: [`inverse`] factored
/// again, as the reference does.
fn inverse_upper_cholesky(h: &[f64], n: usize) -> Result<Vec<f64>, QuantError> {
    let mut hinv = inverse(h, n)?;
    // Upper factor of H⁻¹ = transpose of its lower factor.
    cholesky_lower(&mut hinv, n)?;
    let mut u = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            u[j * n + i] = hinv[i * n + j];
        }
    }
    Ok(u)
}

/// `H⁻¹` of a symmetric positive definite `H` (row-major): with `H = L·Lᵀ`, `H⁻¹ = L⁻ᵀ·L⁻¹`.
fn inverse(h: &[f64], n: usize) -> Result<Vec<f64>, QuantError> {
    let mut l = h.to_vec();
    cholesky_lower(&mut l, n)?;
    // L⁻¹ row by row: row i = (e_i − Σ_{k<i} L_ik · row k) / L_ii (lower triangular).
    let mut li = vec![0.0f64; n * n];
    for i in 0..n {
        let (done, rest) = li.split_at_mut(i * n);
        let row = &mut rest[..n];
        row[i] = 1.0;
        for k in 0..i {
            let c = l[i * n + k];
            if c != 0.0 {
                for (x, y) in row[..=k].iter_mut().zip(&done[k * n..k * n + k + 1]) {
                    *x -= c * y;
                }
            }
        }
        let d = l[i * n + i];
        for x in &mut row[..=i] {
            *x /= d;
        }
    }
    // H⁻¹ = L⁻ᵀ L⁻¹: (H⁻¹)_ij = Σ_{k ≥ max(i,j)} Li_ki Li_kj.
    let mut hinv = vec![0.0f64; n * n];
    for k in 0..n {
        let row = &li[k * n..k * n + k + 1];
        for i in 0..=k {
            let a = row[i];
            if a == 0.0 {
                continue;
            }
            let out = &mut hinv[i * n..i * n + k + 1];
            for (o, b) in out[..=i].iter_mut().zip(&row[..=i]) {
                *o += a * b;
            }
        }
    }
    for i in 0..n {
        for j in 0..i {
            hinv[j * n + i] = hinv[i * n + j];
        }
    }
    Ok(hinv)
}

/// The asymmetric objective's target weight `W' = W + a·W·D·H⁻¹` (module doc), `w: [out, n]`
/// row-major; `h` is the damped Hessian and `d` the input shift, both `[n, n]`.
fn asymmetric_target(w: &[f32], d: &[f64], h: &[f64], a: f64, out: usize, n: usize, device: &Device) -> Result<Vec<f32>, QuantError> {
    let matrix = |v: Vec<f64>| Tensor::<2>::from_data(TensorData::new(v.into_iter().map(|x| x as f32).collect::<Vec<f32>>(), [n, n]), device);
    let w_t = Tensor::<2>::from_data(TensorData::new(w.to_vec(), [out, n]), device);
    let d_t = matrix(d.iter().map(|&x| a * x).collect());
    let hinv_t = matrix(inverse(h, n)?);
    Ok((w_t.clone() + w_t.matmul(d_t).matmul(hinv_t)).into_data().convert::<f32>().try_to_vec::<f32>()?)
}

/// Scales of one scale window `[out, window]` (a group, a whole row, or a k-quant super-block
/// of groups) under `spec`'s init rule: `(α, α used)`, each `[out, groups in the window ·
/// values per group]` (asymmetric grids: `(s, m)` pairs). The
/// `mse` rule weighs each column's error by its Hessian diagonal `h_diag` (activation-aware).
/// `α` is what the layer stores: rounded onto export's grid when `round` is given; for k-quant
/// specs the forward pass snaps it to the `α used` here ([`snap_sub_scales`]).
fn window_scales(
    w: &[f32],
    h_diag: &[f32],
    out: usize,
    window: usize,
    spec: &QuantSpec,
    round: Option<HfDtype>,
    device: &Device,
) -> Result<(Vec<f32>, Vec<f32>), QuantError> {
    let t = Tensor::<2>::from_data(TensorData::new(w.to_vec(), [out, window]), device);
    let window_spec = match spec.granularity {
        Granularity::Tensor => *spec,
        Granularity::Group if spec.sub_scale_bits > 0 => QuantSpec { sub_scale_bits: 0, ..*spec },
        _ => QuantSpec { granularity: Granularity::Channel, group_size: 0, sub_scale_bits: 0, ..*spec },
    };
    let alpha = init_scale_weighted(t, &window_spec, Some(h_diag)).ok_or_else(|| QuantError::Gptq("GPTQ needs a learned-scale scheme (not bitnet)".into()))?;
    let per = alpha.dims()[1];
    let mut alpha = alpha.into_data().convert::<f32>().try_to_vec::<f32>()?;
    if let Some(dtype) = round {
        alpha = round_scales(spec, &alpha, dtype)?;
    }
    if spec.granularity == Granularity::Tensor {
        alpha = alpha.repeat(out);
    }
    let used = if spec.sub_scale_bits > 0 { snap_sub_scales(&alpha, per, spec).0 } else { alpha.clone() };
    Ok((alpha, used))
}

/// Quantizes `weight: [out, in]` with GPTQ given the input Hessian `h` of the layer.
///
/// `round`: keep every scale on the grid that the export in that dtype stores exactly, so that
/// the error compensation sees the values that will be deployed.
pub fn gptq(weight: Tensor<2>, h: &Hessian, spec: &QuantSpec, opts: &GptqOptions, round: Option<HfDtype>) -> Result<GptqResult, QuantError> {
    if spec.scheme == Scheme::Bitnet {
        return Err(QuantError::Gptq("GPTQ needs a learned-scale scheme; bitnet recomputes its scale from the weights".into()));
    }
    let [out, n] = weight.dims();
    spec.validate_shape("gptq", [out, n])?;
    if h.dim() != n {
        return Err(QuantError::Gptq(format!("Hessian of dimension {} for a weight with {n} input columns", h.dim())));
    }
    if h.samples() == 0 {
        return Err(QuantError::Gptq("no calibration inputs reached this layer".into()));
    }
    if !(opts.damp.is_finite() && opts.damp > 0.0) || opts.block_size == 0 {
        return Err(QuantError::Gptq(format!("damp must be > 0 and block_size > 0 (got {} and {})", opts.damp, opts.block_size)));
    }
    if !(0.0..=1.0).contains(&opts.asymmetric) {
        return Err(QuantError::Gptq(format!("asymmetric must be in [0, 1] (got {})", opts.asymmetric)));
    }
    let device = weight.device();
    let mut original = weight.clone();
    let mut w = weight.into_data().convert::<f32>().try_to_vec::<f32>()?;
    let mut hm = h.matrix();

    // Dead inputs: no information, weight set to zero.
    for j in 0..n {
        if hm[j * n + j] == 0.0 {
            hm[j * n + j] = 1.0;
            for r in 0..out {
                w[r * n + j] = 0.0;
            }
        }
    }
    match (opts.asymmetric > 0.0, h.shift_matrix()) {
        (true, Some(d)) => {
            // The damping of the rounding below: `damp · mean(diag H)`, dead inputs counted as 1.
            let mut damped = hm.clone();
            let mean_diag = (0..n).map(|j| hm[j * n + j]).sum::<f64>() / n as f64;
            for j in 0..n {
                damped[j * n + j] += opts.damp * mean_diag;
            }
            w = asymmetric_target(&w, &d, &damped, opts.asymmetric, out, n, &device)?;
            original = Tensor::from_data(TensorData::new(w.clone(), [out, n]), &device);
        }
        (true, None) => return Err(QuantError::Gptq("asymmetric GPTQ needs the full-precision inputs (Hessian::add_with_reference)".into())),
        (false, _) => {}
    }
    let group = match spec.granularity {
        Granularity::Group => spec.group_size,
        _ => n,
    };
    // Columns whose scales are set together: a group, or a k-quant super-block of groups.
    let window = if spec.sub_scale_bits > 0 { SUPER_BLOCK } else { group };
    let per = window / group;
    let slice = |w: &[f32], c0: usize| -> Vec<f32> { (0..out).flat_map(|r| w[r * n + c0..r * n + c0 + window].iter().copied()).collect() };
    // Hessian diagonal in original column order (before damping): E[x_j²] up to a constant.
    let h_diag: Vec<f32> = (0..n).map(|j| hm[j * n + j] as f32).collect();
    // Scales fixed up front: per channel / tensor always; per group under act_order.
    let fixed: Option<Vec<(Vec<f32>, Vec<f32>)>> = if window == n || opts.act_order {
        (0..n)
            .step_by(window)
            .map(|c0| window_scales(&slice(&w, c0), &h_diag[c0..c0 + window], out, window, spec, round, &device))
            .collect::<Result<_, _>>()
            .map(Some)?
    } else {
        None
    };
    let perm: Vec<usize> = if opts.act_order {
        let mut p: Vec<usize> = (0..n).collect();
        // Stable, so ties keep their original order.
        p.sort_by(|&a, &b| hm[b * n + b].partial_cmp(&hm[a * n + a]).unwrap_or(std::cmp::Ordering::Equal));
        p
    } else {
        (0..n).collect()
    };
    if opts.act_order {
        let wp: Vec<f32> = (0..out).flat_map(|r| perm.iter().map(move |&j| (r, j))).map(|(r, j)| w[r * n + j]).collect();
        let hp: Vec<f64> = (0..n).flat_map(|i| perm.iter().map(move |&j| (i, j))).map(|(i, j)| hm[perm[i] * n + j]).collect();
        w = wp;
        hm = hp;
    }
    let mean_diag = (0..n).map(|j| hm[j * n + j]).sum::<f64>() / n as f64;
    for j in 0..n {
        hm[j * n + j] += opts.damp * mean_diag;
    }
    let u64v = inverse_upper_cholesky(&hm, n)?;
    let u: Vec<f32> = u64v.iter().map(|&v| v as f32).collect();

    let col_spec = QuantSpec { granularity: Granularity::Channel, group_size: 0, sub_scale_bits: 0, ..*spec };
    let mut q = vec![0.0f32; out * n];
    let mut loss = 0.0f64;
    let n_groups = n / group;
    let vpg = spec.values_per_group();
    let mut alpha = vec![0.0f32; out * n_groups * vpg];
    let mut current = (Vec::new(), Vec::new());
    let mut i1 = 0;
    while i1 < n {
        let i2 = (i1 + opts.block_size).min(n);
        let bs = i2 - i1;
        let mut err = vec![0.0f32; out * bs];
        // Window scales are taken from the weights as the earlier blocks left them, as in the
        // reference, not from the columns updated inside this block.
        let at_block_start = if fixed.is_none() { w.clone() } else { Vec::new() };
        for i in i1..i2 {
            let orig = perm[i];
            let scales = match &fixed {
                Some(f) => &f[orig / window],
                None => {
                    if i % window == 0 {
                        current = window_scales(&slice(&at_block_start, i), &h_diag[i..i + window], out, window, spec, round, &device)?;
                    }
                    &current
                }
            };
            let (g, j) = (orig / group, (orig % window) / group);
            let mut a = Vec::with_capacity(out * vpg);
            for r in 0..out {
                for v in 0..vpg {
                    alpha[(r * n_groups + g) * vpg + v] = scales.0[(r * per + j) * vpg + v];
                    a.push(scales.1[(r * per + j) * vpg + v]);
                }
            }
            let col: Vec<f32> = (0..out).map(|r| w[r * n + i]).collect();
            let col_t = Tensor::<2>::from_data(TensorData::new(col.clone(), [out, 1]), &device);
            let a_t = Tensor::<2>::from_data(TensorData::new(a, [out, vpg]), &device);
            let qc = quantize(col_t, Some(a_t), &col_spec).dequantize();
            let d = u[i * n + i];
            for r in 0..out {
                q[r * n + i] = qc[r];
                let e = (col[r] - qc[r]) / d;
                loss += 0.5 * (e as f64) * (e as f64);
                err[r * bs + (i - i1)] = e;
                // Within the block: W[r, i..i2] −= e · U[i, i..i2].
                let urow = &u[i * n + i..i * n + i2];
                for (wv, uv) in w[r * n + i..r * n + i2].iter_mut().zip(urow) {
                    *wv -= e * uv;
                }
            }
        }
        if i2 < n {
            // Later blocks at once: W[:, i2..] −= Err · U[i1..i2, i2..].
            let e_t = Tensor::<2>::from_data(TensorData::new(err, [out, bs]), &device);
            let u_blk: Vec<f32> = (i1..i2).flat_map(|i| u[i * n + i2..i * n + n].iter().copied()).collect();
            let u_t = Tensor::<2>::from_data(TensorData::new(u_blk, [bs, n - i2]), &device);
            let upd = e_t.matmul(u_t).into_data().convert::<f32>().try_to_vec::<f32>()?;
            let m = n - i2;
            for r in 0..out {
                for (wv, dv) in w[r * n + i2..r * n + n].iter_mut().zip(&upd[r * m..r * m + m]) {
                    *wv -= dv;
                }
            }
        }
        i1 = i2;
    }
    if opts.act_order {
        let mut back = vec![0.0f32; out * n];
        for r in 0..out {
            for (i, &j) in perm.iter().enumerate() {
                back[r * n + j] = q[r * n + i];
            }
        }
        q = back;
    }
    let scale_shape = spec.scale_shape([out, n]);
    let alpha = match spec.granularity {
        Granularity::Tensor => alpha[..vpg].to_vec(),
        _ => alpha,
    };
    let weight = Tensor::from_data(TensorData::new(q, [out, n]), &device);
    let alpha = Tensor::from_data(TensorData::new(alpha, scale_shape), &device);
    if opts.refit_scales && refittable(spec) {
        let (weight, alpha, refit_rows) = refit_scales(original, &h.matrix(), weight, alpha, spec, round)?;
        return Ok(GptqResult { weight, alpha, loss, refit_rows });
    }
    Ok(GptqResult { weight, alpha, loss, refit_rows: 0 })
}

/// Grids whose values are one free scale per group times a level: symmetric schemes per group
/// or per row, without k-quant sub-scales (whose scales are themselves quantized). (BitNet never
/// gets here: GPTQ refuses it.)
fn refittable(spec: &QuantSpec) -> bool {
    spec.values_per_group() == 1 && spec.sub_scale_bits == 0 && matches!(spec.granularity, Granularity::Group | Granularity::Channel)
}

/// One row's output error as a function of its group steps, for fixed levels.
///
/// With `Q_j = s_{g(j)}·ℓ_j` (step `s_g` of group `g`, level `ℓ_j`), the row's output error
/// `E(s) = (w − Q)ᵀ H (w − Q) = wᵀHw − 2·sᵀb + sᵀMs` is quadratic in the steps, with
/// `M_{gg'} = Σ_{j∈g, k∈g'} ℓ_j H_jk ℓ_k` and `b_g = Σ_{j∈g} ℓ_j (Hw)_j`.
struct RowError {
    groups: usize,
    m: Vec<f64>,
    b: Vec<f64>,
}

impl RowError {
    /// `levels`, `hw = (Hw)ᵀ` of one row; `h` row-major `[n, n]`.
    fn new(levels: &[f32], hw: &[f32], h: &[f64], group: usize) -> Self {
        let n = levels.len();
        let groups = n / group;
        let mut m = vec![0.0f64; groups * groups];
        for (j, &lj) in levels.iter().enumerate() {
            if lj == 0.0 {
                continue;
            }
            let mrow = &mut m[(j / group) * groups..(j / group + 1) * groups];
            for (g, (hs, ls)) in h[j * n..j * n + n].chunks(group).zip(levels.chunks(group)).enumerate() {
                mrow[g] += lj as f64 * hs.iter().zip(ls).map(|(&hv, &l)| hv * l as f64).sum::<f64>();
            }
        }
        let b = hw.chunks(group).zip(levels.chunks(group)).map(|(hs, ls)| hs.iter().zip(ls).map(|(&x, &l)| x as f64 * l as f64).sum()).collect();
        RowError { groups, m, b }
    }

    /// `E(s) − wᵀHw`.
    fn error(&self, s: &[f32]) -> f64 {
        let g = self.groups;
        (0..g).map(|i| s[i] as f64 * ((0..g).map(|k| self.m[i * g + k] * s[k] as f64).sum::<f64>() - 2.0 * self.b[i])).sum()
    }

    /// The minimiser of `E`, `M·s = b`, over the groups with a non-zero level (the others keep
    /// their `steps`, and their rows and columns of `M` are zero). `None` when `M` is singular or
    /// a step comes out non-positive.
    fn least_squares(&self, steps: &[f32]) -> Option<Vec<f32>> {
        let g = self.groups;
        let active: Vec<usize> = (0..g).filter(|&i| self.m[i * g + i] > 0.0).collect();
        let k = active.len();
        let mut l: Vec<f64> = active.iter().flat_map(|&i| active.iter().map(move |&c| (i, c))).map(|(i, c)| self.m[i * g + c]).collect();
        cholesky_lower(&mut l, k).ok()?;
        // L·y = b, then Lᵀ·x = y.
        let mut y = vec![0.0f64; k];
        for i in 0..k {
            y[i] = (self.b[active[i]] - (0..i).map(|c| l[i * k + c] * y[c]).sum::<f64>()) / l[i * k + i];
        }
        let mut x = vec![0.0f64; k];
        for i in (0..k).rev() {
            x[i] = (y[i] - (i + 1..k).map(|c| l[c * k + i] * x[c]).sum::<f64>()) / l[i * k + i];
        }
        let mut out = steps.to_vec();
        for (&i, &v) in active.iter().zip(&x) {
            if !(v.is_finite() && v > 0.0) {
                return None;
            }
            out[i] = v as f32;
        }
        Some(out)
    }
}

/// Refits the scales of a GPTQ result `q` (scales `alpha`) row by row to its levels: the
/// least-squares steps of [`RowError`] under the undamped Hessian `h` against the original
/// weight `w`. A row takes its new scales only where, rounded onto the export grid and passed
/// through the quantizer, they keep every level and lower the row's output error. Returns the
/// weight, the scales and the number of rows changed.
fn refit_scales(
    w: Tensor<2>,
    h: &[f64],
    q: Tensor<2>,
    alpha: Tensor<2>,
    spec: &QuantSpec,
    round: Option<HfDtype>,
) -> Result<(Tensor<2>, Tensor<2>, usize), QuantError> {
    use rayon::prelude::*;
    let device = q.device();
    let [out, n] = q.dims();
    let h32: Vec<f32> = h.iter().map(|&v| v as f32).collect();
    let hw = w.matmul(Tensor::from_data(TensorData::new(h32, [n, n]), &device)).into_data().convert::<f32>().try_to_vec::<f32>()?;
    let before = quantize(q.clone(), Some(alpha.clone()), spec);
    let group = before.group_len;
    let groups = n / group;
    fn row(v: &[f32], r: usize, len: usize) -> &[f32] {
        &v[r * len..(r + 1) * len]
    }
    let errors: Vec<RowError> = (0..out).into_par_iter().map(|r| RowError::new(row(&before.levels, r, n), row(&hw, r, n), h, group)).collect();
    let old_alpha = alpha.into_data().convert::<f32>().try_to_vec::<f32>()?;
    // Steps are proportional to α (step = α / k for a grid constant k), so α scales with them.
    let mut new_alpha = old_alpha.clone();
    for (r, e) in errors.iter().enumerate() {
        let steps = row(&before.steps, r, groups);
        if let Some(refit) = e.least_squares(steps) {
            for g in 0..groups {
                new_alpha[r * groups + g] *= refit[g] / steps[g];
            }
        }
    }
    if let Some(dtype) = round {
        new_alpha = round_scales(spec, &new_alpha, dtype)?;
    }
    // Each level at its new step, through the quantizer itself.
    let target: Vec<f32> = before.levels.iter().enumerate().map(|(i, &l)| l * before.steps[i / group] * new_alpha[i / group] / old_alpha[i / group]).collect();
    let after = quantize(
        Tensor::from_data(TensorData::new(target, [out, n]), &device),
        Some(Tensor::from_data(TensorData::new(new_alpha.clone(), [out, groups]), &device)),
        spec,
    );
    let new_q = after.dequantize();
    let mut weight = q.into_data().convert::<f32>().try_to_vec::<f32>()?;
    let mut alpha = old_alpha;
    let mut rows = 0;
    for (r, e) in errors.iter().enumerate() {
        let better = before.levels[r * n..(r + 1) * n] == after.levels[r * n..(r + 1) * n]
            && e.error(&after.steps[r * groups..(r + 1) * groups]) < e.error(&before.steps[r * groups..(r + 1) * groups]);
        if better {
            weight[r * n..(r + 1) * n].copy_from_slice(&new_q[r * n..(r + 1) * n]);
            alpha[r * groups..(r + 1) * groups].copy_from_slice(&new_alpha[r * groups..(r + 1) * groups]);
            rows += 1;
        }
    }
    Ok((Tensor::from_data(TensorData::new(weight, [out, n]), &device), Tensor::from_data(TensorData::new(alpha, [out, groups]), &device), rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_cholesky_factor() {
        // H = A·Aᵀ + I for a fixed A; check UᵀU·H = I.
        let n = 7;
        let a: Vec<f64> = (0..n * n).map(|i| ((i * 37 % 11) as f64 - 5.0) / 7.0).collect();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = (0..n).map(|k| a[i * n + k] * a[j * n + k]).sum::<f64>() + if i == j { 1.0 } else { 0.0 };
            }
        }
        let u = inverse_upper_cholesky(&h, n).unwrap();
        for i in 0..n {
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0, "U is upper triangular");
            }
        }
        for i in 0..n {
            for j in 0..n {
                let prod: f64 = (0..n).map(|k| (0..n).map(|m| u[m * n + i] * u[m * n + k]).sum::<f64>() * h[k * n + j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((prod - want).abs() < 1e-9, "({i},{j}): {prod}");
            }
        }
        let mut bad = vec![1.0, 2.0, 2.0, 1.0];
        assert!(cholesky_lower(&mut bad, 2).unwrap_err().to_string().contains("positive definite"));
    }
}
