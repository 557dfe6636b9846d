//! The CPU backend's fused softmax with its own backward (`qat_model::fused::softmax_last`)
//! against Burn's composed softmax: values and gradients, with masked (−∞) scores as attention
//! uses them.

use burn::tensor::{Device, Tensor, TensorData};

#[test]
fn fused_softmax_matches_composed_values_and_gradients() {
    let device = Device::flex().autodiff();
    let (rows, cols) = (37, 300);
    let mut state = 7u32;
    let mut next = || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 8) as f32 / (1u32 << 24) as f32 * 20.0 - 10.0
    };
    // Causal masking: row r sees the first r + 1 columns.
    let x: Vec<f32> = (0..rows * cols).map(|i| if i % cols <= i / cols { next() } else { f32::NEG_INFINITY }).collect();
    let r: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
    let run = |fused: bool| {
        let x = Tensor::<3>::from_data(TensorData::new(x.clone(), [1, rows, cols]), &device).require_grad();
        let p = if fused { qat_model::fused::softmax_last(x.clone()) } else { burn::tensor::activation::softmax(x.clone(), 2) };
        let grads = (p.clone() * Tensor::from_data(TensorData::new(r.clone(), [1, rows, cols]), &device)).sum().backward();
        let v = |t: Tensor<3>| t.into_data().try_to_vec::<f32>().unwrap();
        (v(p.inner()), v(x.grad(&grads).unwrap()))
    };
    let ((p, g), (p_ref, g_ref)) = (run(true), run(false));
    assert!(p.iter().chain(&g).all(|v| v.is_finite()), "masked scores must not give NaN");
    for (a, b) in p.iter().zip(&p_ref) {
        assert!((a - b).abs() < 1e-6, "value {a} vs {b}");
    }
    for (a, b) in g.iter().zip(&g_ref) {
        assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "gradient {a} vs {b}");
    }
}
