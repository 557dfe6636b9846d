//! The decoder: pre-norm Llama blocks (RMSNorm, GQA attention with rotate-half RoPE, SwiGLU
//! MLP), with the per-architecture differences as flags from [`ModelConfig`].
//!
//! Field names follow the checkpoint keys: a parameter's module path
//! (`layers.{i}.self_attn.q_proj.weight`) is its checkpoint name up to [`CausalLm::hf_name`].
//! [`CausalLm::build`] is the one place that lists the tensors; loading, the expected names and
//! saving all derive from it or from the module paths.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use burn::module::{Module, Param, ParamId};
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use qat_quant::{QLinear, QuantError, QuantSpec, full_precision, matmul_in};

use crate::config::{ModelConfig, QkNorm};
use crate::{Checkpoint, ModelError};

/// Added to attention scores of masked positions. Infinite, because `exp` of a large finite
/// negative number takes libm's underflow path (errno and all), which cost ~5% of a forward
/// pass; `exp(−∞) = 0` is immediate. Every query row keeps at least one visible key (its own
/// position, or for an empty padded row all of them), so no row is all −∞, which would be NaN.
const MASKED: f32 = f32::NEG_INFINITY;

/// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) · weight`, computed in f32.
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    #[module(skip)]
    eps: f64,
}

impl RmsNorm {
    fn new(weight: Tensor<1>, eps: f64) -> Self {
        RmsNorm { weight: Param::from_tensor(weight), eps }
    }

    /// # Shapes
    /// `[..., d]` → `[..., d]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        crate::fused::rms_norm(x, self.weight.val(), self.eps)
    }
}

/// Rotary position embedding in rotate-half (NEOX) form, as transformers implements it.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(cfg: &ModelConfig) -> Self {
        Rope { inv_freq: cfg.rope_inv_freq().into_iter().map(|f| f as f32).collect() }
    }

    /// `(cos, sin)` of shape `[B, 1, T, head_dim]` for integer positions `[B, T]`.
    pub fn tables(&self, positions: Tensor<2, Int>) -> (Tensor<4>, Tensor<4>) {
        let device = positions.device();
        let n = self.inv_freq.len();
        let inv = Tensor::<1>::from_data(TensorData::new(self.inv_freq.clone(), [n]), &device);
        let freqs = positions.float().unsqueeze_dim::<3>(2) * inv.reshape([1, 1, n]);
        let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).unsqueeze_dim::<4>(1);
        (emb.clone().cos(), emb.sin())
    }

    /// # Shapes
    /// `x: [B, heads, T, hd]`, tables `[B, 1, T, hd]`.
    pub fn apply(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
        crate::fused::rope(x, cos, sin)
    }
}

/// Positions and additive attention mask for one forward pass.
#[derive(Debug, Clone)]
pub struct AttentionBatch {
    /// `[B, T]` RoPE positions.
    pub positions: Tensor<2, Int>,
    /// `[B, 1, T, S]`: 0 where a query may attend to a key, [`MASKED`] elsewhere. `S` counts
    /// cached keys first.
    pub bias: Tensor<4>,
}

impl AttentionBatch {
    /// Causal attention over right-padded rows: row `b` has `lengths[b]` real tokens out of `t`,
    /// after `past` cached tokens shared by all rows. Padding keys are masked.
    pub fn causal(lengths: &[usize], t: usize, past: usize, device: &Device) -> Self {
        let b = lengths.len();
        let s = past + t;
        let mut bias = vec![MASKED; b * t * s];
        let mut pos = Vec::with_capacity(b * t);
        for (row, &len) in lengths.iter().enumerate() {
            for q in 0..t {
                pos.push((past + q) as i64);
                let keys = &mut bias[(row * t + q) * s..(row * t + q + 1) * s];
                let visible = (past + q + 1).min(past + len);
                if visible == 0 {
                    // An empty row (no cache, no tokens): padding attends uniformly.
                    keys.fill(0.0);
                }
                keys[..visible].fill(0.0);
            }
        }
        Self::from_parts(pos, bias, b, t, s, device)
    }

