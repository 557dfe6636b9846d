//! The training losses and their gradients against PyTorch (`scripts/make_loss_fixture.py`:
//! `cross_entropy` and `kl_div` in f64 on random logits, with ignored positions).

use burn::tensor::{Device, Tensor, TensorData};
use qat_train::config::{KdKind, LossSection};
use qat_train::loss::{self, Targets};
use serde_json::Value;

struct Case {
    shape: [usize; 3],
    student: Vec<f32>,
    teacher: Vec<f32>,
    targets: Vec<i64>,
    reference: Value,
}

fn case() -> Case {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/loss_reference.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let floats = |k: &str| v[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect::<Vec<_>>();
    let s: Vec<usize> = v["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    Case {
        shape: [s[0], s[1], s[2]],
        student: floats("student"),
        teacher: floats("teacher"),
        targets: v["targets"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect(),
        reference: v["losses"].clone(),
    }
}

/// Value and gradient (w.r.t. the student logits) of `f` on an autodiff device.
fn value_and_grad(c: &Case, f: impl FnOnce(Tensor<3>, Tensor<3>, &Targets) -> Tensor<1>) -> (f64, Vec<f32>) {
    let device = Device::flex().autodiff();
    let [b, t, _] = c.shape;
    let student = Tensor::<3>::from_data(TensorData::new(c.student.clone(), c.shape), &device).require_grad();
    let teacher = Tensor::<3>::from_data(TensorData::new(c.teacher.clone(), c.shape), &device);
    let targets = Targets::new(&c.targets, b, t, &device);
    let value = f(student.clone(), teacher, &targets);
    let grads = value.backward();
    let grad = student.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
    (value.into_data().try_to_vec::<f32>().unwrap()[0] as f64, grad)
}

fn assert_matches(c: &Case, name: &str, (value, grad): (f64, Vec<f32>), scale: f64) {
    let r = &c.reference[name];
    let want = r["value"].as_f64().unwrap() * scale;
    assert!((value - want).abs() <= 1e-4 * want.abs().max(1.0), "{name}: {value} vs PyTorch {want}");
    let want_grad: Vec<f64> = r["grad"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() * scale).collect();
    assert_eq!(grad.len(), want_grad.len());
    let worst = grad.iter().zip(&want_grad).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max);
    assert!(worst <= 1e-5, "{name}: gradient differs from PyTorch's by up to {worst}");
}

#[test]
fn cross_entropy_matches_pytorch() {
    let c = case();
    assert_matches(&c, "ce", value_and_grad(&c, |s, _, tg| loss::ce_sum(s, tg)), 1.0);
}

#[test]
fn distillation_losses_match_pytorch() {
    let c = case();
    for (name, kind) in [("forward_kl", KdKind::ForwardKl), ("reverse_kl", KdKind::ReverseKl), ("cakld", KdKind::Cakld)] {
        assert_matches(&c, name, value_and_grad(&c, |s, t, tg| loss::kd_sum(s, t, tg, kind)), 1.0);
    }
}

type ObjectiveFn = fn(Tensor<3>, Option<Tensor<3>>, &Targets, &LossSection, usize) -> loss::Objective;

/// The step objective `(w_ce·CE + w_kd·KD) / n_targets` and its unweighted sums, for every
/// divergence, from the fused CPU kernel and from the composed reference, against PyTorch.
#[test]
fn objective_fused_and_composed_match_pytorch() {
    let c = case();
    let n = c.targets.iter().filter(|&&x| x >= 0).count();
    let (w_ce, w_kd) = (0.7, 1.3);
    let field = |k: &str, i: Option<usize>| match i {
        None => c.reference[k]["value"].as_f64().unwrap(),
        Some(i) => c.reference[k]["grad"][i].as_f64().unwrap(),
    };
    let paths: [(&str, ObjectiveFn); 2] = [("fused", loss::objective), ("composed", loss::objective_composed)];
    for (path, objective) in paths {
        for (name, kind) in [("forward_kl", KdKind::ForwardKl), ("reverse_kl", KdKind::ReverseKl), ("cakld", KdKind::Cakld)] {
            let (mut sums, mut kd_sum) = (0.0, None);
            let (value, grad) = value_and_grad(&c, |s, t, tg| {
                let o = objective(s, Some(t), tg, &LossSection { ce_weight: w_ce, kd: kind, kd_weight: w_kd }, n);
                (sums, kd_sum) = (o.ce_sum, o.kd_sum);
                o.loss
            });
            let want = (w_ce * field("ce", None) + w_kd * field(name, None)) / n as f64;
            assert!((value - want).abs() < 1e-5 * want.abs(), "{path} {name}: {value} vs {want}");
            assert!((sums - field("ce", None)).abs() < 1e-4 * field("ce", None), "{path} {name}: CE sum {sums}");
            let kd_sum = kd_sum.expect("a teacher gives a KD sum");
            assert!((kd_sum - field(name, None)).abs() < 1e-4 * field(name, None).max(1.0), "{path} {name}: KD sum {kd_sum}");
            for (i, g) in grad.iter().enumerate() {
                let w = (w_ce * field("ce", Some(i)) + w_kd * field(name, Some(i))) / n as f64;
                assert!((*g as f64 - w).abs() < 1e-6, "{path} {name}: gradient {i}: {g} vs {w}");
            }
        }
        // Without a teacher: CE alone, no KD sum.
        let mut kd_sum = Some(0.0);
        let (value, grad) = value_and_grad(&c, |s, _, tg| {
            let o = objective(s, None, tg, &LossSection { ce_weight: w_ce, kd: KdKind::Cakld, kd_weight: w_kd }, n);
            kd_sum = o.kd_sum;
            o.loss
        });
        assert!(kd_sum.is_none());
        assert!((value - w_ce * field("ce", None) / n as f64).abs() < 1e-5, "{path}: CE-only objective {value}");
        for (i, g) in grad.iter().enumerate() {
            assert!((*g as f64 - w_ce * field("ce", Some(i)) / n as f64).abs() < 1e-6, "{path}: CE-only gradient {i}");
        }
    }
}

/// On SmolLM2-sized rows (49,152 columns, large logits) the fused kernel and the composed
/// objective agree in value and gradient.
#[test]
fn fused_objective_matches_composed_on_wide_rows() {
    let (b, t, v) = (2, 3, 49_152);
    let mut state = 12345u64;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32 * 30.0
    };
    let student: Vec<f32> = (0..b * t * v).map(|_| next()).collect();
    let teacher: Vec<f32> = (0..b * t * v).map(|_| next()).collect();
    let targets = vec![5, -1, 49_151, 0, 777, 30_000];
    let c = Case { shape: [b, t, v], student, teacher, targets, reference: Value::Null };
    let weights = LossSection { ce_weight: 1.0, kd: KdKind::Cakld, kd_weight: 1.0 };
    let run = |f: ObjectiveFn| value_and_grad(&c, |s, tl, tg| f(s, Some(tl), tg, &weights, 5).loss);
    let (fused, fused_grad) = run(loss::objective);
    let (composed, composed_grad) = run(loss::objective_composed);
    assert!((fused - composed).abs() < 1e-4 * composed.abs(), "{fused} vs {composed}");
    let worst = fused_grad.iter().zip(&composed_grad).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "gradients differ by up to {worst}");
    // A loss scaled after the objective (gradient accumulation) reaches the stored gradient as
    // an incoming gradient other than 1.
    let (_, scaled_grad) = value_and_grad(&c, |s, tl, tg| loss::objective(s, Some(tl), tg, &weights, 5).loss * 3.0);
    for (s, f) in scaled_grad.iter().zip(&fused_grad) {
        assert_eq!(*s, 3.0 * f);
    }
    // Logits that nothing else holds (as the head's product leaves them) are overwritten by
    // their gradient in place; above, the test's own tensor was copied first.
    let (unique, unique_grad) = value_and_grad(&c, |s, tl, tg| loss::objective(s * 1.0, Some(tl), tg, &weights, 5).loss);
    assert_eq!((unique, &unique_grad), (fused, &fused_grad));
}
