//! Matrix products on the CPU backend through the `gemm` crate (the kernels Burn's CPU backend
//! uses), for the two places where Burn's composed products cost more than the product:
//!
//! - [`linear`]: `y = x·Wᵀ` with its own backward. Burn's `linear` takes `Wᵀ` as a transposed
//!   view, so its weight gradient `Xᵀ·∂Y` comes back transposed and is copied to `[out, in]` by
//!   the fake quantizer's backward (~3% of a QAT step); every product also zero-fills its
//!   output on one thread before the multi-threaded product overwrites it. Here `∂W = ∂Yᵀ·X`
//!   is written as `[out, in]` directly and outputs are not zero-filled.
//! - [`product`]: one single-threaded product on raw operands with any strides, for kernels
//!   that run many small products in parallel themselves (attention tiles).

use std::mem::MaybeUninit;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};

use crate::fused::{FlexFloat, f32_values};

/// A row-major-or-not operand: pointer, row stride, column stride (in elements).
pub type Operand = (*const f32, isize, isize);

/// `dst ← (dst if accumulate) + lhs·rhs` for an `m × k` and a `k × n` operand into an `m × n`
/// destination given by (pointer, row stride) with unit column stride; on every thread with
/// `parallel`, else on the calling one.
///
/// # Safety
/// Every pointer must address its whole operand with the given strides, and `dst` must not
/// overlap the operands. With `accumulate == false`, `dst` is only written (it may be
/// uninitialised).
pub unsafe fn product([m, n, k]: [usize; 3], dst: (*mut f32, usize), accumulate: bool, lhs: Operand, rhs: Operand, parallel: bool) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            1,
            dst.1 as isize,
            accumulate,
            lhs.0,
            lhs.2,
            lhs.1,
            rhs.0,
            rhs.2,
            rhs.1,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None },
        );
    }
}

/// Products of at least this many multiply-adds use every thread (Burn's CPU backend uses the
/// same threshold).
const PARALLEL_MACS: usize = 192 * 192 * 192;

/// An `m × n` product into a fresh row-major buffer, which the product only writes.
fn product_into_new(mnk: [usize; 3], lhs: Operand, rhs: Operand) -> Vec<f32> {
    let [m, n, _] = mnk;
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let spare: &mut [MaybeUninit<f32>] = &mut out.spare_capacity_mut()[..m * n];
    // SAFETY: `gemm` without accumulation writes all m·n elements and reads none of them; the
    // operands come from live slices of the sizes the callers checked.
    unsafe {
        product(mnk, (spare.as_mut_ptr().cast::<f32>(), n), false, lhs, rhs, mnk.iter().product::<usize>() >= PARALLEL_MACS);
        out.set_len(m * n);
    }
    out
}

/// `x·Wᵀ` for `x: [rows, in]`, `w: [out, in]` → `[rows, out]`.
fn forward(x: &[f32], w: &[f32], [rows, inp, out]: [usize; 3]) -> Vec<f32> {
    product_into_new([rows, out, inp], (x.as_ptr(), inp as isize, 1), (w.as_ptr(), 1, inp as isize))
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 2> for LinearBackward {
    /// The input `[rows, in]`, the weight `[out, in]`, and `[rows, in, out]`.
    type State = (FlexFloat, FlexFloat, [usize; 3]);

    /// `∂X = ∂Y·W`, `∂W = ∂Yᵀ·X`.
    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (x_t, w_t, [rows, inp, out]) = ops.state;
        let [x_node, w_node] = ops.parents;
        let dy_t = grads.consume::<Flex>(&ops.node);
        let x_shape = x_t.layout().shape().clone();
        let dy = f32_values(&dy_t);
        if let Some(node) = x_node {
            let w = f32_values(&w_t);
            let dx = product_into_new([rows, inp, out], (dy.as_ptr(), out as isize, 1), (w.as_ptr(), inp as isize, 1));
            grads.register::<Flex>(node.id, FlexFloat::from_data(TensorData::new(dx, x_shape)));
        }
        if let Some(node) = w_node {
            let x = f32_values(&x_t);
            let dw = product_into_new([out, inp, rows], (dy.as_ptr(), 1, out as isize), (x.as_ptr(), inp as isize, 1));
            grads.register::<Flex>(node.id, FlexFloat::from_data(TensorData::new(dw, [out, inp])));
        }
    }
}

/// `x·Wᵀ` (`burn::tensor::module::linear(x, w.transpose(), None)`) as one product with its own
/// backward on the CPU backend (plain or autodiff); `None` on other devices.
///
/// # Shapes
/// `x: [..., in]`, `w: [out, in]` → `[..., out]`.
pub fn linear<const D: usize>(x: &Tensor<D>, w: &Tensor<2>) -> Option<Tensor<D>> {
    let dims = x.dims();
    let [out, inp] = w.dims();
    if D < 2 || dims[D - 1] != inp {
        return None;
    }
    let rows = dims[..D - 1].iter().product::<usize>();
    let mut out_dims = dims;
    out_dims[D - 1] = out;
    let sizes = [rows, inp, out];
    if let (Ok(x_ad), Ok(w_ad)) = (x.clone().try_into_primitive::<Autodiff<Flex>>(), w.clone().try_into_primitive::<Autodiff<Flex>>()) {
        let nodes = [x_ad.node(), w_ad.node()];
        let (x_p, w_p) = (x_ad.into_primitive(), w_ad.into_primitive());
        let y = FlexFloat::from_data(TensorData::new(forward(&f32_values(&x_p), &f32_values(&w_p), sizes), out_dims));
        let y = match LinearBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x_p, w_p, sizes), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        return Some(Tensor::from_primitive::<Autodiff<Flex>>(y));
    }
    let (x_p, w_p) = (x.clone().try_into_primitive::<Flex>().ok()?, w.clone().try_into_primitive::<Flex>().ok()?);
    let y = forward(&f32_values(&x_p), &f32_values(&w_p), sizes);
    Some(Tensor::from_primitive::<Flex>(FlexFloat::from_data(TensorData::new(y, out_dims))))
}