    /// Packed training rows: `segments[b][i]` is the document index of token `i`. Attention is
    /// causal within a document and never crosses one; positions restart at each document.
    pub fn packed(segments: &[Vec<u32>], device: &Device) -> Self {
        let b = segments.len();
        let t = segments.first().map_or(0, Vec::len);
        let mut bias = vec![MASKED; b * t * t];
        let mut pos = Vec::with_capacity(b * t);
        for (row, seg) in segments.iter().enumerate() {
            assert_eq!(seg.len(), t, "packed rows must have equal length");
            let mut start = 0;
            for q in 0..t {
                if q > 0 && seg[q] != seg[q - 1] {
                    start = q;
                }
                pos.push((q - start) as i64);
                for k in start..=q {
                    bias[(row * t + q) * t + k] = 0.0;
                }
            }
        }
        Self::from_parts(pos, bias, b, t, t, device)
    }

    /// Rows that each hold one prefix followed by several branches, every branch continuing
    /// the prefix alone: `rows[b] = (prefix, branches)` with `prefix` tokens first, then each
    /// branch's tokens, right-padded to `t`. A prefix token attends causally within the prefix;
    /// a token of branch `i` attends to the whole prefix and causally within branch `i`, and
    /// its position counts on from the prefix (`prefix + j`) — so every branch sees exactly
    /// what it would see as the sequence `prefix + branch` alone, while the prefix is computed
    /// once. Padding queries attend to the prefix.
    pub fn shared_prefix(rows: &[(usize, Vec<usize>)], t: usize, device: &Device) -> Self {
        let b = rows.len();
        let mut bias = vec![MASKED; b * t * t];
        let mut pos = Vec::with_capacity(b * t);
        for (row, (prefix, branches)) in rows.iter().enumerate() {
            let mut visible = |q: usize, keys: std::ops::Range<usize>| bias[(row * t + q) * t..][keys].fill(0.0);
            for q in 0..*prefix {
                pos.push(q as i64);
                visible(q, 0..q + 1);
            }
            let mut start = *prefix;
            for &len in branches {
                for j in 0..len {
                    pos.push((prefix + j) as i64);
                    visible(start + j, 0..*prefix);
                    visible(start + j, start..start + j + 1);
                }
                start += len;
            }
            assert!(start <= t, "row {row} holds {start} tokens, more than t = {t}");
            for q in start..t {
                pos.push(0);
                visible(q, 0..(*prefix).max(1));
            }
        }
        Self::from_parts(pos, bias, b, t, t, device)
    }

    fn from_parts(pos: Vec<i64>, bias: Vec<f32>, b: usize, t: usize, s: usize, device: &Device) -> Self {
        AttentionBatch {
            positions: Tensor::from_data(TensorData::new(pos, [b, t]), device),
            bias: Tensor::from_data(TensorData::new(bias, [b, 1, t, s]), device),
        }
    }
}

/// Keys and values of earlier tokens, per layer: `[B, kv_heads, S, hd]`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        KvCache { layers: vec![None; n_layers] }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |(k, _)| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: QLinear,
    pub k_proj: QLinear,
    pub v_proj: QLinear,
    pub o_proj: QLinear,
    /// Qwen3 `q_norm` / Hunyuan `query_layernorm`.
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    #[module(skip)]
    shape: (usize, usize, usize),
    #[module(skip)]
    norm_after_rope: bool,
    /// Precision of the two attention products ([`qat_quant::matmul_in`]).
    #[module(skip)]
    compute: Option<FloatDType>,
}

