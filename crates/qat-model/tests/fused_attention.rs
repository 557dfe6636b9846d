//! The CPU backend's tiled attention (`qat_model::fused::attention`) against the composed
//! expression it replaces (`attention_composed`, the path on every other device): the output
//! and the gradients of Q, K and V under the masks the model builds — causal rows with padding
//! and cached keys, packed documents, shared prefixes — with grouped kv heads and more query
//! rows than one tile.

use burn::tensor::{Device, Tensor, TensorData};
use qat_model::AttentionBatch;
use qat_model::fused::{attention, attention_composed};

fn values(n: usize, seed: u32) -> Vec<f32> {
    qat_testing::pseudo_random(n, seed, 1.0)
}

fn vec_of<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(scale > 0.0, "{what}: all zero");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 2e-5 * scale.max(1.0), "{what}[{i}]: fused {a} vs composed {b}");
    }
}

/// Fused against composed for `q: [B, nh, T, hd]`, `k, v: [B, nkv, S, hd]` under `batch`'s mask.
fn check(name: &str, [b, nh, nkv, t, s, hd]: [usize; 6], batch: impl Fn(&Device) -> AttentionBatch) {
    let scale = 1.0 / (hd as f64).sqrt();
    let (qs, ks) = ([b, nh, t, hd], [b, nkv, s, hd]);
    let (qv, kv, vv) = (values(b * nh * t * hd, 1), values(b * nkv * s * hd, 2), values(b * nkv * s * hd, 3));
    let r = values(b * t * nh * hd, 4);
    let ad = Device::flex().autodiff();
    let bias = batch(&ad).bias;
    assert_eq!(bias.dims(), [b, 1, t, s], "{name}: mask shape");
    let run = |fused: bool| {
        let q = Tensor::<4>::from_data(TensorData::new(qv.clone(), qs), &ad).require_grad();
        let k = Tensor::<4>::from_data(TensorData::new(kv.clone(), ks), &ad).require_grad();
        let v = Tensor::<4>::from_data(TensorData::new(vv.clone(), ks), &ad).require_grad();
        let out = if fused {
            attention(&q, &k, &v, &bias, scale).expect("the CPU backend takes the fused kernel")
        } else {
            attention_composed(q.clone(), k.clone(), v.clone(), &bias, scale, None)
        };
        let grads = (out.clone() * Tensor::<3>::from_data(TensorData::new(r.clone(), [b, t, nh * hd]), &ad)).sum().backward();
        [vec_of(out.inner()), vec_of(q.grad(&grads).unwrap()), vec_of(k.grad(&grads).unwrap()), vec_of(v.grad(&grads).unwrap())]
    };
    let (fused, composed) = (run(true), run(false));
    for (what, (got, want)) in ["output", "∂Q", "∂K", "∂V"].iter().zip(fused.iter().zip(&composed)) {
        assert_close(&format!("{name}: {what}"), got, want);
    }
    let plain = Device::flex();
    let q = Tensor::<4>::from_data(TensorData::new(qv.clone(), qs), &plain);
    let k = Tensor::<4>::from_data(TensorData::new(kv.clone(), ks), &plain);
    let v = Tensor::<4>::from_data(TensorData::new(vv.clone(), ks), &plain);
    let out = attention(&q, &k, &v, &batch(&plain).bias, scale).expect("the CPU backend takes the fused kernel");
    assert_close(&format!("{name}: output without autodiff"), &vec_of(out), &composed[0]);
}

#[test]
fn causal_rows_with_padding_and_grouped_heads() {
    check("causal", [2, 6, 2, 150, 150, 8], |d| AttentionBatch::causal(&[150, 97], 150, 0, d));
}

#[test]
fn causal_rows_after_cached_keys() {
    check("cached", [1, 4, 4, 70, 90, 8], |d| AttentionBatch::causal(&[70], 70, 20, d));
}

#[test]
fn packed_documents_and_shared_prefixes() {
    let segments: Vec<u32> = (0..140)
        .map(|i| {
            if i < 30 {
                0
            } else if i < 100 {
                1
            } else {
                2
            }
        })
        .collect();
    check("packed", [1, 3, 1, 140, 140, 16], |d| AttentionBatch::packed(std::slice::from_ref(&segments), d));
    check("shared prefix", [2, 2, 2, 80, 80, 8], |d| AttentionBatch::shared_prefix(&[(10, vec![30, 25]), (70, vec![5])], 80, d));
}

#[test]
fn other_devices_and_shapes_fall_back() {
    let d = Device::flex();
    let q = Tensor::<4>::zeros([1, 3, 4, 8], &d);
    let k = Tensor::<4>::zeros([1, 2, 4, 8], &d);
    let bias = AttentionBatch::causal(&[4], 4, 0, &d).bias;
    assert!(attention(&q, &k, &k, &bias, 0.5).is_none(), "3 query heads cannot share 2 kv heads");
}
