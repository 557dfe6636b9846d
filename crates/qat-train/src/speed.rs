//! Throughput measurement for `qat bench`: forward passes, plain training steps, and QAT
//! training steps of one model on one batch shape, timed after warm-up iterations.

use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use qat_model::{AttentionBatch, CausalLm, Checkpoint};
use qat_quant::Policy;

use crate::loss;
use crate::optim::{AdamW, GroupHyper};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchMode {
    /// Forward pass without autodiff.
    Forward,
    /// Training step (forward, backward, AdamW) of the unquantized model.
    Plain,
    /// Training step with every decoder linear fake-quantized as `policy` says.
    Qat,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub mode: String,
    pub batch: usize,
    pub seq_len: usize,
    pub iters: usize,
    pub seconds_per_iter: f64,
    pub tokens_per_second: f64,
    /// Model FLOPs per second: 2·N·tokens forward, 6·N·tokens training (N = parameters).
    pub model_gflops: f64,
    pub peak_rss_mib: f64,
}

/// Batch shape and iteration counts of a measurement.
#[derive(Debug, Clone, Copy)]
pub struct BenchShape {
    pub batch: usize,
    pub seq_len: usize,
    pub warmup: usize,
    pub iters: usize,
}

/// Times `iters` iterations after `warmup` of them.
pub fn bench(
    model_dir: &std::path::Path,
    device: &Device,
    mode: BenchMode,
    policy: &Policy,
    shape: BenchShape,
    compute: Option<burn::tensor::FloatDType>,
) -> Result<BenchResult, String> {
    let BenchShape { batch, seq_len, warmup, iters } = shape;
    let ckpt = Checkpoint::open(model_dir).map_err(|e| e.to_string())?;
    let n_params = ckpt.config.n_params() as f64;
    let vocab = ckpt.config.vocab_size;
    let ids: Vec<i64> = (0..batch * seq_len).map(|i| ((i * 7919 + 13) % vocab) as i64).collect();
    let targets: Vec<i64> = (0..batch * seq_len).map(|i| ((i * 104729 + 7) % vocab) as i64).collect();
    let segments = vec![vec![0u32; seq_len]; batch];
    let mut times = Vec::new();
    match mode {
        BenchMode::Forward => {
            let model = CausalLm::from_checkpoint(&ckpt, device).map_err(|e| e.to_string())?.with_compute_dtype(compute);
            for _ in 0..warmup + iters {
                let t = Instant::now();
                let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [batch, seq_len]), device);
                let logits = model.forward(tokens, &AttentionBatch::packed(&segments, device), None);
                let _ = logits.sum().into_scalar::<f32>();
                times.push(t.elapsed().as_secs_f64());
            }
        }
        BenchMode::Plain | BenchMode::Qat => {
            let ad = device.clone().autodiff();
            let mut model = CausalLm::from_checkpoint(&ckpt, &ad).map_err(|e| e.to_string())?.with_compute_dtype(compute);
            if mode == BenchMode::Qat {
                model = model.quantize(policy)?.0;
            }
            let h = GroupHyper { lr: 1e-5, weight_decay: 0.0 };
            let mut opt = AdamW::new(h, h, [0.9, 0.95], 1e-8);
            for _ in 0..warmup + iters {
                let t = Instant::now();
                let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [batch, seq_len]), &ad);
                let tg = loss::Targets::new(&targets, batch, seq_len, &ad);
                let logits = model.forward(tokens, &AttentionBatch::packed(&segments, &ad), None);
                let l = loss::ce_sum(logits, &tg) / tg.count as f64;
                let grads = GradientsParams::from_grads(l.backward(), &model);
                model = opt.step(model, &grads, 1.0, 1.0);
                // Wait for the update to finish before stopping the clock.
                let _ = model.embed_tokens.weight.val().slice([0..1, 0..1]).into_data();
                times.push(t.elapsed().as_secs_f64());
            }
            let _ = model.valid();
        }
    }
    let measured = &times[warmup..];
    let per_iter = measured.iter().sum::<f64>() / measured.len().max(1) as f64;
    let tokens = (batch * seq_len) as f64;
    let flops_per_token = if mode == BenchMode::Forward { 2.0 } else { 6.0 } * n_params;
    Ok(BenchResult {
        mode: format!("{mode:?}").to_lowercase(),
        batch,
        seq_len,
        iters,
        seconds_per_iter: per_iter,
        tokens_per_second: tokens / per_iter,
        model_gflops: flops_per_token * tokens / per_iter / 1e9,
        peak_rss_mib: crate::train::peak_rss_mib(),
    })
}