impl Attention {
    /// # Shapes
    /// `x: [B, T, hidden]` → `[B, T, hidden]`; `bias: [B, 1, T, S]`.
    fn forward(&self, x: Tensor<3>, rope: &(Tensor<4>, Tensor<4>), bias: &Tensor<4>, cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>) -> Tensor<3> {
        self.o_proj.forward(self.context(x, rope, bias, cache))
    }

    /// The attention heads' output before `o_proj` (its input).
    ///
    /// # Shapes
    /// `x: [B, T, hidden]` → `[B, T, heads·head_dim]`.
    pub(crate) fn context(
        &self,
        x: Tensor<3>,
        rope: &(Tensor<4>, Tensor<4>),
        bias: &Tensor<4>,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (nh, nkv, hd) = self.shape;
        let heads = |p: &QLinear, n: usize| p.forward(x.clone()).reshape([b, t, n, hd]).swap_dims(1, 2);
        let (mut q, mut k, v) = (heads(&self.q_proj, nh), heads(&self.k_proj, nkv), heads(&self.v_proj, nkv));
        let norm = |q: Tensor<4>, k: Tensor<4>| match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => (qn.forward(q), kn.forward(k)),
            _ => (q, k),
        };
        if !self.norm_after_rope {
            (q, k) = norm(q, k);
        }
        q = Rope::apply(q, &rope.0, &rope.1);
        k = Rope::apply(k, &rope.0, &rope.1);
        if self.norm_after_rope {
            (q, k) = norm(q, k);
        }
        let (k, v) = match cache {
            Some(slot) => {
                let kv = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
                    None => (k, v),
                };
                *slot = Some(kv.clone());
                kv
            }
            None => (k, v),
        };
        let scale = 1.0 / (hd as f64).sqrt();
        if full_precision(self.compute) {
            // The CPU backend (with or without gradients): one tiled kernel that skips masked
            // key ranges and keeps no score tensor but its probabilities.
            if let Some(out) = crate::fused::attention(&q, &k, &v, bias, scale) {
                return out;
            }
            if !q.device().is_autodiff() {
                // No gradient to keep on a GPU (evaluation, the distillation teacher,
                // generation): the backend's fused attention, whose products need one kv head
                // per query head.
                let rep = nh / nkv;
                let (k, v) = (repeat_kv_heads(k, rep), repeat_kv_heads(v, rep));
                let options = burn::tensor::ops::AttentionModuleOptions { scale: Some(scale), softcap: None, is_causal: false };
                let out = burn::tensor::module::attention(q, k, v, None, Some(bias.clone()), options);
                return out.swap_dims(1, 2).reshape([b, t, nh * hd]);
            }
        }
        crate::fused::attention_composed(q, k, v, bias, scale, self.compute)
    }
}

/// Each kv head repeated for the `rep` query heads that share it, in transformers' `repeat_kv`
/// order: query head `h` reads kv head `h / rep`.
///
/// # Shapes
/// `[B, kv, S, hd]` → `[B, kv·rep, S, hd]`.
pub fn repeat_kv_heads(x: Tensor<4>, rep: usize) -> Tensor<4> {
    if rep == 1 {
        return x;
    }
    let [b, kv, s, hd] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, kv, rep, s, hd]).reshape([b, kv * rep, s, hd])
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: QLinear,
    pub up_proj: QLinear,
    pub down_proj: QLinear,
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.down_proj.forward(self.hidden(x))
    }

    /// `silu(gate(x)) · up(x)`, the input of `down_proj`.
    pub(crate) fn hidden(&self, x: Tensor<3>) -> Tensor<3> {
        crate::fused::swiglu(self.gate_proj.forward(x.clone()), self.up_proj.forward(x))
    }
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

