//! Quantizer properties and gradients.
//!
//! - every fake-quantized value lies on its grid; export's levels·steps reproduce it bit for
//!   bit; SEQ never produces 0;
//! - autodiff gradients equal (a) closed-form formulas of quantization.md evaluated here in
//!   f64, (b) central finite differences of the same function with its rounding decisions
//!   frozen (away from clip and rounding boundaries), and (c) PyTorch reference gradients of
//!   ParetoQ's `StretchedElasticQuant` / LSQ (`scripts/make_quant_fixtures.py`).

use burn::tensor::{Device, Tensor, TensorData};
use qat_quant::{GradVariant, Granularity, QuantSpec, ScaleInit, Scheme, fake_quantize, init_scale, quantize};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn spec(scheme: Scheme, bits: u32, granularity: Granularity, init: ScaleInit) -> QuantSpec {
    QuantSpec {
        scheme,
        bits,
        granularity,
        group_size: if granularity == Granularity::Group { 16 } else { 0 },
        grad: GradVariant::Paretoq,
        init,
        sub_scale_bits: 0,
    }
}

fn randn(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            // Box-Muller.
            let (u1, u2): (f32, f32) = (rng.random::<f32>().max(1e-7), rng.random());
            scale * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect()
}

fn tensor2(v: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn vec_of(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn all_specs() -> Vec<QuantSpec> {
    let mut v = Vec::new();
    for g in [Granularity::Channel, Granularity::Group, Granularity::Tensor] {
        for init in [ScaleInit::Max, ScaleInit::Absmean, ScaleInit::Lsq, ScaleInit::Mse] {
            for (s, b) in [
                (Scheme::Seq, 2),
                (Scheme::Seq, 3),
                (Scheme::Ternary, 2),
                (Scheme::Int, 2),
                (Scheme::Int, 3),
                (Scheme::Int, 4),
                (Scheme::Int, 8),
                (Scheme::Binary, 1),
            ] {
                v.push(spec(s, b, g, init));
            }
            if matches!(init, ScaleInit::Max | ScaleInit::Mse) {
                for b in [2, 4, 5, 8] {
                    v.push(spec(Scheme::Asym, b, g, init));
                }
            }
        }
    }
    v.push(spec(Scheme::Bitnet, 2, Granularity::Tensor, ScaleInit::Max));
    v
}

/// The allowed levels (in units of the step) of a scheme.
fn levels(s: &QuantSpec) -> Vec<f32> {
    match s.scheme {
        Scheme::Seq => {
            let k = 1i32 << (s.bits - 1);
            (0..2 * k).map(|n| (n - k) as f32 + 0.5).collect()
        }
        Scheme::Int => {
            let h = 1i32 << (s.bits - 1);
            (-h..h).map(|q| q as f32).collect()
        }
        Scheme::Ternary | Scheme::Bitnet => vec![-1.0, 0.0, 1.0],
        Scheme::Binary => vec![-1.0, 1.0],
        Scheme::Asym => (0..1 << s.bits).map(|q| q as f32).collect(),
    }
}

#[test]
fn values_lie_on_the_grid_and_export_reproduces_them_exactly() {
    let device = Device::flex();
    let mut rng = StdRng::seed_from_u64(3);
    for s in all_specs() {
        s.validate("test").unwrap();
        let w_vals = randn(&mut rng, 16 * 64, 0.05);
        let w = tensor2(w_vals.clone(), [16, 64], &device);
        let alpha = init_scale(w.clone(), &s);
        let fq = vec_of(fake_quantize(w.clone(), alpha.clone(), &s));
        let q = quantize(w, alpha, &s);
        assert_eq!(q.dequantize(), fq, "{}: export levels·steps differ from fake quant", s.label());
        let grid = levels(&s);
        assert!(q.levels.iter().all(|l| grid.contains(l)), "{}: level off the grid", s.label());
        assert!(q.steps.iter().all(|st| *st > 0.0 && st.is_finite()), "{}", s.label());
        if s.scheme == Scheme::Seq {
            assert!(fq.iter().all(|v| *v != 0.0), "{}: SEQ produced 0", s.label());
        }
        // A usable init: quantizing must beat replacing the weights by zero, and 8 bits must be
        // close to lossless.
        let wv = q.dims.iter().product::<usize>();
        let sq: f32 = fq.iter().zip(&w_vals).map(|(a, b)| (a - b).powi(2)).sum::<f32>() / wv as f32;
        let var: f32 = w_vals.iter().map(|b| b * b).sum::<f32>() / wv as f32;
        assert!(sq < var, "{}: error {sq} not below the weights' power {var}", s.label());
        if matches!(s.scheme, Scheme::Int | Scheme::Asym) && s.bits == 8 && matches!(s.init, ScaleInit::Max | ScaleInit::Mse) {
            assert!(sq < var * 1e-3, "{}: int8 error {sq} vs power {var}", s.label());
        }
    }
}

#[test]
fn mse_init_never_loses_to_max_init() {
    let device = Device::flex();
    let mut rng = StdRng::seed_from_u64(4);
    let wv = randn(&mut rng, 8 * 256, 0.05);
    for (scheme, bits) in [(Scheme::Seq, 2), (Scheme::Int, 2), (Scheme::Int, 4), (Scheme::Ternary, 2), (Scheme::Asym, 2), (Scheme::Asym, 4)] {
        let err = |init| {
            let s = spec(scheme, bits, Granularity::Channel, init);
            let w = tensor2(wv.clone(), [8, 256], &device);
            let fq = vec_of(fake_quantize(w, init_scale(tensor2(wv.clone(), [8, 256], &device), &s), &s));
            fq.iter().zip(&wv).map(|(a, b)| (a - b).powi(2)).sum::<f32>()
        };
        let (e_max, e_mse) = (err(ScaleInit::Max), err(ScaleInit::Mse));
        assert!(e_mse <= e_max * 1.0001, "{scheme:?}{bits}: mse {e_mse} > max {e_max}");
    }
}

/// Closed-form gradients of quantization.md for per-row scales, in f64.
fn closed_form(s: &QuantSpec, w: &[f64], alpha: &[f64], g: &[f64], cols: usize) -> (Vec<f64>, Vec<f64>) {
    let n = w.len();
    let mut gw = vec![0.0; n];
    let mut ga = vec![0.0; alpha.len()];
    let c = 0.99;
    for i in 0..n {
        let a = alpha[i / cols];
        let u = w[i] / a;
        let (inside, da) = match s.scheme {
            Scheme::Seq | Scheme::Ternary => {
                let (k, shift, qp) = if s.scheme == Scheme::Seq {
                    let k = (1 << (s.bits - 1)) as f64;
                    (k, 0.5, (k - 0.5) / k)
                } else {
                    (1.5, 0.0, 1.0)
                };
                let qhat = (((u.clamp(-c, c) * k - shift).round_ties_even()) + shift) / k;
                if u < -c {
                    (false, -qp)
                } else if u > c {
                    (false, qp)
                } else {
                    (true, qhat - u)
                }
            }
            Scheme::Int => {
                let (qn, qp) = ((1 << (s.bits - 1)) as f64, ((1 << (s.bits - 1)) - 1) as f64);
                if u < -qn {
                    (false, -qn)
                } else if u > qp {
                    (false, qp)
                } else {
                    (true, u.round_ties_even() - u)
                }
            }
            Scheme::Binary => (true, u.signum()),
            // Asym (two values per group) is checked against PyTorch's LSQ+ instead.
            Scheme::Bitnet | Scheme::Asym => unreachable!(),
        };
        gw[i] = if inside { g[i] } else { 0.0 };
        ga[i / cols] += da * g[i];
    }
    let gamma = qat_quant::quantizer::gamma(s, n);
    ga.iter_mut().for_each(|x| *x *= gamma);
    (gw, ga)
}

/// `Σ g·ŵ` with each element's rounding decision frozen at `(w0, alpha0)`: smooth in `w` and
/// `alpha` away from clip boundaries, and its true derivative is the STE gradient there.
fn frozen_loss(s: &QuantSpec, w: &[f64], alpha: &[f64], g: &[f64], cols: usize, w0: &[f64], a0: &[f64]) -> f64 {
    let c = 0.99;
    let mut total = 0.0;
    for i in 0..w.len() {
        let (a, u) = (alpha[i / cols], w[i] / alpha[i / cols]);
        let u0 = w0[i] / a0[i / cols];
        let v = match s.scheme {
            Scheme::Seq | Scheme::Ternary => {
                let (k, shift) = if s.scheme == Scheme::Seq { ((1 << (s.bits - 1)) as f64, 0.5) } else { (1.5, 0.0) };
                let x0 = u0.clamp(-c, c) * k - shift;
                let x = u.clamp(-c, c) * k - shift;
                let outside_extra = if s.scheme == Scheme::Ternary && u0.abs() > c { u0.signum() * (1.0 - 1.0 / k) * a } else { 0.0 };
                a / k * (x + (x0.round_ties_even() - x0) + shift) + outside_extra
            }
            Scheme::Int => {
                let (qn, qp) = ((1 << (s.bits - 1)) as f64, ((1 << (s.bits - 1)) - 1) as f64);
                let x0 = u0.clamp(-qn, qp);
                a * (u.clamp(-qn, qp) + (x0.round_ties_even() - x0))
            }
            Scheme::Binary => a * u0.signum() + (w[i] - w0[i]),
            Scheme::Bitnet | Scheme::Asym => unreachable!(),
        };
        total += g[i] * v;
    }
    total
}

fn autodiff_grads(s: &QuantSpec, w: &[f32], alpha: &[f32], g: &[f32], rows: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
    let device = Device::flex().autodiff();
    let wt = tensor2(w.to_vec(), [rows, cols], &device).require_grad();
    let at = tensor2(alpha.to_vec(), [rows, alpha.len() / rows], &device).require_grad();
    let gt = tensor2(g.to_vec(), [rows, cols], &device);
    let loss = (fake_quantize(wt.clone(), Some(at.clone()), s) * gt).sum();
    let grads = loss.backward();
    (vec_of(wt.grad(&grads).unwrap()), vec_of(at.grad(&grads).unwrap()))
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((*a as f64 - b).abs() <= tol * scale, "{what}[{i}]: autodiff {a} vs reference {b} (scale {scale})");
    }
}

#[test]
fn autodiff_equals_closed_form_and_finite_differences() {
    let mut rng = StdRng::seed_from_u64(5);
    let (rows, cols) = (4, 48);
    for (scheme, bits) in [(Scheme::Seq, 2), (Scheme::Seq, 3), (Scheme::Ternary, 2), (Scheme::Int, 2), (Scheme::Int, 4), (Scheme::Binary, 1)] {
        let s = spec(scheme, bits, Granularity::Channel, ScaleInit::Max);
        let w = randn(&mut rng, rows * cols, 0.05);
        let g = randn(&mut rng, rows * cols, 1.0);
        // Scales below max|w| so that some weights fall outside the clip range.
        let alpha: Vec<f32> = (0..rows)
            .map(|r| {
                let m = w[r * cols..(r + 1) * cols].iter().fold(0f32, |m, v| m.max(v.abs()));
                match scheme {
                    Scheme::Int => m / ((1 << (bits - 1)) - 1).max(1) as f32 * 0.7,
                    Scheme::Binary => m * 0.5,
                    _ => m * 0.7,
                }
            })
            .collect();
        let (gw, ga) = autodiff_grads(&s, &w, &alpha, &g, rows, cols);
        let w64: Vec<f64> = w.iter().map(|&x| x as f64).collect();
        let a64: Vec<f64> = alpha.iter().map(|&x| x as f64).collect();
        let g64: Vec<f64> = g.iter().map(|&x| x as f64).collect();
        let (cw, ca) = closed_form(&s, &w64, &a64, &g64, cols);
        let label = s.label();
        assert_close(&format!("{label} dL/dw vs closed form"), &gw, &cw, 1e-6);
        assert_close(&format!("{label} dL/dα vs closed form"), &ga, &ca, 1e-4);

        // Central differences of the frozen-rounding loss, skipping elements within h of a
        // clip boundary (where the one-sided pieces differ).
        let h = 1e-7;
        let gamma = qat_quant::quantizer::gamma(&s, rows * cols);
        for r in 0..rows {
            let (mut ap, mut am) = (a64.clone(), a64.clone());
            ap[r] += h;
            am[r] -= h;
            let fd = (frozen_loss(&s, &w64, &ap, &g64, cols, &w64, &a64) - frozen_loss(&s, &w64, &am, &g64, cols, &w64, &a64)) / (2.0 * h);
            let got = ga[r] as f64 / gamma;
            assert!((got - fd).abs() <= 1e-3 * fd.abs().max(1.0), "{label} row {r}: dL/dα {got} vs finite difference {fd}");
        }
        for i in (0..rows * cols).step_by(7) {
            let u = w64[i] / a64[i / cols];
            let clip = if scheme == Scheme::Int { vec![-(1i64 << (bits - 1)) as f64, ((1i64 << (bits - 1)) - 1) as f64] } else { vec![-0.99, 0.99] };
            if clip.iter().any(|c| (u - c).abs() < 1e-3) {
                continue;
            }
            let (mut wp, mut wm) = (w64.clone(), w64.clone());
            wp[i] += h;
            wm[i] -= h;
            let fd = (frozen_loss(&s, &wp, &a64, &g64, cols, &w64, &a64) - frozen_loss(&s, &wm, &a64, &g64, cols, &w64, &a64)) / (2.0 * h);
            assert!((gw[i] as f64 - fd).abs() <= 1e-4 * fd.abs().max(1.0), "{label} w[{i}]: dL/dw {} vs finite difference {fd}", gw[i]);
        }
    }
}

#[test]
fn autodiff_equals_pytorch_paretoq_reference() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/paretoq_grads.json");
    let fx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mat =
        |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap())).collect() };
    let flat = |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
    let w = mat(&fx["w"]);
    let g = mat(&fx["g"]);
    let rows = fx["w"].as_array().unwrap().len();
    let cols = w.len() / rows;
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    for (name, scheme, bits) in [
        ("seq2", Scheme::Seq, 2),
        ("seq3", Scheme::Seq, 3),
        ("ternary", Scheme::Ternary, 2),
        ("int4", Scheme::Int, 4),
        ("int2", Scheme::Int, 2),
        ("asym4", Scheme::Asym, 4),
        ("asym2", Scheme::Asym, 2),
    ] {
        let case = &fx["cases"][name];
        let s = spec(scheme, bits, Granularity::Channel, ScaleInit::Max);
        let alpha = flat(&case["alpha"]);
        let (gw, ga) = autodiff_grads(&s, &f32s(&w), &f32s(&alpha), &f32s(&g), rows, cols);
        assert_close(&format!("{name} dL/dw vs PyTorch"), &gw, &mat(&case["grad_w"]), 1e-6);
        assert_close(&format!("{name} dL/dα (asym: dL/ds, dL/dm) vs PyTorch"), &ga, &flat(&case["grad_alpha"]), 1e-4);
        let device = Device::flex();
        let fq = vec_of(fake_quantize(tensor2(f32s(&w), [rows, cols], &device), Some(tensor2(f32s(&alpha), [rows, alpha.len() / rows], &device)), &s));
        assert_close(&format!("{name} ŵ vs PyTorch"), &fq, &mat(&case["w_hat"]), 1e-6);
    }
}

