//! k-quant scales (`sub_scale_bits`): Q2_K's, Q3_K's, Q4_K's and Q5_K's double quantization in
//! the forward pass.

use burn::tensor::{Device, Tensor, TensorData};
use qat_quant::exact::snap_sub_scales;
use qat_quant::{Granularity, QuantSpec, fake_quantize, init_scale, quantize};
use rand::{Rng, SeedableRng};

fn weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Heavy-tailed, with per-row magnitudes spanning 100×, like LLM weights.
    (0..rows * cols).map(|i| (rng.random::<f32>() - 0.5).powi(3) * 0.4 * (1.0 + 99.0 * ((i / cols) % 7) as f32 / 6.0) / 100.0).collect()
}

fn t2(v: Vec<f32>, dims: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v, dims), device)
}

fn significant_bits(x: f32) -> u32 {
    let m = (x.to_bits() & 0x7f_ffff) | 0x80_0000;
    24 - m.trailing_zeros()
}

/// Every step the forward pass uses is `d·sc/2` with an integer `sc` in 1..=15 and a 2-bit `d`
/// per 256 weights, as Q2_K stores it, and every value is exact in bf16.
#[test]
fn forward_scales_are_q2_k_sub_scales() {
    let device = Device::flex();
    let (rows, cols) = (7, 512);
    let w = t2(weights(rows, cols, 1), [rows, cols], &device);
    let spec = QuantSpec::q2_k();
    spec.validate("test").unwrap();
    spec.validate_shape("test", [rows, cols]).unwrap();
    let alpha = init_scale(w.clone(), &spec).unwrap();
    let qw = quantize(w.clone(), Some(alpha.clone()), &spec);
    assert_eq!(qw.super_scales.len(), rows * cols / 256);
    for (b, &d) in qw.super_scales.iter().enumerate() {
        assert!(significant_bits(d) <= qat_quant::KQuant::Q2K.super_scale_bits(), "d = {d}");
        for j in 0..16 {
            let sc = qw.steps[b * 16 + j] * 2.0 / d;
            assert!(sc.fract() == 0.0 && (1.0..=15.0).contains(&sc), "block {b} group {j}: sc = {sc}");
        }
    }
    let fq = fake_quantize(w, Some(alpha), &spec).into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(fq, qw.dequantize());
    assert!(fq.iter().all(|v| v.to_bits() & 0xffff == 0), "a value is not exact in bf16");
    assert!((spec.bits_per_weight([rows, cols]) - 2.625).abs() < 1e-12, "Q2_K is 2.625 bits per weight");
}

/// Q3_K: every step is `d·sc` with an integer `sc` in 1..=31 and a power-of-two `d` per 256
/// weights; levels −4..3; every value exact in bf16.
#[test]
fn forward_scales_are_q3_k_sub_scales() {
    let device = Device::flex();
    let (rows, cols) = (7, 512);
    let w = t2(weights(rows, cols, 2), [rows, cols], &device);
    let spec = QuantSpec::q3_k();
    spec.validate("test").unwrap();
    let alpha = init_scale(w.clone(), &spec).unwrap();
    let qw = quantize(w.clone(), Some(alpha.clone()), &spec);
    assert_eq!(qw.super_scales.len(), rows * cols / 256);
    for (b, &d) in qw.super_scales.iter().enumerate() {
        assert_eq!(significant_bits(d), 1, "d = {d}");
        for j in 0..16 {
            let sc = qw.steps[b * 16 + j] / d;
            assert!(sc.fract() == 0.0 && (1.0..=31.0).contains(&sc), "block {b} group {j}: sc = {sc}");
        }
    }
    assert!(qw.levels.iter().all(|l| (-4.0..=3.0).contains(l) && l.fract() == 0.0));
    let fq = fake_quantize(w, Some(alpha), &spec).into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(fq, qw.dequantize());
    assert!(fq.iter().all(|v| v.to_bits() & 0xffff == 0), "a value is not exact in bf16");
}

