//! qat's AdamW (two groups chosen by parameter path, schedule factor, clipping factor) against
//! `torch.optim.AdamW` on fixed gradients (`scripts/make_adamw_fixture.py`), both as the host
//! pass (the CPU backend) and as tensor operations (what a GPU device runs).

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use qat_train::optim::{AdamW, GroupHyper, Moments, Placement};
use serde_json::Value;

#[derive(Module, Debug)]
struct Quant {
    scale: Param<Tensor<2>>,
}

/// A weight and a quantizer scale; the scale is put in the scale group by its parameter id (its
/// spec matters only with scale rounding, which these tests leave off).
#[derive(Module, Debug)]
struct Toy {
    weight: Param<Tensor<2>>,
    quant: Quant,
}

#[test]
fn adamw_matches_pytorch() {
    run_fixture(Placement::Auto);
}

/// The update as tensor operations (what a GPU device runs), here on the CPU backend.
#[test]
fn adamw_on_device_tensors_matches_pytorch() {
    run_fixture(Placement::Device);
}

/// Moments kept on the device are the host pass's, and survive the round trip through the
/// host copy a checkpoint stores (a resumed GPU run uploads them again).
#[test]
fn device_and_host_moments_agree_and_resume() {
    let device = Device::flex().autodiff();
    let init = |seed: f32| (0..12).map(|i| (i as f32 * 0.37 + seed).sin()).collect::<Vec<f32>>();
    let make = || Toy {
        weight: Param::from_tensor(Tensor::<2>::from_data(TensorData::new(init(0.1), [3, 4]), &device)),
        quant: Quant { scale: Param::from_tensor(Tensor::<2>::from_data(TensorData::new(init(0.7)[..3].to_vec(), [3, 1]), &device)) },
    };
    let h = GroupHyper { lr: 1e-2, weight_decay: 0.1 };
    let run = |placement: Placement, resume_after: Option<usize>| {
        let mut model = make();
        let mut opt = AdamW::new(h, h, [(model.quant.scale.id, qat_quant::QuantSpec::q2_k())].into(), [0.9, 0.95], 1e-8);
        opt.placement = placement;
        for step in 0..4 {
            if resume_after == Some(step) {
                // What a checkpoint keeps: the host copies.
                opt.moments = opt
                    .moments
                    .iter()
                    .map(|(k, m)| {
                        let (a, b) = m.to_host();
                        (k.clone(), Moments::Host(a, b))
                    })
                    .collect();
            }
            let mut grads = GradientsParams::new();
            grads.register(model.weight.id, Tensor::<2>::from_data(TensorData::new(init(step as f32), [3, 4]), &Device::flex()));
            grads.register(model.quant.scale.id, Tensor::<2>::from_data(TensorData::new(init(2.0 + step as f32)[..3].to_vec(), [3, 1]), &Device::flex()));
            model = opt.step(model, &grads, 1.0, 0.5);
        }
        let moments = opt.moments.get("weight").expect("weight moments");
        assert_eq!(matches!(moments, Moments::Device(..)), placement == Placement::Device);
        (model.weight.val().into_data().try_to_vec::<f32>().unwrap(), moments.to_host())
    };
    let (host, (hm, hv)) = run(Placement::Host, None);
    for resume in [None, Some(2)] {
        let (dev, (dm, dv)) = run(Placement::Device, resume);
        for (a, b) in dev.iter().chain(&dm).chain(&dv).zip(host.iter().chain(&hm).chain(&hv)) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "device {a} vs host {b} (resume {resume:?})");
        }
    }
}

fn run_fixture(placement: Placement) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/adamw_reference.json");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let floats = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<_>>();
    let device = Device::flex().autodiff();
    let t = |v: Vec<f32>, shape: [usize; 2]| Param::from_tensor(Tensor::<2>::from_data(TensorData::new(v, shape), &device));
    let mut model = Toy { weight: t(floats(&r["w0"]), [3, 4]), quant: Quant { scale: t(floats(&r["s0"]), [3, 1]) } };
    let weights = GroupHyper { lr: r["lr"]["weights"].as_f64().unwrap(), weight_decay: r["weight_decay"].as_f64().unwrap() };
    let scales = GroupHyper { lr: r["lr"]["scales"].as_f64().unwrap(), weight_decay: 0.0 };
    let mut opt = AdamW::new(weights, scales, [(model.quant.scale.id, qat_quant::QuantSpec::q2_k())].into(), [0.9, 0.95], r["eps"].as_f64().unwrap());
    opt.placement = placement;
    for (i, step) in r["steps"].as_array().unwrap().iter().enumerate() {
        let mut grads = GradientsParams::new();
        grads.register(model.weight.id, Tensor::<2>::from_data(TensorData::new(floats(&step["grad_w"]), [3, 4]), &Device::flex()));
        grads.register(model.quant.scale.id, Tensor::<2>::from_data(TensorData::new(floats(&step["grad_s"]), [3, 1]), &Device::flex()));
        model = opt.step(model, &grads, step["lr_factor"].as_f64().unwrap(), step["grad_factor"].as_f64().unwrap());
        for (name, ours, want) in [("weight", model.weight.val(), floats(&step["w"])), ("scale", model.quant.scale.val(), floats(&step["s"]))] {
            let ours = ours.into_data().try_to_vec::<f32>().unwrap();
            for (a, b) in ours.iter().zip(&want) {
                assert!((a - b).abs() <= 2e-6 * b.abs().max(1.0), "{placement:?} step {}: {name} {a} vs PyTorch {b}", i + 1);
            }
        }
    }
}
