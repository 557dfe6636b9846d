//! Post-training quantization from calibration data: GPTQ ([`qat_quant::gptq`]) applied to the
//! decoder one block at a time, as the reference implementation does for Llama models.
//!
//! The calibration inputs of block `i` are the calibration tokens passed through the blocks
//! before it *already quantized*, so each block compensates the error of the ones before it.
//! Inside a block the four input sites are taken in forward order ("true sequential"):
//! `q/k/v` see `norm₁(x)`; `o_proj` sees the attention context computed with the quantized
//! `q/k/v`; `gate/up` see `norm₂(x + attn(x))` with the quantized `o_proj`; `down_proj` sees
//! `silu(gate)·up` with the quantized `gate/up`. Projections that share an input share its
//! Hessian. Linears without a fake quantizer are left as they are.
//!
//! With [`GptqOptions::asymmetric`] the full-precision model runs beside the quantized one and
//! its inputs at the same sites enter every Hessian, so that each linear aims at the
//! full-precision output ([`qat_quant::gptq`]'s module doc).

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor};
use qat_quant::{GptqOptions, Hessian, HfDtype, QLinear, QuantError, gptq};

use crate::transformer::{Attention, AttentionBatch, CausalLm, DecoderLayer, Mlp, RmsNorm};

/// One batch of calibration rows: token ids `[B, T]` and their attention layout.
pub struct CalibrationBatch {
    pub tokens: Tensor<2, Int>,
    pub attention: AttentionBatch,
}

/// GPTQ's error estimate for one module ([`qat_quant::GptqResult::loss`]) and the rows whose
/// scales were refitted ([`qat_quant::GptqResult::refit_rows`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleLoss {
    pub module: String,
    pub loss: f64,
    pub refit_rows: usize,
}

/// `Σ xᵀx` of the rows of every `[B, T, d]` input; with the full-precision model's inputs at
/// the same site (`reference`), also their shift ([`Hessian::add_with_reference`]).
fn hessian(inputs: &[Tensor<3>], reference: Option<&[Tensor<3>]>) -> Hessian {
    let d = inputs[0].dims()[2];
    let rows = |x: &Tensor<3>| {
        let [b, t, _] = x.dims();
        x.clone().reshape([b * t, d])
    };
    let mut h = Hessian::new(d);
    match reference {
        Some(fp) => inputs.iter().zip(fp).for_each(|(x, r)| h.add_with_reference(rows(x), rows(r))),
        None => inputs.iter().for_each(|x| h.add(rows(x))),
    }
    h
}

/// Replaces a quantized linear's weight and scales by their GPTQ values.
fn quantize_linear(
    lin: &mut QLinear,
    h: &Hessian,
    name: String,
    opts: &GptqOptions,
    round: Option<HfDtype>,
    report: &mut Vec<ModuleLoss>,
) -> Result<(), QuantError> {
    let Some(q) = lin.quant.as_mut() else { return Ok(()) };
    let r = gptq(lin.weight.val(), h, &q.spec, opts, round).map_err(|e| e.in_tensor(&name))?;
    lin.weight = Param::from_tensor(r.weight);
    q.scale = Some(Param::from_tensor(r.alpha));
    report.push(ModuleLoss { module: name, loss: r.loss, refit_rows: r.refit_rows });
    Ok(())
}

// The steps of a decoder block's forward pass over every calibration batch, shared by the
// quantized stream (which quantizes between them) and the full-precision one.

fn norms(norm: &RmsNorm, xs: &[Tensor<3>]) -> Vec<Tensor<3>> {
    xs.iter().map(|x| norm.forward(x.clone())).collect()
}

fn contexts(attn: &Attention, ins: Vec<Tensor<3>>, ropes: &[(Tensor<4>, Tensor<4>)], batches: &[CalibrationBatch]) -> Vec<Tensor<3>> {
    ins.into_iter().zip(ropes).zip(batches).map(|((x, rope), b)| attn.context(x, rope, &b.attention.bias, None)).collect()
}

/// `x + proj(input)` per batch.
fn residuals(xs: Vec<Tensor<3>>, proj: &QLinear, inputs: &[Tensor<3>]) -> Vec<Tensor<3>> {
    xs.into_iter().zip(inputs).map(|(x, i)| x + proj.forward(i.clone())).collect()
}

fn hiddens(mlp: &Mlp, ins: Vec<Tensor<3>>) -> Vec<Tensor<3>> {
    ins.into_iter().map(|x| mlp.hidden(x)).collect()
}

/// The full-precision model's inputs at a block's four sites, and the block's output.
struct Sites {
    attn_in: Vec<Tensor<3>>,
    context: Vec<Tensor<3>>,
    mlp_in: Vec<Tensor<3>>,
    hidden: Vec<Tensor<3>>,
    out: Vec<Tensor<3>>,
}

