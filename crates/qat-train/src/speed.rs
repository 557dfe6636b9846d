//! Throughput measurement for `qat bench`: forward passes, plain training steps, and QAT
//! training steps of one model on one batch shape, timed after warm-up iterations.

use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use qat_model::{AttentionBatch, CausalLm, Checkpoint};
use qat_quant::Policy;

use crate::TrainError;
use crate::loss;
use crate::optim::{AdamW, GroupHyper};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "lower"))]
pub enum BenchMode {
    /// Forward pass without autodiff (evaluation, the distillation teacher).
    Forward,
    /// Training step (forward, CE, backward, AdamW) of the unquantized model.
    Plain,
    /// Training step with every decoder linear fake-quantized as `policy` says.
    Qat,
    /// The QAT step with the default job's loss: CE + CAKLD distillation from the frozen
    /// unquantized model, whose forward pass is part of the step.
    Kd,
}

/// Time of one part of the step, averaged over the timed iterations.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageTime {
    pub stage: String,
    pub seconds: f64,
    /// Fraction of the whole step.
    pub share: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub mode: String,
    pub batch: usize,
    pub seq_len: usize,
    pub iters: usize,
    /// Worker threads of the CPU backend (the rayon pool).
    pub threads: usize,
    pub seconds_per_iter: f64,
    pub tokens_per_second: f64,
    /// Model FLOPs per second: 2·N·tokens forward, 6·N·tokens training (N = parameters), plus
    /// 2·N·tokens for the teacher's forward pass in `kd` mode.
    pub model_gflops: f64,
    pub peak_rss_mib: f64,
    /// Most memory the device's allocator held at the end of any stage (`bytes_reserved` of
    /// Burn's memory pools: what the process took from the GPU). `None` where the backend keeps
    /// no pools (the CPU).
    pub peak_device_mib: Option<f64>,
    /// Where the step's time goes, in order; the shares sum to 1.
    pub stages: Vec<StageTime>,
    /// Time to compute every fake-quantized weight once, standalone (already inside the
    /// `forward` and `backward` stages, not added to the step).
    pub fake_quant_seconds: f64,
}

/// Batch shape and iteration counts of a measurement.
#[derive(Debug, Clone, Copy)]
pub struct BenchShape {
    pub batch: usize,
    pub seq_len: usize,
    pub warmup: usize,
    pub iters: usize,
}

/// Accumulates the time of named stages over the timed iterations.
struct Stopwatch {
    device: Device,
    last: Instant,
    totals: Vec<(&'static str, f64)>,
    recording: bool,
    peak_device_bytes: Option<u64>,
}

impl Stopwatch {
    fn new(device: &Device) -> Self {
        Stopwatch { device: device.clone(), last: Instant::now(), totals: Vec::new(), recording: false, peak_device_bytes: None }
    }

    fn start(&mut self, recording: bool) {
        self.recording = recording;
        self.last = Instant::now();
    }

    /// Ends the current stage. A GPU runs queued work asynchronously, so the device is
    /// synchronized first: the time between two laps is then the stage's compute on every
    /// backend (the CPU backend runs each operation when it is called; its sync is free).
    fn lap(&mut self, stage: &'static str) -> Result<(), TrainError> {
        self.device.sync().map_err(|e| TrainError::Run(format!("device error during {stage}: {e:?}")))?;
        let dt = self.last.elapsed().as_secs_f64();
        if let Some(u) = self.device.memory_pool_usage() {
            self.peak_device_bytes = Some(self.peak_device_bytes.unwrap_or(0).max(u.bytes_reserved));
        }
        self.last = Instant::now();
        if self.recording {
            match self.totals.iter_mut().find(|(s, _)| *s == stage) {
                Some((_, t)) => *t += dt,
                None => self.totals.push((stage, dt)),
            }
        }
        Ok(())
    }