#[test]
fn angelslim_variant_passes_gradients_everywhere() {
    let s = QuantSpec { grad: GradVariant::Angelslim, ..spec(Scheme::Seq, 2, Granularity::Channel, ScaleInit::Max) };
    let w = vec![0.5f32, -3.0, 0.1, 2.5];
    let (gw, ga) = autodiff_grads(&s, &w, &[1.0], &[1.0; 4], 1, 4);
    assert_eq!(gw, vec![1.0; 4], "clamp is straight-through");
    // α-gradient q̂ − w/α everywhere, no γ: q̂ = 0.25, −0.75, 0.25, 0.75.
    let want = (0.25 - 0.5) + (-0.75 + 3.0) + (0.25 - 0.1) + (0.75 - 2.5);
    assert!((ga[0] as f64 - want).abs() < 1e-6, "{} vs {want}", ga[0]);
    let device = Device::flex();
    assert_eq!(vec_of(init_scale(tensor2(w, [1, 4], &device), &s).unwrap()), vec![1.0]);
}

#[test]
fn act_int8_is_per_token_and_straight_through() {
    let device = Device::flex().autodiff();
    let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, -0.5, 0.26, 100.0, 3.0, -0.7], [2, 3]), &device).require_grad();
    let y = qat_quant::quantizer::fake_quantize_act_int8(x.clone());
    let v = y.clone().into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(v[0], 1.0);
    assert!((v[2] - (0.26f32 * 127.0).round() / 127.0).abs() < 1e-6);
    assert_eq!(v[3], 100.0);
    assert!((v[4] - (3.0f32 * 1.27).round() / 1.27).abs() < 1e-5, "{}", v[4]);
    let grads = y.sum().backward();
    assert_eq!(vec_of(x.grad(&grads).unwrap()), vec![1.0; 6]);
}
