//! Softmax over the last dimension with its own backward on the CPU backend.
//!
//! Burn's autodiff composes softmax from max, subtract, exp, sum and divide — single-threaded
//! passes over the attention scores, each recorded with its own backward — while the CPU
//! backend has a fused, vectorised, multi-threaded softmax that only the no-grad path used.
//! This op runs that kernel forward and keeps only its output `p`; the backward is one
//! parallel pass per row: `∂x = p ∘ (g − Σ g·p)`.

use burn::backend::ops::ActivationOps;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind, unary};
use qat_quant::fused::{FlexFloat, f32_values};
use rayon::prelude::*;

#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Flex, 1> for SoftmaxBackward {
    /// The softmax output.
    type State = FlexFloat;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let p = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            let shape = p.layout().shape().clone();
            let row = *shape.last().expect("softmax of a tensor with dimensions");
            let (p, g) = (f32_values(&p), f32_values(&g));
            let mut dx = vec![0.0f32; p.len()];
            dx.par_chunks_mut(row).zip(p.par_chunks(row).zip(g.par_chunks(row))).for_each(|(dx, (p, g))| {
                let dot: f32 = p.iter().zip(g).map(|(p, g)| p * g).sum();
                for ((d, &p), &g) in dx.iter_mut().zip(p).zip(g) {
                    *d = p * (g - dot);
                }
            });
            FlexFloat::from_data(TensorData::new(dx, shape))
        });
    }
}

/// Whether `x` lives on the CPU backend without autodiff (where Burn's own fused kernels take
/// shapes the GPU backends' do not, e.g. attention with fewer kv heads than query heads).
pub fn on_flex<const D: usize>(x: &Tensor<D>) -> bool {
    x.clone().try_into_primitive::<Flex>().is_ok()
}

/// `softmax(x, D − 1)`: the fused op on the CPU backend's autodiff device, Burn's softmax
/// elsewhere.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let ad = match x.clone().try_into_primitive::<Autodiff<Flex>>() {
        Ok(ad) => ad,
        Err(_) => return burn::tensor::activation::softmax(x, D - 1),
    };
    let node = ad.node();
    let p = <Flex as ActivationOps<Flex>>::softmax(ad.into_primitive(), D - 1);
    let out = match SoftmaxBackward.prepare::<NoCheckpointing>([node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(p.clone(), p),
        OpsKind::UnTracked(prep) => prep.finish(p),
    };
    Tensor::from_primitive::<Autodiff<Flex>>(out)
}