    fn stages(&self, iters: usize) -> (f64, Vec<StageTime>) {
        let step: f64 = self.totals.iter().map(|(_, t)| t).sum::<f64>() / iters as f64;
        let stages = self.totals.iter().map(|&(s, t)| StageTime { stage: s.to_string(), seconds: t / iters as f64, share: t / iters as f64 / step }).collect();
        (step, stages)
    }
}

/// Times `iters` iterations after `warmup` of them, stage by stage.
pub fn bench(
    model_dir: &std::path::Path,
    device: &Device,
    mode: BenchMode,
    policy: &Policy,
    shape: BenchShape,
    compute: Option<burn::tensor::FloatDType>,
) -> Result<BenchResult, TrainError> {
    let BenchShape { batch, seq_len, warmup, iters } = shape;
    if iters == 0 {
        return Err(TrainError::Run("--iters must be at least 1".into()));
    }
    let ckpt = Checkpoint::open(model_dir)?;
    let n_params = ckpt.config.n_params() as f64;
    let vocab = ckpt.config.vocab_size;
    let ids: Vec<i64> = (0..batch * seq_len).map(|i| ((i * 7919 + 13) % vocab) as i64).collect();
    let targets: Vec<i64> = (0..batch * seq_len).map(|i| ((i * 104729 + 7) % vocab) as i64).collect();
    let segments = vec![vec![0u32; seq_len]; batch];
    let mut watch = Stopwatch::new(device);
    let mut fake_quant_seconds = 0.0;
    match mode {
        BenchMode::Forward => {
            let model = CausalLm::from_checkpoint(&ckpt, device)?.with_compute_dtype(compute);
            for i in 0..warmup + iters {
                watch.start(i >= warmup);
                let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [batch, seq_len]), device);
                let attention = AttentionBatch::packed(&segments, device);
                watch.lap("inputs")?;
                let logits = model.forward(tokens, &attention, None);
                let _ = logits.sum().into_scalar::<f32>();
                watch.lap("forward")?;
            }
        }
        BenchMode::Plain | BenchMode::Qat | BenchMode::Kd => {
            let ad = device.clone().autodiff();
            let mut model = CausalLm::from_checkpoint(&ckpt, &ad)?.with_compute_dtype(compute);
            if mode != BenchMode::Plain {
                model = model.prepare_qat(policy)?.0;
            }
            let teacher = match mode {
                BenchMode::Kd => Some(CausalLm::from_checkpoint(&ckpt, device)?.with_compute_dtype(compute)),
                _ => None,
            };
            let h = GroupHyper { lr: 1e-5, weight_decay: 0.0 };
            let mut opt = AdamW::new(h, h, model.scale_params(), [0.9, 0.95], 1e-8);
            for i in 0..warmup + iters {
                watch.start(i >= warmup);
                let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [batch, seq_len]), &ad);
                let tg = loss::Targets::new(&targets, batch, seq_len, &ad);
                let attention = AttentionBatch::packed(&segments, &ad);
                watch.lap("inputs")?;
                let logits = model.forward(tokens.clone(), &attention, None);
                watch.lap("forward")?;
                let teacher_logits = match &teacher {
                    Some(t) => {
                        let l = t.forward(tokens.inner(), &AttentionBatch::packed(&segments, device), None);
                        watch.lap("teacher forward")?;
                        Some(Tensor::from_inner(l))
                    }
                    None => None,
                };
                let kd = if teacher_logits.is_some() { crate::config::KdKind::Cakld } else { crate::config::KdKind::None };
                let weights = crate::config::LossSection { ce_weight: 1.0, kd, kd_weight: 1.0 };
                let l = loss::objective(logits, teacher_logits, &tg, &weights, tg.count).loss;
                watch.lap("loss")?;
                let grads = GradientsParams::from_grads(l.backward(), &model);
                watch.lap("backward")?;
                model = opt.step(model, &grads, 1.0, 1.0);
                // Wait for the update to finish before stopping the clock.
                let _ = model.embed_tokens.weight.val().slice([0..1, 0..1]).into_data();
                watch.lap("optimizer")?;
            }
            // After the timed steps, not between them: an extra pass before each step would
            // warm the allocator and the thread pool for the QAT step and not for the plain one.
            if mode != BenchMode::Plain {
                let t = Instant::now();
                for _ in 0..iters {
                    for (_, linear) in model.linears() {
                        let _ = linear.effective_weight().inner().slice([0..1, 0..1]).into_data();
                    }
                }
                fake_quant_seconds = t.elapsed().as_secs_f64() / iters as f64;
            }
            let _ = model.valid();
        }
    }
    let (per_iter, stages) = watch.stages(iters);
    let tokens = (batch * seq_len) as f64;
    let flops_per_token = match mode {
        BenchMode::Forward => 2.0,
        BenchMode::Plain | BenchMode::Qat => 6.0,
        BenchMode::Kd => 8.0,
    } * n_params;
    Ok(BenchResult {
        mode: format!("{mode:?}").to_lowercase(),
        batch,
        seq_len,
        iters,
        threads: rayon::current_num_threads(),
        seconds_per_iter: per_iter,
        tokens_per_second: tokens / per_iter,
        model_gflops: flops_per_token * tokens / per_iter / 1e9,
        peak_rss_mib: crate::train::peak_rss_mib(),
        peak_device_mib: watch.peak_device_bytes.map(|b| b as f64 / (1024.0 * 1024.0)),
        stages,
        fake_quant_seconds,
    })
}
