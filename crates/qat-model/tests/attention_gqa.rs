//! Grouped-query attention on the no-gradient path: the GPU backends get each kv head repeated
//! for its query heads (`repeat_kv_heads`), the CPU backend shares it without copies. Both must
//! give the same attention, i.e. the repeat must follow transformers' head order (query head
//! `h` reads kv head `h / rep`), which the CPU backend's GQA kernel also follows.
//! (On an H200, Burn's Vulkan matmul rejected 9 query heads against 3 kv heads:
//! `IncompatibleDims { left: 9, right: 3, dim: 1 }`.)

use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor, TensorData};
use qat_model::transformer::repeat_kv_heads;

fn values(n: usize, seed: u32) -> Vec<f32> {
    qat_testing::pseudo_random(n, seed, 1.0)
}

#[test]
fn repeated_kv_heads_give_the_shared_head_attention() {
    let device = Device::flex();
    let (b, nh, nkv, t, hd) = (2, 6, 2, 5, 4);
    let q = Tensor::<4>::from_data(TensorData::new(values(b * nh * t * hd, 1), [b, nh, t, hd]), &device);
    let k = Tensor::<4>::from_data(TensorData::new(values(b * nkv * t * hd, 2), [b, nkv, t, hd]), &device);
    let v = Tensor::<4>::from_data(TensorData::new(values(b * nkv * t * hd, 3), [b, nkv, t, hd]), &device);
    assert!(qat_model::fused::on_flex(&q));
    let options = || AttentionModuleOptions { scale: Some(0.5), softcap: None, is_causal: true };
    let shared = burn::tensor::module::attention(q.clone(), k.clone(), v.clone(), None, None, options());
    let rep = nh / nkv;
    let (kr, vr) = (repeat_kv_heads(k.clone(), rep), repeat_kv_heads(v.clone(), rep));
    assert_eq!(kr.dims(), [b, nh, t, hd]);
    // Query head h reads kv head h / rep.
    let kr_data = kr.clone().into_data().try_to_vec::<f32>().unwrap();
    let k_data = k.into_data().try_to_vec::<f32>().unwrap();
    for bi in 0..b {
        for h in 0..nh {
            let got = &kr_data[((bi * nh + h) * t) * hd..((bi * nh + h + 1) * t) * hd];
            let want = &k_data[((bi * nkv + h / rep) * t) * hd..((bi * nkv + h / rep + 1) * t) * hd];
            assert_eq!(got, want, "batch {bi} head {h}");
        }
    }
    let repeated = burn::tensor::module::attention(q, kr, vr, None, None, options());
    let (a, r) = (shared.into_data().try_to_vec::<f32>().unwrap(), repeated.into_data().try_to_vec::<f32>().unwrap());
    for (x, y) in a.iter().zip(&r) {
        assert!((x - y).abs() < 1e-6, "{x} vs {y}");
    }
}

#[test]
fn on_flex_is_false_on_the_autodiff_device() {
    let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32; 4], [2, 2]), &Device::flex().autodiff());
    assert!(!qat_model::fused::on_flex(&x));
}