/// The snap: `d ≥ max α / 15`, each `α'` is the nearest multiple of `d` within 1..=15, and a
/// group whose scale is far below the block's largest is clamped to `sc = 1`.
#[test]
fn snapping_picks_the_nearest_sub_scale() {
    let spec = QuantSpec::q2_k();
    let mut alpha = vec![0.01f32; 16];
    alpha[3] = 0.3;
    alpha[7] = 1e-6;
    let (snapped, d) = snap_sub_scales(&alpha, 16, &spec);
    assert_eq!(d.len(), 1);
    assert!(d[0] >= 0.3 / 15.0 && d[0] < 0.3 / 15.0 * 1.5, "d = {}", d[0]);
    assert_eq!(snapped[3], d[0] * (0.3 / d[0]).round().min(15.0));
    assert_eq!(snapped[7], d[0], "clamped to one unit");
    for (a, s) in alpha.iter().zip(&snapped) {
        if *a >= d[0] {
            assert!((a - s).abs() <= d[0] / 2.0 + 1e-9, "{a} → {s}");
        }
    }
}

/// Gradients reach the continuous scales through the snap (straight-through), and k-quant
/// group scales quantize with less error than one scale per row.
#[test]
fn scales_learn_through_the_snap_and_beat_per_channel() {
    let device = Device::flex().autodiff();
    let (rows, cols) = (4, 256);
    let wv = weights(rows, cols, 2);
    let w = t2(wv.clone(), [rows, cols], &device);
    let spec = QuantSpec::q2_k();
    let alpha = init_scale(w.clone(), &spec).unwrap().detach().require_grad();
    let target = t2(wv.iter().map(|v| v * 0.5).collect(), [rows, cols], &device);
    let loss = (fake_quantize(w.clone(), Some(alpha.clone()), &spec) - target).square().sum();
    let grads = loss.backward();
    let g = alpha.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
    assert!(g.iter().filter(|v| **v != 0.0).count() > g.len() / 2, "scale gradients are zero");
    let err = |s: &QuantSpec| {
        let w = t2(wv.clone(), [rows, cols], &Device::flex());
        let q = fake_quantize(w.clone(), init_scale(w.clone(), s), s);
        (q - w).square().sum().into_scalar::<f32>()
    };
    let channel = QuantSpec { granularity: Granularity::Channel, group_size: 0, sub_scale_bits: 0, ..spec };
    assert!(err(&spec) < 0.8 * err(&channel), "k-quant {} vs per-channel {}", err(&spec), err(&channel));
}

