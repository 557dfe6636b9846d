//! Masked multi-head attention as one kernel on the CPU backend, forward and backward.
//!
//! `O = softmax(scale·Q·Kᵀ + bias)·V` per query head, with the additive 0 / −∞ mask that
//! [`crate::AttentionBatch`] builds. The composed expression multiplies every query with every
//! key (the whole `T × S` square, though a causal mask hides half of it), adds the mask as a
//! full-size tensor, and copies the heads between the `[B, T, heads·hd]` layout of the
//! projections and the `[B, heads, T, hd]` layout of the products, each step with its own
//! backward. Here each tile of [`TILE`] query rows multiplies only the keys between the first
//! and the last one any of its rows may see (causal rows: about half the square; packed rows:
//! their own document), adds the mask inside the softmax pass, writes its output straight into
//! the layout `o_proj` reads, and keeps its probabilities for the backward. Tiles run in
//! parallel, each tile's products on one thread ([`qat_quant::matmul::product`]).
//!
//! Backward, with `Z = scale·Q·Kᵀ + bias` and `P = softmax(Z)` row by row:
//! `∂V = Pᵀ·∂O`, `∂P = ∂O·Vᵀ`, `∂Z = P ∘ (∂P − rowsum(∂P ∘ P))`, `∂Q = scale·∂Z·K`,
//! `∂K = scale·∂Zᵀ·Q`; query heads that share a kv head (GQA) add their `∂K`, `∂V`.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{FloatDType, Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use qat_quant::fused::{FlexFloat, f32_values};
use qat_quant::matmul::product;
use qat_quant::{matmul_in, simd};
use rayon::prelude::*;

/// Query rows per tile: the unit of work and of key-range skipping.
const TILE: usize = 64;

/// One tile of query rows `r0..r1` of a batch row, the keys `k0..k1` its rows may see, and
/// where its `[r1 − r0, k1 − k0]` probabilities start within one head's block.
#[derive(Debug, Clone, Copy)]
struct Tile {
    r0: usize,
    r1: usize,
    k0: usize,
    k1: usize,
    off: usize,
}

impl Tile {
    fn rows(&self) -> usize {
        self.r1 - self.r0
    }
    fn keys(&self) -> usize {
        self.k1 - self.k0
    }
}

/// Shapes and the tiles of every batch row (the mask is shared by all heads).
#[derive(Debug, Clone)]
struct Plan {
    b: usize,
    nh: usize,
    nkv: usize,
    t: usize,
    s: usize,
    hd: usize,
    scale: f32,
    tiles: Vec<Vec<Tile>>,
    /// Probabilities of one head of batch row `b`.
    head_len: Vec<usize>,
    /// Where batch row `b`'s first head's probabilities start.
    base: Vec<usize>,
}

impl Plan {
    fn new(bias: &[f32], [b, nh, nkv, t, s, hd]: [usize; 6], scale: f32) -> Plan {
        let (mut tiles, mut head_len, mut base, mut total) = (Vec::with_capacity(b), Vec::with_capacity(b), Vec::with_capacity(b), 0);
        for row in 0..b {
            let mut off = 0;
            let mut row_tiles = Vec::with_capacity(t.div_ceil(TILE));
            for r0 in (0..t).step_by(TILE) {
                let r1 = (r0 + TILE).min(t);
                let (mut k0, mut k1) = (s, 0);
                for q in r0..r1 {
                    let keys = &bias[(row * t + q) * s..(row * t + q + 1) * s];
                    if let Some(first) = keys.iter().position(|&v| v != f32::NEG_INFINITY) {
                        let last = keys.iter().rposition(|&v| v != f32::NEG_INFINITY).expect("a visible key");
                        (k0, k1) = (k0.min(first), k1.max(last + 1));
                    }
                }
                let k0 = k0.min(k1);
                row_tiles.push(Tile { r0, r1, k0, k1, off });
                off += (r1 - r0) * (k1 - k0);
            }
            tiles.push(row_tiles);
            head_len.push(off);
            base.push(total);
            total += nh * off;
        }
        Plan { b, nh, nkv, t, s, hd, scale, tiles, head_len, base }
    }

    fn probabilities(&self) -> usize {
        self.base.last().map_or(0, |&base| base + self.nh * self.head_len[self.b - 1])
    }

    /// Start of head `h`'s `[S, hd]` keys (or values) in `[B, nkv, S, hd]`.
    fn kv_start(&self, b: usize, h: usize) -> usize {
        (b * self.nkv + h / (self.nh / self.nkv)) * self.s * self.hd
    }

