use std::path::PathBuf;

use anyhow::Context;
use qat_model::SaveDtype;
use qat_quant::policy::{Overrides, SchemeChoice};
use qat_quant::{Granularity, Policy, ScaleInit};

/// Post-training quantization with the QAT quantizers, written as a checkpoint: round-to-nearest
/// (scales from their init rule) or GPTQ on calibration rows drawn from a run config's data mix.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (Hugging Face layout).
    model: PathBuf,
    /// Output checkpoint directory (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// A TOML file with a `[quant]`-style policy (scheme, bits, granularity, rules, ...).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Scheme for all decoder linears (overrides the policy file's).
    #[arg(long, value_enum)]
    scheme: Option<SchemeChoice>,
    #[arg(long)]
    bits: Option<u32>,
    #[arg(long, value_enum)]
    granularity: Option<Granularity>,
    #[arg(long)]
    group_size: Option<usize>,
    #[arg(long, value_enum)]
    init: Option<ScaleInit>,
    /// `rtn` (round to nearest) or `gptq`.
    #[arg(long, default_value = "rtn", value_enum)]
    method: Method,
    /// Run config whose `[data]` mix gives the GPTQ calibration rows (and whose
    /// `[calibration]` section, if any, its settings).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Calibration rows of the config's `data.seq_len` tokens (default: its
    /// `calibration.rows`, else 128).
    #[arg(long)]
    rows: Option<usize>,
    /// Storage dtype of the written weights: f32 (exact) or bf16.
    #[arg(long, default_value = "f32", value_enum)]
    dtype: SaveDtype,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Rtn,
    Gptq,
}

pub fn run(mut a: Args) -> anyhow::Result<()> {
    a.model = super::model_dir(&a.model)?;
    let device = super::device(&a.device)?;
    let mut policy = match &a.policy {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str::<Policy>(&text).with_context(|| format!("{}: invalid quant policy", p.display()))?
        }
        None => Policy::default(),
    };
    policy.set(&Overrides { scheme: a.scheme, bits: a.bits, granularity: a.granularity, group_size: a.group_size, init: a.init, ..Default::default() });
    let dtype = a.dtype;
    let model = super::load_model(&a.model, &device)?;
    let (model, table) = model.prepare_qat(&policy)?;
    print!("{table}");
    let mut calibration = serde_json::Value::Null;
    let model = match (a.method, &a.data) {
        (Method::Rtn, None) => model,
        (Method::Rtn, Some(_)) => anyhow::bail!("--data is for --method gptq"),
        (Method::Gptq, None) => anyhow::bail!("--method gptq needs --data RUN.toml (its [data] mix gives the calibration rows)"),
        (Method::Gptq, Some(cfg_path)) => {
            let cfg = qat_train::RunConfig::load(cfg_path, &[]).with_context(|| format!("reading {}", cfg_path.display()))?;
            let ckpt = qat_model::Checkpoint::open(&a.model).with_context(|| format!("opening checkpoint {}", a.model.display()))?;
            let tok = qat_tokenizer::Tokenizer::from_dir(&a.model).map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
            let mut mixer = qat_train::train::load_mixer(&cfg, &tok, &ckpt)?;
            let rows = a.rows.or(cfg.calibration.as_ref().map(|c| c.rows)).unwrap_or(128);
            anyhow::ensure!(rows > 0, "--rows must be positive");
            let batches = qat_train::train::first_rows(&mut mixer, &[rows], cfg.micro_batch_size(), &device)?.remove(0);
            let opts = cfg.calibration.as_ref().map(|c| c.gptq_options()).unwrap_or_default();
            let tied_head = cfg.calibration.as_ref().is_some_and(|c| c.tied_head);
            let started = std::time::Instant::now();
            let (model, losses) = qat_model::gptq_model(model, &batches, &opts, policy.round_scales, tied_head, |i, n| {
                eprintln!("GPTQ block {i}/{n}");
                Ok::<_, qat_quant::QuantError>(())
            })?;
            calibration = serde_json::json!({"rows": rows, "tokens": rows * cfg.data.seq_len, "seconds": started.elapsed().as_secs_f64(), "modules": losses});
            model
        }
    };
    let sidecar = serde_json::to_string_pretty(&serde_json::json!({
        "method": a.method,
        "calibration": calibration,
        "policy": policy,
        "bits_per_weight_quantized": table.quantized_bits_per_weight(),
        "bits_per_weight_model": table.model_bits_per_weight(),
    }))?;
    model.save_hf(Some(&a.model), &a.out, dtype, &[("qat_quant.json", sidecar)])?;
    println!("wrote {}", a.out.display());
    Ok(())
}