impl Sites {
    fn of(layer: &DecoderLayer, xs: Vec<Tensor<3>>, ropes: &[(Tensor<4>, Tensor<4>)], batches: &[CalibrationBatch]) -> Self {
        let attn_in = norms(&layer.input_layernorm, &xs);
        let context = contexts(&layer.self_attn, attn_in.clone(), ropes, batches);
        let mids = residuals(xs, &layer.self_attn.o_proj, &context);
        let mlp_in = norms(&layer.post_attention_layernorm, &mids);
        let hidden = hiddens(&layer.mlp, mlp_in.clone());
        let out = residuals(mids, &layer.mlp.down_proj, &hidden);
        Sites { attn_in, context, mlp_in, hidden, out }
    }
}

/// GPTQ over every fake-quantized linear of `model` (on a device without autodiff), block by
/// block. `on_block(i, n)` is called after each block; an error from it stops the calibration
/// there and is returned (a run stopped by a signal need not finish the stage first). `round`:
/// keep scales on the grid that export in that dtype stores exactly. `tied_head`: with tied
/// embeddings, quantize them too as the output head, from the final hidden states (they are
/// rounded last: the blocks were calibrated on their round-to-nearest values).
pub fn gptq_model<E: From<QuantError>>(
    mut model: CausalLm,
    batches: &[CalibrationBatch],
    opts: &GptqOptions,
    round: Option<HfDtype>,
    tied_head: bool,
    mut on_block: impl FnMut(usize, usize) -> Result<(), E>,
) -> Result<(CausalLm, Vec<ModuleLoss>), E> {
    if batches.is_empty() {
        return Err(QuantError::Gptq("no calibration batches".into()).into());
    }
    if tied_head && (model.lm_head.is_some() || model.embed_tokens.quant.is_none()) {
        let why = if model.lm_head.is_some() {
            "the model's output head is not tied to its embeddings (its lm_head is calibrated anyway)"
        } else {
            "embed_tokens is not quantized (it needs a quant.rules entry)"
        };
        return Err(QuantError::Gptq(format!("calibration.tied_head is set but {why}")).into());
    }
    let mut report = Vec::new();
    let ropes: Vec<_> = batches.iter().map(|b| model.rope_tables(b.attention.positions.clone())).collect();
    // The full-precision model: the same parameters without fake quantizers.
    let reference = (opts.asymmetric > 0.0).then(|| model.clone().map_linears(|_, q| QLinear { quant: None, ..q }));
    let mut xs: Vec<Tensor<3>> = batches.iter().map(|b| model.embed(b.tokens.clone())).collect();
    let mut xs_fp: Vec<Tensor<3>> = match &reference {
        Some(r) => batches.iter().map(|b| r.embed(b.tokens.clone())).collect(),
        None => Vec::new(),
    };
    let n_layers = model.layers.len();
    for i in 0..n_layers {
        let fp = reference.as_ref().map(|r| Sites::of(&r.layers[i], std::mem::take(&mut xs_fp), &ropes, batches));
        let layer = &mut model.layers[i];
        let p = format!("layers.{i}");
        let ins = norms(&layer.input_layernorm, &xs);
        let h = hessian(&ins, fp.as_ref().map(|s| &s.attn_in[..]));
        let a = &mut layer.self_attn;
        for (n, lin) in [("q_proj", &mut a.q_proj), ("k_proj", &mut a.k_proj), ("v_proj", &mut a.v_proj)] {
            quantize_linear(lin, &h, format!("{p}.self_attn.{n}"), opts, round, &mut report)?;
        }
        let ctx = contexts(a, ins, &ropes, batches);
        quantize_linear(&mut a.o_proj, &hessian(&ctx, fp.as_ref().map(|s| &s.context[..])), format!("{p}.self_attn.o_proj"), opts, round, &mut report)?;
        let mids = residuals(xs, &a.o_proj, &ctx);
        let ins = norms(&layer.post_attention_layernorm, &mids);
        let h = hessian(&ins, fp.as_ref().map(|s| &s.mlp_in[..]));
        let m = &mut layer.mlp;
        for (n, lin) in [("gate_proj", &mut m.gate_proj), ("up_proj", &mut m.up_proj)] {
            quantize_linear(lin, &h, format!("{p}.mlp.{n}"), opts, round, &mut report)?;
        }
        let hid = hiddens(m, ins);
        quantize_linear(&mut m.down_proj, &hessian(&hid, fp.as_ref().map(|s| &s.hidden[..])), format!("{p}.mlp.down_proj"), opts, round, &mut report)?;
        xs = residuals(mids, &m.down_proj, &hid);
        if let Some(s) = fp {
            xs_fp = s.out;
        }
        // New parameters track gradients; keep this plain device plain.
        model.layers[i] = model.layers[i].clone().valid();
        on_block(i + 1, n_layers)?;
    }
    let head = match model.lm_head.as_mut() {
        Some(head) => Some((head, "lm_head")),
        None if tied_head => Some((&mut model.embed_tokens, "embed_tokens")),
        None => None,
    };
    if let Some((head, name)) = head {
        let outs = norms(&model.norm, &xs);
        let fp_outs = reference.as_ref().map(|r| norms(&r.norm, &xs_fp));
        quantize_linear(head, &hessian(&outs, fp_outs.as_deref()), name.into(), opts, round, &mut report)?;
    }
    Ok((model.valid(), report))
}
