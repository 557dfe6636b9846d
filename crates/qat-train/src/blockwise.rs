//! Block-wise reconstruction (`[blockwise]`): before end-to-end training, each decoder block in
//! turn is trained, weights and quantizer scales with their own learning rates, so that its
//! fake-quantized output reproduces the full-precision model's block output (EfficientQAT's
//! Block-AP stage).
//!
//! For block `i` the inputs are the calibration rows passed through the already reconstructed
//! quantized blocks `0..i` (`x_q`), and the target is the full-precision block applied to the
//! full-precision model's own hidden states (`y = f_i(x_fp)`), so each block also corrects the
//! error the blocks before it left. The loss is [`reconstruction_loss`]; AdamW with a cosine
//! schedule over the block's steps. After each epoch the held-out rows are scored the same way and the block
//! with the lowest held-out loss (possibly its initialisation) is kept; `patience` epochs
//! without improvement end the block.
//!
//! The three activation sets (inputs `x_q`, `x_fp`, targets `y`) live in memory or in
//! memory-mapped files of the state directory (`activations`, [`crate::activations`]).
//!
//! Each finished block is saved (`block-NNN.safetensors` and its report) in a state directory;
//! a restarted stage loads the finished blocks instead of training them again and goes on from
//! the next, with the same results as an uninterrupted stage (inputs, targets and the fresh
//! optimizer of each block are recomputed exactly).

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use qat_model::{CalibrationBatch, CausalLm};
use qat_quant::HfDtype;
use serde::Serialize;

use crate::activations::Activations;
use crate::config::{BlockwiseSection, ReconstructionLoss, Schedule};
use crate::optim::{AdamW, GroupHyper, lr_factor};
use crate::{TrainError, write_atomically};

/// What reconstruction did to one block.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BlockReport {
    pub block: usize,
    /// Held-out reconstruction loss of the block as initialised, and as kept.
    pub initial_loss: f64,
    pub final_loss: f64,
    /// Epoch whose block was kept (0: the initialisation).
    pub best_epoch: usize,
    pub epochs_run: usize,
    pub seconds: f64,
}

/// The reconstruction loss of a block output `a` against the target `b` (`[B, T, hidden]`):
/// `mse`: `mean((a − b)²)` over every element; `token_relative`:
/// `mean_t(‖a_t − b_t‖² / ‖b_t‖²)` over tokens `t`.
pub fn reconstruction_loss(kind: ReconstructionLoss, a: Tensor<3>, b: Tensor<3>) -> Tensor<1> {
    match kind {
        ReconstructionLoss::Mse => (a - b).square().mean(),
        ReconstructionLoss::TokenRelative => ((a - b.clone()).square().sum_dim(2) / b.square().sum_dim(2).clamp_min(1e-12)).mean(),
    }
}