    /// Start of head `h`'s `[T, hd]` queries in `[B, nh, T, hd]`.
    fn q_start(&self, b: usize, h: usize) -> usize {
        (b * self.nh + h) * self.t * self.hd
    }

    /// Start of query row `r` of head `h` in the `[B, T, nh·hd]` output.
    fn o_start(&self, b: usize, r: usize, h: usize) -> usize {
        ((b * self.t + r) * self.nh + h) * self.hd
    }
}

/// A pointer that tiles write through from several threads; each tile writes only its own
/// rows of its own head, so the writes never overlap.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not its field).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// One tile's forward: its scores into `p` (`[rows, keys]`), softmax in place, and its rows of
/// the output.
///
/// # Safety
/// `o` must address the whole `[B, T, nh·hd]` output; no other thread writes this tile's rows of
/// head `h`.
unsafe fn forward_tile(plan: &Plan, (q, k, v, bias): (&[f32], &[f32], &[f32], &[f32]), (b, h, tile): (usize, usize, Tile), p: &mut [f32], o: Shared) {
    let (hd, keys, rows) = (plan.hd, tile.keys(), tile.rows());
    let q_tile = q[plan.q_start(b, h) + tile.r0 * hd..].as_ptr();
    let k_range = k[plan.kv_start(b, h) + tile.k0 * hd..].as_ptr();
    let v_range = v[plan.kv_start(b, h) + tile.k0 * hd..].as_ptr();
    let nd = (plan.nh * hd) as isize;
    if keys == 0 {
        // No visible key in the tile (never built by `AttentionBatch`): output zeros.
        for r in tile.r0..tile.r1 {
            unsafe { std::slice::from_raw_parts_mut(o.at(plan.o_start(b, r, h)), hd) }.fill(0.0);
        }
        return;
    }
    unsafe { product([rows, keys, hd], (p.as_mut_ptr(), keys), false, (q_tile, hd as isize, 1), (k_range, 1, hd as isize), false) };
    simd::vectorized(|| {
        for (i, row) in p.chunks_exact_mut(keys).enumerate() {
            let mask = &bias[(b * plan.t + tile.r0 + i) * plan.s + tile.k0..][..keys];
            softmax_row(row, mask, plan.scale);
        }
    });
    let out = o.at(plan.o_start(b, tile.r0, h));
    unsafe { product([rows, hd, keys], (out, nd as usize), false, (p.as_ptr(), keys as isize, 1), (v_range, hd as isize, 1), false) };
}

/// `row ← softmax(scale·row + mask)`; a row whose keys are all masked becomes zeros.
#[inline(always)]
fn softmax_row(row: &mut [f32], mask: &[f32], scale: f32) {
    row.iter_mut().zip(mask).for_each(|(z, &m)| *z = *z * scale + m);
    let max = simd::max(row);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let inv = 1.0 / simd::exp_shifted_sum(row, max);
    row.iter_mut().for_each(|z| *z *= inv);
}

/// The forward pass over all tiles in parallel: the output `[B, T, nh·hd]` and, with `keep`,
/// every tile's probabilities (for the backward).
fn forward(plan: &Plan, qkvb: (&[f32], &[f32], &[f32], &[f32]), keep: bool) -> (Vec<f32>, Vec<f32>) {
    let mut o = vec![0.0f32; plan.b * plan.t * plan.nh * plan.hd];
    let mut kept = if keep { vec![0.0f32; plan.probabilities()] } else { Vec::new() };
    let (o_ptr, p_ptr) = (Shared(o.as_mut_ptr()), Shared(kept.as_mut_ptr()));
    let jobs: Vec<(usize, usize, Tile)> =
        (0..plan.b).flat_map(|b| (0..plan.nh).flat_map(move |h| plan.tiles[b].iter().map(move |&tile| (b, h, tile)))).collect();
    jobs.into_par_iter().for_each_init(Vec::new, |scratch: &mut Vec<f32>, (b, h, tile)| {
        let len = tile.rows() * tile.keys();
        let p = if keep {
            // Tiles own disjoint ranges of `kept`.
            unsafe { std::slice::from_raw_parts_mut(p_ptr.at(plan.base[b] + h * plan.head_len[b] + tile.off), len) }
        } else {
            scratch.resize(len, 0.0);
            &mut scratch[..]
        };
        unsafe { forward_tile(plan, qkvb, (b, h, tile), p, o_ptr) };
    });
    (o, kept)
}