impl DecoderLayer {
    /// The block's linear layers by module path within the block, in checkpoint order.
    pub fn linears(&self) -> [(&'static str, &QLinear); 7] {
        let (a, m) = (&self.self_attn, &self.mlp);
        let layers = [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, &m.gate_proj, &m.up_proj, &m.down_proj];
        std::array::from_fn(|i| (Self::LINEARS[i], layers[i]))
    }

    /// [`Self::linears`], mutable.
    fn linears_mut(&mut self) -> [(&'static str, &mut QLinear); 7] {
        let (a, m) = (&mut self.self_attn, &mut self.mlp);
        let layers = [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj, &mut m.gate_proj, &mut m.up_proj, &mut m.down_proj];
        let mut names = Self::LINEARS.into_iter();
        layers.map(|l| (names.next().expect("seven names"), l))
    }

    /// Module paths of [`Self::linears`] (the field names).
    const LINEARS: [&'static str; 7] =
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];

    /// The block's learnable quantizer scales by parameter id ([`QLinear::scale_param`]).
    pub fn scale_params(&self) -> HashMap<ParamId, QuantSpec> {
        self.linears().into_iter().filter_map(|(_, l)| l.scale_param()).collect()
    }

    /// `x + attn(norm(x))`, then `+ mlp(norm(·))`.
    ///
    /// # Shapes
    /// `x: [B, T, hidden]` → `[B, T, hidden]`; `rope`: [`Rope::tables`]; `bias: [B, 1, T, S]`.
    pub fn forward(&self, x: Tensor<3>, rope: &(Tensor<4>, Tensor<4>), bias: &Tensor<4>, cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(self.input_layernorm.forward(x), rope, bias, cache);
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}

/// A decoder-only causal language model.
#[derive(Module, Debug)]
pub struct CausalLm {
    /// Token embeddings `[vocab, hidden]`, a linear layer so that a policy rule
    /// (`match = "embed_tokens"`) can quantize them; with tied embeddings it is also the output
    /// head (`h·Wᵀ`).
    pub embed_tokens: QLinear,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// `None` when the embeddings are tied.
    pub lm_head: Option<QLinear>,
    #[module(skip)]
    pub config: ModelConfig,
    #[module(skip)]
    rope: Rope,
    /// Precision of every matrix product (`None`: f32).
    #[module(skip)]
    compute: Option<FloatDType>,
}

impl CausalLm {
    /// The checkpoint name of the parameter at module path `path` (`layers.3.self_attn.q_proj.weight`):
    /// `model.` in front, except for `lm_head`, and Hunyuan's names for the q/k norms. Module
    /// paths are the field names of these structs; this is the only place the two differ, and
    /// both loading ([`Self::build`]) and saving ([`Self::hf_tensors`]) go through it.
    pub fn hf_name(cfg: &ModelConfig, path: &str) -> String {
        if path.starts_with("lm_head.") {
            return path.to_string();
        }
        // Hunyuan, whose q/k norms follow RoPE, calls them `query_layernorm` / `key_layernorm`.
        match cfg.qk_norm {
            QkNorm::AfterRope => format!(
                "model.{}",
                path.replace(".self_attn.q_norm.", ".self_attn.query_layernorm.").replace(".self_attn.k_norm.", ".self_attn.key_layernorm.")
            ),
            _ => format!("model.{path}"),
        }
    }

    /// Builds the model for `cfg`, asking `src` for every tensor by module path with the shape
    /// the architecture gives it, in checkpoint order. The one place that lists a model's
    /// tensors: [`Self::hf_tensor_names`] records what it asks for, and
    /// [`Self::from_checkpoint`] answers from the checkpoint.
    fn build(cfg: &ModelConfig, src: &mut impl TensorSource) -> Self {
        let (h, hd, eps) = (cfg.hidden_size, cfg.head_dim, cfg.rms_norm_eps);
        let (q, kv, ff) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd, cfg.intermediate_size);
        let embed_tokens = linear(src, "embed_tokens", [cfg.vocab_size, h], false);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("layers.{i}");
            let input_layernorm = norm(src, &format!("{p}.input_layernorm"), h, eps);
            let q_proj = linear(src, &format!("{p}.self_attn.q_proj"), [q, h], cfg.qkv_bias);
            let k_proj = linear(src, &format!("{p}.self_attn.k_proj"), [kv, h], cfg.qkv_bias);
            let v_proj = linear(src, &format!("{p}.self_attn.v_proj"), [kv, h], cfg.qkv_bias);
            let o_proj = linear(src, &format!("{p}.self_attn.o_proj"), [h, q], cfg.o_bias);
            let qk_norm = cfg.qk_norm != QkNorm::None;
            let q_norm = qk_norm.then(|| norm(src, &format!("{p}.self_attn.q_norm"), hd, eps));
            let k_norm = qk_norm.then(|| norm(src, &format!("{p}.self_attn.k_norm"), hd, eps));
            let post_attention_layernorm = norm(src, &format!("{p}.post_attention_layernorm"), h, eps);
            let mlp = Mlp {
                gate_proj: linear(src, &format!("{p}.mlp.gate_proj"), [ff, h], false),
                up_proj: linear(src, &format!("{p}.mlp.up_proj"), [ff, h], false),
                down_proj: linear(src, &format!("{p}.mlp.down_proj"), [h, ff], false),
            };
            let self_attn = Attention {
                q_proj,
                k_proj,
                v_proj,
                o_proj,
                q_norm,
                k_norm,
                shape: (cfg.num_attention_heads, cfg.num_key_value_heads, hd),
                norm_after_rope: cfg.qk_norm == QkNorm::AfterRope,
                compute: None,
            };
            layers.push(DecoderLayer { input_layernorm, self_attn, post_attention_layernorm, mlp });
        }
        let final_norm = norm(src, "norm", h, eps);
        let lm_head = (!cfg.tie_word_embeddings).then(|| linear(src, "lm_head", [cfg.vocab_size, h], false));
        CausalLm { embed_tokens, layers, norm: final_norm, lm_head, config: cfg.clone(), rope: Rope::new(cfg), compute: None }
    }

    /// Every checkpoint tensor of this architecture with its shape, in checkpoint order (what
    /// [`Self::build`] asks for; no tied `lm_head`).
    pub fn hf_tensor_names(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
        let mut names = Names { cfg, names: Vec::new() };
        Self::build(cfg, &mut names);
        names.names
    }

    /// Every tensor of the checkpoint by name, as f32, checked against the architecture
    /// ([`Checkpoint::read_all`]'s one error listing every problem).
    pub fn checkpoint_tensors(ckpt: &Checkpoint) -> Result<BTreeMap<String, Vec<f32>>, ModelError> {
        let cfg = &ckpt.config;
        let mut expected = Self::hf_tensor_names(cfg);
        // Tied checkpoints have no lm_head; some untied-by-default configs still ship one equal
        // to the embeddings, which we then accept and ignore.
        let mut optional = BTreeSet::new();
        if cfg.tie_word_embeddings {
            expected.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, cfg.hidden_size]));
            optional.insert("lm_head.weight".to_string());
        }
        ckpt.read_all(&expected, &optional)
    }

    /// Loads the model from a checkpoint onto `device` (f32).
    pub fn from_checkpoint(ckpt: &Checkpoint, device: &Device) -> Result<Self, ModelError> {
        let cfg = &ckpt.config;
        let mut tensors = Self::checkpoint_tensors(ckpt)?;
        let model = Self::build(cfg, &mut Loaded { cfg, tensors: &mut tensors, device });
        // Parameters are created requiring gradients, which on a plain device would still make
        // every forward record an autodiff graph that nothing frees: keep plain devices plain.
        Ok(if device.is_autodiff() { model } else { model.valid() })
    }

    /// Token embeddings, the input of the first block.
    ///
    /// # Shapes
    /// `tokens: [B, T]` → `[B, T, hidden]`.
    pub fn embed(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        burn::tensor::module::embedding(self.embed_tokens.effective_weight(), tokens)
    }

    /// RoPE `(cos, sin)` tables for `positions: [B, T]`, as every block takes them.
    pub fn rope_tables(&self, positions: Tensor<2, Int>) -> (Tensor<4>, Tensor<4>) {
        self.rope.tables(positions)
    }

    /// Final hidden states after the last norm.
    ///
    /// # Shapes
    /// `tokens: [B, T]` → `[B, T, hidden]`.
    pub fn forward_hidden(&self, tokens: Tensor<2, Int>, batch: &AttentionBatch, cache: Option<&mut KvCache>) -> Tensor<3> {
        self.hidden_from(self.embed_tokens.effective_weight(), tokens, batch, cache)
    }

    /// [`Self::forward_hidden`] with the (fake-quantized) embedding matrix computed by the
    /// caller, so that a tied head can reuse it.
    fn hidden_from(&self, embedding: Tensor<2>, tokens: Tensor<2, Int>, batch: &AttentionBatch, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        let mut x = burn::tensor::module::embedding(embedding, tokens);
        let rope = self.rope_tables(batch.positions.clone());
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(x, &rope, &batch.bias, slot);
        }
        self.norm.forward(x)
    }

    /// Next-token logits.
    ///
    /// # Shapes
    /// `tokens: [B, T]` → `[B, T, vocab]`.
    pub fn forward(&self, tokens: Tensor<2, Int>, batch: &AttentionBatch, cache: Option<&mut KvCache>) -> Tensor<3> {
        let embedding = self.embed_tokens.effective_weight();
        let h = self.hidden_from(embedding.clone(), tokens, batch, cache);
        self.head_from(Some(embedding), h)
    }

    /// Next-token logits of hidden states ([`Self::forward_hidden`]'s output, or a selection
    /// of its positions): scorers that need a few positions' logits skip the head's product
    /// and the softmax over the vocabulary everywhere else.
    ///
    /// # Shapes
    /// `hidden: [B, N, hidden]` → `[B, N, vocab]`.
    pub fn head(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.head_from(None, hidden)
    }

    /// The output head: its own matrix, or the tied (fake-quantized) embedding — `embedding`
    /// when the caller has it already.
    fn head_from(&self, embedding: Option<Tensor<2>>, h: Tensor<3>) -> Tensor<3> {
        match &self.lm_head {
            Some(head) => head.forward(h),
            None => {
                let e = embedding.unwrap_or_else(|| self.embed_tokens.effective_weight());
                // `h·Eᵀ` as one product on the CPU backend: Burn's batched product would
                // broadcast `Eᵀ` over the batch and reduce a `[B, hidden, vocab]` gradient.
                if full_precision(self.compute)
                    && let Some(logits) = qat_quant::matmul::linear(&h, &e)
                {
                    return logits;
                }
                matmul_in(h, e.transpose().unsqueeze(), self.compute)
            }
        }
    }

    /// Computes every matrix product in `dtype` (bf16 or f16 autocast; `None` or f32: full
    /// precision). Parameters, gradients and everything between the products stay f32.
    pub fn with_compute_dtype(mut self, dtype: Option<FloatDType>) -> Self {
        self.compute = dtype;
        for l in &mut self.layers {
            l.self_attn.compute = dtype;
        }
        self.map_linears(|_, mut l| {
            l.compute = dtype;
            l
        })
    }

    /// Every linear layer with its module path (`layers.3.self_attn.q_proj`, `lm_head`), and the
    /// token embeddings (`embed_tokens`).
    pub fn linears(&self) -> Vec<(String, &QLinear)> {
        let mut v = vec![("embed_tokens".to_string(), &self.embed_tokens)];
        for (i, l) in self.layers.iter().enumerate() {
            v.extend(l.linears().into_iter().map(|(n, p)| (format!("layers.{i}.{n}"), p)));
        }
        if let Some(h) = &self.lm_head {
            v.push(("lm_head".to_string(), h));
        }
        v
    }

    /// The learnable quantizer scales by parameter id ([`QLinear::scale_param`]): the optimizer's
    /// scale group, what `train_scales = false` freezes, and the specs that keep them on
    /// export's grid.
    pub fn scale_params(&self) -> HashMap<ParamId, QuantSpec> {
        self.linears().into_iter().filter_map(|(_, l)| l.scale_param()).collect()
    }

    /// Rebuilds the model with `f` applied to every linear layer, in [`Self::linears`] order.
    pub fn map_linears(mut self, mut f: impl FnMut(&str, QLinear) -> QLinear) -> Self {
        replace_with(&mut self.embed_tokens, |q| f("embed_tokens", q));
        for (i, l) in self.layers.iter_mut().enumerate() {
            for (n, p) in l.linears_mut() {
                replace_with(p, |q| f(&format!("layers.{i}.{n}"), q));
            }
        }
        self.lm_head = self.lm_head.map(|h| f("lm_head", h));
        self
    }

    /// What `policy` resolves to for this model's linear layers: the scheme of each, and the bits
    /// per weight.
    pub fn policy_table(&self, policy: &qat_quant::Policy) -> Result<qat_quant::PolicyTable, QuantError> {
        let modules: Vec<(String, [usize; 2])> = self.linears().into_iter().map(|(n, l)| (n, l.dims())).collect();
        policy.resolve(&modules, self.config.n_params())
    }

    /// QAT's first step (torchao's "prepare"): attaches fake quantizers as `policy` says (scales
    /// initialised from the weights) and returns the resolved per-module table.
    pub fn prepare_qat(self, policy: &qat_quant::Policy) -> Result<(Self, qat_quant::PolicyTable), QuantError> {
        let table = self.policy_table(policy)?;
        let mut specs = table.rows.iter().map(|r| r.2);
        let model = self.map_linears(|_, l| match specs.next().flatten() {
            Some(spec) => l.quantized(spec, policy.act_int8),
            None => l,
        });
        Ok((model, table))
    }

    /// Moves every quantizer scale onto the grid that export stores exactly in `dtype`
    /// ([`qat_quant::exact`]): once at export, or at the start of a run that keeps its scales
    /// there (`[quant] round_scales`).
    pub fn round_scales(self, dtype: qat_quant::HfDtype) -> Result<(Self, qat_quant::ScaleChange), QuantError> {
        let mut change = qat_quant::ScaleChange::default();
        let mut error = None;
        let model = self.map_linears(|path, mut l| {
            match l.round_scale(dtype) {
                Ok(c) => change.merge(&c),
                Err(e) => {
                    error.get_or_insert(e.in_tensor(path));
                }
            }
            l
        });
        match error {
            Some(e) => Err(e),
            None => Ok((model, change)),
        }
    }

    /// QAT's last step (torchao's "convert"): replaces every fake-quantized weight by its
    /// quantized value and drops the quantizers: the same outputs, without recomputing the
    /// quantization on every forward (evaluation, saving).
    pub fn convert_qat(self) -> Self {
        let plain = !self.embed_tokens.weight.val().device().is_autodiff();
        let model = self.map_linears(|_, l| match l.quant {
            Some(_) => {
                // A fresh leaf tensor holding the values (the computed one is not a parameter).
                let w = l.effective_weight();
                let device = w.device();
                let mut plain = QLinear::new(Tensor::from_data(w.into_data(), &device), l.bias.as_ref().map(|b| b.val()));
                plain.compute = l.compute;
                plain
            }
            None => l,
        });
        // New parameters track gradients; on a plain device that would record graphs.
        if plain { model.valid() } else { model }
    }

    /// A fresh cache for incremental decoding.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }
}