/// Asymmetric k-quants (Q2_K as ggml fills it, Q4_K, Q5_K): every step is `d·sc` and every
/// minimum `−dmin·mn` with integers `sc` in 1..=top and `mn` in 0..=top and f16 `d`, `dmin` per
/// 256 weights; codes 0..2^b − 1; the forward pass equals the exported values bit for bit, and
/// gradients reach both the steps and the minimums through the snap.
#[test]
fn asymmetric_k_quants_snap_steps_and_minimums() {
    for (spec, top, bpw) in [(QuantSpec::q2_k_asym(), 15.0, 2.625), (QuantSpec::q4_k(), 63.0, 4.5), (QuantSpec::q5_k(), 63.0, 5.5)] {
        spec.validate("test").unwrap();
        let (rows, cols) = (5, 512);
        let wv = weights(rows, cols, 3);
        let w = t2(wv.clone(), [rows, cols], &Device::flex());
        let alpha = init_scale(w.clone(), &spec).unwrap();
        let qw = quantize(w.clone(), Some(alpha.clone()), &spec);
        let groups = 256 / spec.group_size;
        assert_eq!(qw.super_scales.len(), 2 * rows * cols / 256, "{}", spec.label());
        for (b, pair) in qw.super_scales.chunks(2).enumerate() {
            let (d, dmin) = (pair[0], pair[1]);
            assert!(half::f16::from_f32(d).to_f32() == d && half::f16::from_f32(dmin).to_f32() == dmin, "{d} {dmin}");
            for j in 0..groups {
                let sc = qw.steps[b * groups + j] / d;
                let mn = -qw.offsets[b * groups + j] / dmin;
                assert!(sc.fract() == 0.0 && (1.0..=top).contains(&sc), "{} block {b} group {j}: sc = {sc}", spec.label());
                assert!(mn.fract() == 0.0 && (0.0..=top).contains(&mn), "{} block {b} group {j}: mn = {mn}", spec.label());
            }
        }
        let qmax = ((1u32 << spec.bits) - 1) as f32;
        assert!(qw.levels.iter().all(|l| (0.0..=qmax).contains(l) && l.fract() == 0.0));
        let fq = fake_quantize(w.clone(), Some(alpha.clone()), &spec).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(fq, qw.dequantize(), "{}", spec.label());
        assert!((spec.bits_per_weight([rows, cols]) - bpw).abs() < 1e-12);
        // Relative error against the unsnapped grid of the same bits: the snap costs little.
        let free = QuantSpec { sub_scale_bits: 0, ..spec };
        let err = |s: &QuantSpec| {
            let q = fake_quantize(w.clone(), init_scale(w.clone(), s), s);
            (q - w.clone()).square().sum().into_scalar::<f32>()
        };
        assert!(err(&spec) < 1.3 * err(&free), "{}: snapped {} vs free {}", spec.label(), err(&spec), err(&free));

        let device = Device::flex().autodiff();
        let w = t2(wv.clone(), [rows, cols], &device);
        let a = alpha.clone().into_data();
        let alpha = Tensor::<2>::from_data(a, &device).require_grad();
        let target = t2(wv.iter().map(|v| v * 0.5 + 0.001).collect(), [rows, cols], &device);
        let grads = (fake_quantize(w, Some(alpha.clone()), &spec) - target).square().sum().backward();
        let g = alpha.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let (steps, mins): (Vec<_>, Vec<_>) = g.chunks(2).map(|p| (p[0], p[1])).unzip();
        assert!(steps.iter().filter(|v| **v != 0.0).count() > steps.len() / 2, "{}: step gradients are zero", spec.label());
        assert!(mins.iter().filter(|v| **v != 0.0).count() > mins.len() / 2, "{}: minimum gradients are zero", spec.label());
    }
}

/// Minimums above zero clamp to zero (ggml's quantizers do the same), and `dmin` covers the
/// most negative minimum of its super-block.
#[test]
fn asymmetric_snap_clamps_positive_minimums() {
    let spec = QuantSpec::q4_k();
    let mut values = Vec::new();
    for j in 0..8 {
        values.extend([0.01 * (j + 1) as f32, if j == 2 { 0.05 } else { -0.1 * j as f32 }]);
    }
    let (snapped, supers) = snap_sub_scales(&values, 16, &spec);
    let (d, dmin) = (supers[0], supers[1]);
    assert!(d >= 0.08 / 63.0 && (0.7 / 63.0..0.7 / 63.0 * 1.01).contains(&dmin), "d {d} dmin {dmin}");
    assert_eq!(snapped[5], 0.0, "a positive minimum becomes 0");
    assert_eq!(snapped[15], -(dmin * 63.0), "the most negative minimum is the largest integer");
    for j in 0..8 {
        assert!((snapped[2 * j] - values[2 * j]).abs() <= d / 2.0 + 1e-9);
    }
}

#[test]
fn other_sub_scale_layouts_are_refused() {
    let bad = QuantSpec { group_size: 32, ..QuantSpec::q2_k() };
    assert!(bad.validate("quant").unwrap_err().to_string().contains("Q2_K"));
    assert!(QuantSpec::q2_k().validate_shape("quant", [8, 576]).unwrap_err().to_string().contains("256"));
}
