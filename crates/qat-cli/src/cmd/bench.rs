use std::path::PathBuf;

use qat_quant::Policy;
use qat_quant::policy::{Overrides, SchemeChoice};
use qat_train::speed::{BenchMode, BenchShape, bench};

/// Measure forward, plain-training, QAT-training and distillation-step throughput of a model on
/// one batch shape, with the time of each stage of the step.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (Hugging Face layout).
    model: PathBuf,
    /// forward, plain, qat or kd (one per process, so that peak memory is per mode).
    #[arg(long, default_value = "qat", value_enum)]
    mode: BenchMode,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 512)]
    seq_len: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Quantizer of the qat mode (default SEQ-2 per channel).
    #[arg(long, value_enum)]
    scheme: Option<SchemeChoice>,
    #[arg(long)]
    bits: Option<u32>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Precision of matrix products: f32, bf16 or f16 (autocast, as `model.compute_dtype`).
    #[arg(long, default_value = "f32", value_enum)]
    compute_dtype: qat_train::config::ComputeDtype,
    /// `composed` computes fake quantization from tensor operations instead of the fused
    /// operation (same values), to measure what the fused one saves.
    #[arg(long, default_value = "fused", value_enum)]
    fake_quant: FakeQuantPath,
    /// Print JSON only.
    #[arg(long)]
    json: bool,
}

/// Which implementation of fake quantization the step uses.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum FakeQuantPath {
    Fused,
    Composed,
}

pub fn run(mut a: Args) -> anyhow::Result<()> {
    a.model = super::model_dir(&a.model)?;
    let device = super::device(&a.device)?;
    qat_quant::fused::set_enabled(a.fake_quant == FakeQuantPath::Fused);
    let mut policy = Policy::default();
    policy.set(&Overrides { scheme: a.scheme, bits: a.bits, ..Default::default() });
    let r = bench(
        &a.model,
        &device,
        a.mode,
        &policy,
        BenchShape { batch: a.batch, seq_len: a.seq_len, warmup: a.warmup, iters: a.iters },
        a.compute_dtype.float_dtype(),
    )?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{}: batch {}×{}, {} threads: {:.3} s/iter, {:.1} tokens/s, {:.1} model GFLOP/s, peak RSS {:.0} MiB",
            r.mode, r.batch, r.seq_len, r.threads, r.seconds_per_iter, r.tokens_per_second, r.model_gflops, r.peak_rss_mib
        );
        if let Some(m) = r.peak_device_mib {
            println!("  peak device memory (allocator reserve) {m:.0} MiB");
        }
        for s in &r.stages {
            println!("  {:<16} {:>8.3} s  {:>5.1}%", s.stage, s.seconds, 100.0 * s.share);
        }
        if r.fake_quant_seconds > 0.0 {
            println!("  (computing every fake-quantized weight once, standalone: {:.3} s)", r.fake_quant_seconds);
        }
    }
    Ok(())
}