/// Moves a value out of `slot`, transforms it, and puts the result back.
fn replace_with(slot: &mut QLinear, f: impl FnOnce(QLinear) -> QLinear) {
    let placeholder = QLinear { weight: slot.weight.clone(), bias: None, quant: None, compute: None };
    let old = std::mem::replace(slot, placeholder);
    *slot = f(old);
}

/// What [`CausalLm::build`] asks for a tensor: by module path, with its shape.
trait TensorSource {
    fn tensor<const D: usize>(&mut self, path: &str, shape: [usize; D]) -> Tensor<D>;
}

/// The linear layer at module path `path` (`weight: [out, in]`, `bias: [out]`).
fn linear(src: &mut impl TensorSource, path: &str, [out, inp]: [usize; 2], bias: bool) -> QLinear {
    let weight = src.tensor(&format!("{path}.weight"), [out, inp]);
    QLinear::new(weight, bias.then(|| src.tensor(&format!("{path}.bias"), [out])))
}

/// The RMSNorm at module path `path` (`weight: [dim]`).
fn norm(src: &mut impl TensorSource, path: &str, dim: usize, eps: f64) -> RmsNorm {
    RmsNorm::new(src.tensor(&format!("{path}.weight"), [dim]), eps)
}

/// Records the checkpoint names and shapes (and answers with empty tensors).
struct Names<'a> {
    cfg: &'a ModelConfig,
    names: Vec<(String, Vec<usize>)>,
}