/// The backward pass, one task per (batch row, query head): `(∂Q, ∂K, ∂V)` in the inputs'
/// layouts.
fn backward(plan: &Plan, (q, k, v): (&[f32], &[f32], &[f32]), p: &[f32], d_o: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (hd, s, nd) = (plan.hd, plan.s, (plan.nh * plan.hd) as isize);
    let mut dq = vec![0.0f32; q.len()];
    // ∂K and ∂V of every query head, summed over the heads of a kv group afterwards.
    let mut dk_heads = vec![0.0f32; plan.b * plan.nh * s * hd];
    let mut dv_heads = vec![0.0f32; plan.b * plan.nh * s * hd];
    dq.par_chunks_mut(plan.t * hd).zip(dk_heads.par_chunks_mut(s * hd).zip(dv_heads.par_chunks_mut(s * hd))).enumerate().for_each_init(
        Vec::new,
        |ds: &mut Vec<f32>, (bh, (dq, (dk, dv)))| {
            let (b, h) = (bh / plan.nh, bh % plan.nh);
            let (q_head, kv) = (&q[plan.q_start(b, h)..], plan.kv_start(b, h));
            for tile in &plan.tiles[b] {
                let (rows, keys) = (tile.rows(), tile.keys());
                if keys == 0 {
                    continue;
                }
                let p = &p[plan.base[b] + h * plan.head_len[b] + tile.off..][..rows * keys];
                let d_o_tile = d_o[plan.o_start(b, tile.r0, h)..].as_ptr();
                let (k_range, v_range) = (k[kv + tile.k0 * hd..].as_ptr(), v[kv + tile.k0 * hd..].as_ptr());
                ds.resize(rows * keys, 0.0);
                unsafe {
                    // ∂P = ∂O·Vᵀ
                    product([rows, keys, hd], (ds.as_mut_ptr(), keys), false, (d_o_tile, nd, 1), (v_range, 1, hd as isize), false);
                }
                for (d, p) in ds.chunks_exact_mut(keys).zip(p.chunks_exact(keys)) {
                    let dot: f32 = d.iter().zip(p).map(|(d, p)| d * p).sum();
                    d.iter_mut().zip(p).for_each(|(d, &p)| *d = p * (*d - dot) * plan.scale);
                }
                unsafe {
                    // ∂Q = scale·∂Z·K (the scale is in `ds`)
                    product([rows, hd, keys], (dq[tile.r0 * hd..].as_mut_ptr(), hd), false, (ds.as_ptr(), keys as isize, 1), (k_range, hd as isize, 1), false);
                    // ∂K += scale·∂Zᵀ·Q
                    let q_tile = q_head[tile.r0 * hd..].as_ptr();
                    product([keys, hd, rows], (dk[tile.k0 * hd..].as_mut_ptr(), hd), true, (ds.as_ptr(), 1, keys as isize), (q_tile, hd as isize, 1), false);
                    // ∂V += Pᵀ·∂O
                    product([keys, hd, rows], (dv[tile.k0 * hd..].as_mut_ptr(), hd), true, (p.as_ptr(), 1, keys as isize), (d_o_tile, nd, 1), false);
                }
            }
        },
    );
    let rep = plan.nh / plan.nkv;
    let group_sum = |heads: &[f32]| {
        let mut out = vec![0.0f32; plan.b * plan.nkv * s * hd];
        out.par_chunks_mut(s * hd).enumerate().for_each(|(bg, out)| {
            let (b, g) = (bg / plan.nkv, bg % plan.nkv);
            for h in g * rep..(g + 1) * rep {
                let head = &heads[(b * plan.nh + h) * s * hd..][..s * hd];
                out.iter_mut().zip(head).for_each(|(o, x)| *o += x);
            }
        });
        out
    };
    (dq, group_sum(&dk_heads), group_sum(&dv_heads))
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 3> for AttentionBackward {
    /// Q, K, V (contiguous), the plan and the probabilities of every tile.
    type State = (FlexFloat, FlexFloat, FlexFloat, Plan, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (q, k, v, plan, p) = ops.state;
        let d_o = grads.consume::<Flex>(&ops.node);
        let (dq, dk, dv) = backward(&plan, (&f32_values(&q), &f32_values(&k), &f32_values(&v)), &p, &f32_values(&d_o));
        let (qs, kvs) = ([plan.b, plan.nh, plan.t, plan.hd], [plan.b, plan.nkv, plan.s, plan.hd]);
        for (parent, (grad, shape)) in ops.parents.into_iter().zip([(dq, qs), (dk, kvs), (dv, kvs)]) {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, FlexFloat::from_data(TensorData::new(grad, shape)));
            }
        }
    }
}