/// Reconstructs every block of `model` (on an autodiff device, fake-quantized) against
/// `teacher` (the full-precision model, on the plain device). `train` and `val` are calibration
/// batches on the plain device; each training batch is one optimizer step. `round_scales`: keep
/// scales on the grid export stores exactly in that dtype.
/// `state_dir` holds the finished blocks (see the module doc); `stop_after` ends the stage with
/// an error after that many blocks trained in this call (as an interruption would). `on_block`
/// sees each block's report as it finishes, or is loaded.
#[allow(clippy::too_many_arguments)]
pub fn reconstruct(
    mut model: CausalLm,
    teacher: &CausalLm,
    train: &[CalibrationBatch],
    val: &[CalibrationBatch],
    cfg: &BlockwiseSection,
    round_scales: Option<HfDtype>,
    state_dir: &Path,
    stop_after: Option<usize>,
    mut on_block: impl FnMut(&BlockReport),
) -> Result<(CausalLm, Vec<BlockReport>), TrainError> {
    let mut trained = 0;
    std::fs::create_dir_all(state_dir).map_err(|e| TrainError::file(state_dir, e))?;
    if train.is_empty() || val.is_empty() {
        return Err(TrainError::Run("blockwise: no training or held-out rows".into()));
    }
    let all: Vec<&CalibrationBatch> = train.iter().chain(val).collect();
    let n_train = train.len();
    let ropes: Vec<_> = all.iter().map(|b| teacher.rope_tables(b.attention.positions.clone())).collect();
    let cache = state_dir.join("activations");
    let store = |name: String, batches: &mut dyn Iterator<Item = Tensor<3>>| Activations::collect(cfg.activations, &cache, &name, batches);
    let mut x_fp = store("x_fp".into(), &mut all.iter().map(|b| teacher.embed(b.tokens.clone())))?;
    // The student's own (possibly quantized) embeddings, taken off the autodiff graph.
    let embedding = model.embed_tokens.effective_weight().inner();
    let mut x_q = store("x_q".into(), &mut all.iter().map(|b| burn::tensor::module::embedding(embedding.clone(), b.tokens.clone())))?;
    // The quantized blocks' outputs: the next block's inputs.
    let advance = |x_q: &Activations, layer: &qat_model::transformer::DecoderLayer, i: usize| {
        let plain = layer.clone().valid();
        store(format!("x_q-{i:03}"), &mut (0..all.len()).map(|j| plain.forward(x_q.get(j), &ropes[j], &all[j].attention.bias, None)))
    };
    let total_steps = cfg.epochs * n_train;
    let mut reports = Vec::new();
    for i in 0..model.layers.len() {
        let started = Instant::now();
        let (params_path, report_path) = (state_dir.join(format!("block-{i:03}.safetensors")), state_dir.join(format!("block-{i:03}.json")));
        let y = store(format!("y-{i:03}"), &mut (0..all.len()).map(|j| teacher.layers[i].forward(x_fp.get(j), &ropes[j], &all[j].attention.bias, None)))?;
        let held_out = |layer: &qat_model::transformer::DecoderLayer| -> f64 {
            let plain = layer.clone().valid();
            let sum: f64 = (n_train..all.len())
                .map(|j| {
                    reconstruction_loss(cfg.loss, plain.forward(x_q.get(j), &ropes[j], &all[j].attention.bias, None), y.get(j)).into_scalar::<f32>() as f64
                })
                .sum();
            sum / val.len() as f64
        };
        if report_path.is_file() {
            // Finished before a restart: its saved parameters, and its inputs for the next block.
            let report: BlockReport = serde_json::from_str(&std::fs::read_to_string(&report_path).map_err(|e| TrainError::file(&report_path, e))?)
                .map_err(|e| TrainError::file(&report_path, e))?;
            let layer =
                crate::params::load(model.layers[i].clone(), &crate::params::read_safetensors(&params_path)?).map_err(|e| TrainError::file(&params_path, e))?;
            x_q = advance(&x_q, &layer, i)?;
            x_fp = y;
            model.layers[i] = layer;
            on_block(&report);
            reports.push(report);
            continue;
        }
        if stop_after == Some(trained) {
            return Err(TrainError::Stopped(format!("blockwise: stopped after {trained} blocks as requested; resume with --resume")));
        }
        if let Some(signal) = crate::interrupt::requested() {
            return Err(TrainError::Stopped(format!(
                "blockwise: stopped by {signal} before block {i} (finished blocks are in {}); run the same command to continue",
                state_dir.display()
            )));
        }
        trained += 1;
        let mut layer = model.layers[i].clone();
        let initial_loss = held_out(&layer);
        let mut best = (initial_loss, layer.clone(), 0usize);
        let groups = (GroupHyper { lr: cfg.lr, weight_decay: 0.0 }, GroupHyper { lr: cfg.scale_lr, weight_decay: 0.0 });
        let mut opt = AdamW::new(groups.0, groups.1, layer.scale_params(), [0.9, 0.999], 1e-8);
        opt.round_scales = round_scales;
        let mut step = 0;
        let mut epochs_run = 0;
        for epoch in 1..=cfg.epochs {
            for j in 0..n_train {
                let rope = (Tensor::from_inner(ropes[j].0.clone()), Tensor::from_inner(ropes[j].1.clone()));
                let bias = Tensor::from_inner(all[j].attention.bias.clone());
                let out = layer.forward(Tensor::from_inner(x_q.get(j)), &rope, &bias, None);
                let loss = reconstruction_loss(cfg.loss, out, Tensor::from_inner(y.get(j)));
                if !loss.clone().into_scalar::<f32>().is_finite() {
                    return Err(TrainError::Run(format!(
                        "blockwise: block {i} epoch {epoch}: the reconstruction loss is not finite; lower blockwise.lr / scale_lr"
                    )));
                }
                let grads = GradientsParams::from_grads(loss.backward(), &layer);
                layer = opt.step(layer, &grads, lr_factor(step, total_steps, 0, Schedule::Cosine, 0.0), 1.0);
                step += 1;
            }
            epochs_run = epoch;
            let v = held_out(&layer);
            if v < best.0 {
                best = (v, layer.clone(), epoch);
            } else if epoch - best.2 >= cfg.patience {
                break;
            }
        }
        let (final_loss, kept, best_epoch) = best;
        x_q = advance(&x_q, &kept, i)?;
        x_fp = y;
        model.layers[i] = kept;
        let report = BlockReport { block: i, initial_loss, final_loss, best_epoch, epochs_run, seconds: started.elapsed().as_secs_f64() };
        // Parameters first, then the report that marks the block finished; each atomically.
        write_atomically(&params_path, |tmp| crate::params::write_safetensors(tmp, &crate::params::collect(&model.layers[i])))?;
        let text = serde_json::to_string(&report).expect("JSON");
        write_atomically(&report_path, |tmp| std::fs::write(tmp, &text).map_err(|e| TrainError::file(tmp, e)))?;
        on_block(&report);
        reports.push(report);
    }
    Ok((model, reports))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn t(v: Vec<f32>) -> Tensor<3> {
        Tensor::from_data(TensorData::new(v, [1, 2, 2]), &Device::flex())
    }

    #[test]
    fn reconstruction_losses_follow_their_formulas() {
        // Tokens (3, 4) and (0.3, 0.4); errors (1, 0) and (0.1, 0).
        let target = t(vec![3.0, 4.0, 0.3, 0.4]);
        let out = t(vec![4.0, 4.0, 0.4, 0.4]);
        let mse = reconstruction_loss(ReconstructionLoss::Mse, out.clone(), target.clone()).into_scalar::<f32>();
        assert!((mse - (1.0 + 0.01) / 4.0).abs() < 1e-6, "{mse}");
        // Both tokens have relative error 1/25: the small token counts as much as the large one.
        let rel = reconstruction_loss(ReconstructionLoss::TokenRelative, out, target).into_scalar::<f32>();
        assert!((rel - 0.04).abs() < 1e-6, "{rel}");
    }
}