impl TensorSource for Names<'_> {
    fn tensor<const D: usize>(&mut self, path: &str, shape: [usize; D]) -> Tensor<D> {
        self.names.push((CausalLm::hf_name(self.cfg, path), shape.to_vec()));
        Tensor::empty([0; D], &Device::flex())
    }
}

/// Moves the tensors [`Checkpoint::read_all`] checked (present, shaped as asked) onto the device.
struct Loaded<'a> {
    cfg: &'a ModelConfig,
    tensors: &'a mut BTreeMap<String, Vec<f32>>,
    device: &'a Device,
}

impl TensorSource for Loaded<'_> {
    fn tensor<const D: usize>(&mut self, path: &str, shape: [usize; D]) -> Tensor<D> {
        let name = CausalLm::hf_name(self.cfg, path);
        let data = self.tensors.remove(&name).unwrap_or_else(|| panic!("`{name}` was checked present by read_all"));
        Tensor::from_data(TensorData::new(data, shape.to_vec()), self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row: a 2-token prefix, a 2-token branch, an empty branch, one padding slot. Each
    /// branch token sees the prefix and its own branch up to itself, with positions counting on
    /// from the prefix; padding sees the prefix.
    #[test]
    fn shared_prefix_rows_let_each_branch_see_the_prefix_and_itself() {
        let device = Device::flex();
        let a = AttentionBatch::shared_prefix(&[(2, vec![2, 0])], 5, &device);
        let pos: Vec<i64> = a.positions.into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
        assert_eq!(pos, [0, 1, 2, 3, 0]);
        let bias: Vec<f32> = a.bias.into_data().try_to_vec::<f32>().unwrap();
        let seen: Vec<String> = bias.chunks(5).map(|keys| keys.iter().map(|&k| if k == 0.0 { 'x' } else { '.' }).collect()).collect();
        assert_eq!(seen, ["x....", "xx...", "xxx..", "xxxx.", "xx..."]);
        // Two branches of one token each: the second does not see the first.
        let a = AttentionBatch::shared_prefix(&[(1, vec![1, 1])], 3, &device);
        let bias: Vec<f32> = a.bias.into_data().try_to_vec::<f32>().unwrap();
        let seen: Vec<String> = bias.chunks(3).map(|keys| keys.iter().map(|&k| if k == 0.0 { 'x' } else { '.' }).collect()).collect();
        assert_eq!(seen, ["x..", "xx.", "x.x"]);
        assert_eq!(a.positions.into_data().convert::<i64>().try_to_vec::<i64>().unwrap(), [0, 1, 1]);
    }
}
