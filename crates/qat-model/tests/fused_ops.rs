//! The CPU backend's fused RMSNorm and SwiGLU (`qat_model::fused`) against the composed
//! expressions they replace, which stay the path on every other device: values on the plain
//! and the autodiff device, and the gradients of both inputs.

use burn::tensor::{Device, Tensor, TensorData};
use qat_model::fused;

fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    qat_testing::pseudo_random(n, seed, scale)
}

fn vec_of<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol * b.abs().max(1.0), "{what}[{i}]: fused {a} vs composed {b}");
    }
}

/// `op(a, b)` fused and composed on the autodiff device: the output and the gradients of
/// `Σ out·r` (r fixed random) with respect to both inputs; then the output on the plain device.
fn check<const DB: usize>(
    name: &str,
    a: (Vec<f32>, [usize; 3]),
    b: (Vec<f32>, [usize; DB]),
    fused_op: impl Fn(Tensor<3>, Tensor<DB>) -> Tensor<3>,
    composed_op: impl Fn(Tensor<3>, Tensor<DB>) -> Tensor<3>,
    tol: f32,
) {
    let ad = Device::flex().autodiff();
    let n: usize = a.1.iter().product();
    let r = values(n, 99, 1.0);
    // `fresh`: the op's inputs are new tensors that nothing but the op holds afterwards (as a
    // layer's outputs are), which a backward may overwrite in place.
    let run = |fused: bool, fresh: bool| {
        let ta = Tensor::<3>::from_data(TensorData::new(a.0.clone(), a.1), &ad).require_grad();
        let tb = Tensor::<DB>::from_data(TensorData::new(b.0.clone(), b.1), &ad).require_grad();
        let (xa, xb) = if fresh { (ta.clone() * 1.0, tb.clone() * 1.0) } else { (ta.clone(), tb.clone()) };
        let out = if fused { fused_op(xa, xb) } else { composed_op(xa, xb) };
        let grads = (out.clone() * Tensor::<3>::from_data(TensorData::new(r.clone(), a.1), &ad)).sum().backward();
        (vec_of(out.inner()), vec_of(ta.grad(&grads).unwrap()), vec_of(tb.grad(&grads).unwrap()))
    };
    let ((y, ga, gb), (y_ref, ga_ref, gb_ref)) = (run(true, false), run(false, false));
    assert_close(&format!("{name} value"), &y, &y_ref, tol);
    assert_close(&format!("{name} gradient of the first input"), &ga, &ga_ref, tol);
    assert_close(&format!("{name} gradient of the second input"), &gb, &gb_ref, tol);
    assert_eq!(run(true, true), (y, ga, gb), "{name} on inputs nothing else holds");
    let plain = Device::flex();
    let ta = Tensor::<3>::from_data(TensorData::new(a.0.clone(), a.1), &plain);
    let tb = Tensor::<DB>::from_data(TensorData::new(b.0.clone(), b.1), &plain);
    assert_close(&format!("{name} value without autodiff"), &vec_of(fused_op(ta, tb)), &y_ref, tol);
}

#[test]
fn fused_rms_norm_matches_composed() {
    // Rows of different scales, one of them tiny (ε matters there), d not a multiple of 8.
    let (rows, d) = (2 * 37, 100);
    let mut x = values(rows * d, 1, 3.0);
    for v in &mut x[..d] {
        *v *= 1e-4;
    }
    let w = values(d, 2, 1.5);
    let eps = 1e-5;
    check("rms_norm", (x, [2, 37, d]), (w, [d]), |x, w| fused::rms_norm(x, w, eps), |x, w| fused::rms_norm_composed(x, w, eps), 2e-5);
}

#[test]
fn fused_swiglu_matches_composed() {
    // Gate values far into both tails of the sigmoid.
    let shape = [3, 41, 130];
    let n: usize = shape.iter().product();
    let g = values(n, 3, 12.0);
    let u = values(n, 4, 2.0);
    check("swiglu", (g, shape), (u, shape), fused::swiglu, fused::swiglu_composed, 1e-5);
}

#[test]
fn fused_rope_matches_composed() {
    // Real tables (positions restart in the second row, as in packed training) and a head dim
    // of 2·5; the tables carry no gradient.
    let (b, h, t, hd) = (2, 3, 7, 10);
    let cfg = qat_model::ModelConfig::from_json(
        &serde_json::json!({"model_type": "llama", "hidden_size": h * hd, "num_attention_heads": h, "num_key_value_heads": h,
            "num_hidden_layers": 1, "intermediate_size": 8, "vocab_size": 10, "rms_norm_eps": 1e-5, "rope_theta": 500.0})
        .to_string(),
        "config.json",
    )
    .unwrap();
    let rope = qat_model::transformer::Rope::new(&cfg);
    let positions: Vec<i64> = (0..t as i64).chain([0, 1, 2, 0, 1, 2, 3]).collect();
    let x = values(b * h * t * hd, 5, 2.0);
    let r = values(b * h * t * hd, 6, 1.0);
    let ad = Device::flex().autodiff();
    let run = |fused: bool, device: &Device| {
        let (cos, sin) = rope.tables(Tensor::<2, burn::tensor::Int>::from_data(TensorData::new(positions.clone(), [b, t]), device));
        let tx = Tensor::<4>::from_data(TensorData::new(x.clone(), [b, h, t, hd]), device);
        let tx = if device.is_autodiff() { tx.require_grad() } else { tx };
        let y = if fused { fused::rope(tx.clone(), &cos, &sin) } else { fused::rope_composed(tx.clone(), &cos, &sin) };
        if !device.is_autodiff() {
            return (vec_of(y), Vec::new());
        }
        let grads = (y.clone() * Tensor::<4>::from_data(TensorData::new(r.clone(), [b, h, t, hd]), device)).sum().backward();
        (vec_of(y.inner()), vec_of(tx.grad(&grads).unwrap()))
    };
    let ((y, g), (y_ref, g_ref)) = (run(true, &ad), run(false, &ad));
    assert_close("rope value", &y, &y_ref, 1e-6);
    assert_close("rope gradient", &g, &g_ref, 1e-6);
    assert_close("rope value without autodiff", &run(true, &Device::flex()).0, &y_ref, 1e-6);
}
