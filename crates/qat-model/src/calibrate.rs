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

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor};
use qat_quant::{GptqOptions, Hessian, HfDtype, QLinear, QuantError, gptq};

use crate::transformer::{AttentionBatch, CausalLm};

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

/// `Σ xᵀx` of the rows of every `[B, T, d]` input.
fn hessian(inputs: &[Tensor<3>]) -> Hessian {
    let d = inputs[0].dims()[2];
    let mut h = Hessian::new(d);
    for x in inputs {
        let [b, t, _] = x.dims();
        h.add(x.clone().reshape([b * t, d]));
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

/// GPTQ over every fake-quantized linear of `model` (on a device without autodiff), block by
/// block. `on_block(i, n)` is called after each block. `round`: keep scales on the grid that
/// export in that dtype stores exactly.
pub fn gptq_model(
    mut model: CausalLm,
    batches: &[CalibrationBatch],
    opts: &GptqOptions,
    round: Option<HfDtype>,
    mut on_block: impl FnMut(usize, usize),
) -> Result<(CausalLm, Vec<ModuleLoss>), QuantError> {
    if batches.is_empty() {
        return Err(QuantError::Gptq("no calibration batches".into()));
    }
    let mut report = Vec::new();
    let ropes: Vec<_> = batches.iter().map(|b| model.rope_tables(b.attention.positions.clone())).collect();
    let mut xs: Vec<Tensor<3>> = batches.iter().map(|b| model.embed(b.tokens.clone())).collect();
    let n_layers = model.layers.len();
    for i in 0..n_layers {
        let layer = &mut model.layers[i];
        let p = format!("layers.{i}");
        let ins: Vec<Tensor<3>> = xs.iter().map(|x| layer.input_layernorm.forward(x.clone())).collect();
        let h = hessian(&ins);
        let a = &mut layer.self_attn;
        for (n, lin) in [("q_proj", &mut a.q_proj), ("k_proj", &mut a.k_proj), ("v_proj", &mut a.v_proj)] {
            quantize_linear(lin, &h, format!("{p}.self_attn.{n}"), opts, round, &mut report)?;
        }
        let ctx: Vec<Tensor<3>> = ins.into_iter().zip(&ropes).zip(batches).map(|((x, rope), b)| a.context(x, rope, &b.attention.bias, None)).collect();
        quantize_linear(&mut a.o_proj, &hessian(&ctx), format!("{p}.self_attn.o_proj"), opts, round, &mut report)?;
        let mids: Vec<Tensor<3>> = xs.into_iter().zip(ctx).map(|(x, c)| x + a.o_proj.forward(c)).collect();
        let ins: Vec<Tensor<3>> = mids.iter().map(|x| layer.post_attention_layernorm.forward(x.clone())).collect();
        let h = hessian(&ins);
        let m = &mut layer.mlp;
        for (n, lin) in [("gate_proj", &mut m.gate_proj), ("up_proj", &mut m.up_proj)] {
            quantize_linear(lin, &h, format!("{p}.mlp.{n}"), opts, round, &mut report)?;
        }
        let hid: Vec<Tensor<3>> = ins.into_iter().map(|x| m.hidden(x)).collect();
        quantize_linear(&mut m.down_proj, &hessian(&hid), format!("{p}.mlp.down_proj"), opts, round, &mut report)?;
        xs = mids.into_iter().zip(hid).map(|(x, hd)| x + m.down_proj.forward(hd)).collect();
        // New parameters track gradients; keep this plain device plain.
        model.layers[i] = model.layers[i].clone().valid();
        on_block(i + 1, n_layers);
    }
    if let Some(head) = model.lm_head.as_mut() {
        let outs: Vec<Tensor<3>> = xs.into_iter().map(|x| model.norm.forward(x)).collect();
        quantize_linear(head, &hessian(&outs), "lm_head".into(), opts, round, &mut report)?;
    }
    Ok((model.valid(), report))
}
