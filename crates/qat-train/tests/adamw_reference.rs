//! qat's AdamW (two groups chosen by parameter path, schedule factor, clipping factor) against
//! `torch.optim.AdamW` on fixed gradients (`scripts/make_adamw_fixture.py`).

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use qat_train::optim::{AdamW, GroupHyper};
use serde_json::Value;

#[derive(Module, Debug)]
struct Quant {
    scale: Param<Tensor<2>>,
}

/// A weight and a quantizer scale, at the paths the optimizer groups by (`quant.scale`).
#[derive(Module, Debug)]
struct Toy {
    weight: Param<Tensor<2>>,
    quant: Quant,
}

#[test]
fn adamw_matches_pytorch() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/adamw_reference.json");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let floats = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<_>>();
    let device = Device::flex().autodiff();
    let t = |v: Vec<f32>, shape: [usize; 2]| Param::from_tensor(Tensor::<2>::from_data(TensorData::new(v, shape), &device));
    let mut model = Toy { weight: t(floats(&r["w0"]), [3, 4]), quant: Quant { scale: t(floats(&r["s0"]), [3, 1]) } };
    let weights = GroupHyper { lr: r["lr"]["weights"].as_f64().unwrap(), weight_decay: r["weight_decay"].as_f64().unwrap() };
    let scales = GroupHyper { lr: r["lr"]["scales"].as_f64().unwrap(), weight_decay: 0.0 };
    let mut opt = AdamW::new(weights, scales, [0.9, 0.95], r["eps"].as_f64().unwrap());
    for (i, step) in r["steps"].as_array().unwrap().iter().enumerate() {
        let mut grads = GradientsParams::new();
        grads.register(model.weight.id, Tensor::<2>::from_data(TensorData::new(floats(&step["grad_w"]), [3, 4]), &Device::flex()));
        grads.register(model.quant.scale.id, Tensor::<2>::from_data(TensorData::new(floats(&step["grad_s"]), [3, 1]), &Device::flex()));
        model = opt.step(model, &grads, step["lr_factor"].as_f64().unwrap(), step["grad_factor"].as_f64().unwrap());
        for (name, ours, want) in [("weight", model.weight.val(), floats(&step["w"])), ("scale", model.quant.scale.val(), floats(&step["s"]))] {
            let ours = ours.into_data().try_to_vec::<f32>().unwrap();
            for (a, b) in ours.iter().zip(&want) {
                assert!((a - b).abs() <= 2e-6 * b.abs().max(1.0), "step {}: {name} {a} vs PyTorch {b}", i + 1);
            }
        }
    }
}