/// `t` itself when its storage is already row-major from offset 0 (then [`f32_values`] borrows
/// it), else a contiguous copy: the backward reads Q, K and V again without copying them again.
fn contiguous(t: FlexFloat) -> FlexFloat {
    if t.is_contiguous() && t.layout().start_offset() == 0 { t } else { t.to_contiguous() }
}

/// `softmax(scale·q·kᵀ + bias)·v` with the heads merged, composed from tensor operations: every
/// device, and the reference of [`attention`]. Query heads that share a kv head are stacked
/// along the sequence axis (`[B, kv, rep·T, hd]`, transformers' `repeat_kv` order), so K and V
/// are never repeated; `compute` is the precision of the two products ([`matmul_in`]).
///
/// # Shapes
/// `q: [B, nh, T, hd]`, `k, v: [B, nkv, S, hd]`, `bias: [B, 1, T, S]` → `[B, T, nh·hd]`.
pub fn attention_composed(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: &Tensor<4>, scale: f64, compute: Option<FloatDType>) -> Tensor<3> {
    let [b, nh, t, hd] = q.dims();
    let [_, nkv, s, _] = k.dims();
    let rep = nh / nkv;
    // The scale multiplies the queries (hd values per row) rather than the scores (S).
    let q = q.reshape([b, nkv, rep * t, hd]) * scale;
    let scores = matmul_in(q, k.swap_dims(2, 3), compute);
    let scores = scores.reshape([b, nkv, rep, t, s]) + bias.clone().unsqueeze_dim::<5>(1);
    let probs = super::softmax_last(scores).reshape([b, nkv, rep * t, s]);
    matmul_in(probs, v, compute).reshape([b, nh, t, hd]).swap_dims(1, 2).reshape([b, t, nh * hd])
}

/// [`attention_composed`] in f32 as one tiled kernel on the CPU backend (plain or autodiff; the
/// mask carries no gradient); `None` on other devices.
pub fn attention(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, bias: &Tensor<4>, scale: f64) -> Option<Tensor<3>> {
    let [b, nh, t, hd] = q.dims();
    let [_, nkv, s, _] = k.dims();
    if k.dims() != [b, nkv, s, hd] || v.dims() != [b, nkv, s, hd] || bias.dims() != [b, 1, t, s] || nkv == 0 || !nh.is_multiple_of(nkv) {
        return None;
    }
    let dims = [b, nh, nkv, t, s, hd];
    let out_shape = [b, t, nh * hd];
    if let (Ok(q_ad), Ok(k_ad), Ok(v_ad), Ok(bias_ad)) = (
        q.clone().try_into_primitive::<Autodiff<Flex>>(),
        k.clone().try_into_primitive::<Autodiff<Flex>>(),
        v.clone().try_into_primitive::<Autodiff<Flex>>(),
        bias.clone().try_into_primitive::<Autodiff<Flex>>(),
    ) {
        let nodes = [q_ad.node(), k_ad.node(), v_ad.node()];
        let (q_p, k_p, v_p) = (contiguous(q_ad.into_primitive()), contiguous(k_ad.into_primitive()), contiguous(v_ad.into_primitive()));
        let bias_p = bias_ad.into_primitive();
        let bias_v = f32_values(&bias_p);
        let plan = Plan::new(&bias_v, dims, scale as f32);
        let prep = AttentionBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful();
        let keep = matches!(prep, OpsKind::Tracked(_));
        let (o, p) = forward(&plan, (&f32_values(&q_p), &f32_values(&k_p), &f32_values(&v_p), &bias_v), keep);
        let o = FlexFloat::from_data(TensorData::new(o, out_shape));
        let out = match prep {
            OpsKind::Tracked(prep) => prep.finish((q_p, k_p, v_p, plan, p), o),
            OpsKind::UnTracked(prep) => prep.finish(o),
        };
        return Some(Tensor::from_primitive::<Autodiff<Flex>>(out));
    }
    let (q_p, k_p, v_p, bias_p) = (
        q.clone().try_into_primitive::<Flex>().ok()?,
        k.clone().try_into_primitive::<Flex>().ok()?,
        v.clone().try_into_primitive::<Flex>().ok()?,
        bias.clone().try_into_primitive::<Flex>().ok()?,
    );
    let bias_v = f32_values(&bias_p);
    let plan = Plan::new(&bias_v, dims, scale as f32);
    let (o, _) = forward(&plan, (&f32_values(&q_p), &f32_values(&k_p), &f32_values(&v_p), &bias_v), false);
    Some(Tensor::from_primitive::<Flex>(FlexFloat::from_data(TensorData::new(o, out_shape))))
}
