//! The CPU backend's linear product with its own backward (`qat_quant::matmul::linear`) against
//! Burn's `linear` on the transposed weight, which stays the path on every other device: the
//! output and the gradients of the input and the weight on the autodiff device, the output on
//! the plain device, for shapes above and below the threshold where the product goes parallel.

use burn::tensor::{Device, Tensor, TensorData};
use qat_quant::matmul::linear;

fn values(n: usize, seed: u32) -> Vec<f32> {
    qat_testing::pseudo_random(n, seed, 1.0)
}

fn vec_of<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{what}[{i}]: fused {a} vs Burn {b}");
    }
}

fn check([b, t, inp, out]: [usize; 4]) {
    let name = format!("x [{b}, {t}, {inp}] · W [{out}, {inp}]ᵀ");
    let (xv, wv, r) = (values(b * t * inp, 1), values(out * inp, 2), values(b * t * out, 3));
    let ad = Device::flex().autodiff();
    let run = |fused: bool| {
        let x = Tensor::<3>::from_data(TensorData::new(xv.clone(), [b, t, inp]), &ad).require_grad();
        let w = Tensor::<2>::from_data(TensorData::new(wv.clone(), [out, inp]), &ad).require_grad();
        let y = if fused {
            linear(&x, &w).expect("the CPU backend takes the fused product")
        } else {
            burn::tensor::module::linear(x.clone(), w.clone().transpose(), None)
        };
        let grads = (y.clone() * Tensor::<3>::from_data(TensorData::new(r.clone(), [b, t, out]), &ad)).sum().backward();
        [vec_of(y.inner()), vec_of(x.grad(&grads).unwrap()), vec_of(w.grad(&grads).unwrap())]
    };
    let (fused, burn) = (run(true), run(false));
    for (what, (got, want)) in ["output", "∂x", "∂W"].iter().zip(fused.iter().zip(&burn)) {
        assert_close(&format!("{name}: {what}"), got, want);
    }
    let plain = Device::flex();
    let x = Tensor::<3>::from_data(TensorData::new(xv.clone(), [b, t, inp]), &plain);
    let w = Tensor::<2>::from_data(TensorData::new(wv.clone(), [out, inp]), &plain);
    assert_close(&format!("{name}: output without autodiff"), &vec_of(linear(&x, &w).unwrap()), &burn[0]);
}

#[test]
fn fused_linear_matches_burn_linear() {
    check([2, 5, 7, 3]);
    check([3, 100, 96, 160]);
    // 512 · 256 · 128 multiply-adds: the parallel product.
    check([2, 256, 128, 256]);
}

#[test]
fn mismatched_shapes_fall_back() {
    let d = Device::flex();
    assert!(linear(&Tensor::<2>::zeros([4, 8], &d), &Tensor::<2>::zeros([3, 7], &d)).is_none());
}
