//! The fused fake quantization — the CPU kernel, and the tensor-operation form GPU backends run
//! (`fused::portable`, run here on the CPU backend) — against the composed tensor expression
//! it replaces: the same values bit for bit (so export stays exact) and the same gradients for
//! the weight and the scales (asymmetric grids: steps and minimums), for SEQ, integer and
//! asymmetric grids at every granularity, k-quant scales included.
//! (tests/quantizers.rs checks the fused kernel against closed forms, finite differences and
//! PyTorch, since `fake_quantize` takes it on the CPU.)

use burn::tensor::{Device, Tensor, TensorData};
use qat_quant::{Granularity, QuantSpec, Scheme, fake_quantize, fake_quantize_composed, fused, init_scale};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn specs() -> Vec<QuantSpec> {
    let base = QuantSpec::seq2();
    let group = |s: QuantSpec, g: usize| QuantSpec { granularity: Granularity::Group, group_size: g, ..s };
    let int = |bits: u32| QuantSpec { scheme: Scheme::Int, bits, ..base };
    let asym = |bits: u32| QuantSpec { scheme: Scheme::Asym, bits, ..base };
    vec![
        base,
        group(base, 32),
        QuantSpec { bits: 3, ..group(base, 16) },
        QuantSpec { granularity: Granularity::Tensor, ..base },
        QuantSpec::q2_k(),
        int(4),
        group(int(4), 32),
        group(int(2), 16),
        QuantSpec { granularity: Granularity::Tensor, ..int(8) },
        QuantSpec::q3_k(),
        asym(4),
        group(asym(4), 32),
        group(asym(2), 16),
        QuantSpec { granularity: Granularity::Tensor, ..asym(5) },
    ]
}

/// `(ŵ, ∂L/∂w, ∂L/∂α)` for `L = Σ ŵ·r` with fixed random `r`.
fn run(f: fn(Tensor<2>, Option<Tensor<2>>, &QuantSpec) -> Tensor<2>, w: &[f32], alpha: &[f32], r: &[f32], dims: [usize; 2], spec: &QuantSpec) -> [Vec<f32>; 3] {
    let device = Device::flex().autodiff();
    let shape = spec.scale_shape(dims);
    let w = Tensor::<2>::from_data(TensorData::new(w.to_vec(), dims), &device).require_grad();
    let a = Tensor::<2>::from_data(TensorData::new(alpha.to_vec(), shape), &device).require_grad();
    let r = Tensor::<2>::from_data(TensorData::new(r.to_vec(), dims), &device);
    let y = f(w.clone(), Some(a.clone()), spec);
    let grads = (y.clone() * r).sum().backward();
    let v = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
    [v(y.inner()), v(w.grad(&grads).unwrap()), v(a.grad(&grads).unwrap())]
}

/// [`fused::portable`], which takes every spec of [`specs`].
fn portable(w: Tensor<2>, alpha: Option<Tensor<2>>, spec: &QuantSpec) -> Tensor<2> {
    fused::portable(w, alpha, spec).expect("a fused spec")
}

#[test]
fn fused_kernel_matches_composed_expression() {
    check_against_composed(fake_quantize);
}

#[test]
fn portable_fused_form_matches_composed_expression() {
    check_against_composed(portable);
}

fn check_against_composed(fused: fn(Tensor<2>, Option<Tensor<2>>, &QuantSpec) -> Tensor<2>) {
    let mut rng = StdRng::seed_from_u64(7);
    let dims = [24, 512];
    for spec in specs() {
        let w: Vec<f32> = (0..dims[0] * dims[1]).map(|_| (rng.random::<f32>() - 0.5) * 0.2).collect();
        let r: Vec<f32> = (0..dims[0] * dims[1]).map(|_| rng.random::<f32>() - 0.5).collect();
        // Scales below the max so that some weights fall outside the clip range.
        let init = init_scale(Tensor::from_data(TensorData::new(w.clone(), dims), &Device::flex()), &spec).unwrap();
        let mut alpha: Vec<f32> = init.into_data().try_to_vec::<f32>().unwrap().iter().map(|a| a * (0.6 + 0.4 * rng.random::<f32>())).collect();
        // Some scales (asymmetric grids: steps) below the floor ALPHA_MIN = 1e-5, or negative,
        // where the floor must stop their gradient; not where k-quant sub-scales are snapped
        // onto a super-block grid, nor for a single per-tensor scale.
        let per = if spec.scheme == Scheme::Asym { 2 } else { 1 };
        if alpha.len() / per >= 4 && spec.sub_scale_bits == 0 {
            for (j, a) in alpha.iter_mut().step_by(5 * per).enumerate() {
                *a = if j % 2 == 0 { 5e-6 } else { -1e-3 };
            }
        }
        let [y, gw, ga] = run(fused, &w, &alpha, &r, dims, &spec);
        let [y_ref, gw_ref, ga_ref] = run(fake_quantize_composed, &w, &alpha, &r, dims, &spec);
        assert_eq!(y, y_ref, "{spec:?}: values differ");
        assert!(gw_ref.contains(&0.0) && gw_ref.iter().any(|&g| g != 0.0), "{spec:?}: the case should clip some weights");
        for (i, (a, b)) in gw.iter().zip(&gw_ref).enumerate() {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "{spec:?}: ∂/∂w[{i}] {a} vs {b}");
        }
        for (i, (a, b)) in ga.iter().zip(&ga_ref).enumerate() {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1e-3), "{spec:?}: ∂/∂α[{i}] {a} vs {b}");
        }
        // Without autodiff (evaluation of a fake-quantized model) the values are the same too.
        let plain = |f: fn(Tensor<2>, Option<Tensor<2>>, &QuantSpec) -> Tensor<2>| {
            let d = Device::flex();
            let t = f(
                Tensor::from_data(TensorData::new(w.clone(), dims), &d),
                Some(Tensor::from_data(TensorData::new(alpha.clone(), spec.scale_shape(dims)), &d)),
                &spec,
            );
            t.into_data().try_to_vec::<f32>().unwrap()
        };
        assert_eq!(plain(fused), plain(fake_quantize_composed), "{spec:?}: plain-device values differ");
    }
}
