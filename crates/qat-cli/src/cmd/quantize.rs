use std::path::PathBuf;

use anyhow::Context;
use qat_model::SaveDtype;
use qat_quant::policy::{Overrides, SchemeChoice};
use qat_quant::{Granularity, Policy, ScaleInit};

/// Round-to-nearest post-training quantization with the QAT quantizers: scales from their
/// init rule, weights replaced by their quantized values, written as a checkpoint.
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
    #[arg(long, value_parser = parse_enum::<SchemeChoice>)]
    scheme: Option<SchemeChoice>,
    #[arg(long)]
    bits: Option<u32>,
    #[arg(long, value_parser = parse_enum::<Granularity>)]
    granularity: Option<Granularity>,
    #[arg(long)]
    group_size: Option<usize>,
    #[arg(long, value_parser = parse_enum::<ScaleInit>)]
    init: Option<ScaleInit>,
    /// Storage dtype of the written weights: f32 (exact) or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Parses a lowercase config word into a serde enum, so CLI and TOML accept the same words.
pub fn parse_enum<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| e.to_string())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let device = super::device(&a.device)?;
    let mut policy = match &a.policy {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str::<Policy>(&text).with_context(|| format!("{}: invalid quant policy", p.display()))?
        }
        None => Policy::default(),
    };
    policy.set(&Overrides { scheme: a.scheme, bits: a.bits, granularity: a.granularity, group_size: a.group_size, init: a.init, ..Default::default() });
    let dtype = match a.dtype.as_str() {
        "f32" => SaveDtype::F32,
        "bf16" => SaveDtype::Bf16,
        other => anyhow::bail!("--dtype {other}: expected f32 or bf16"),
    };
    let model = super::load_model(&a.model, &device)?;
    let (model, table) = model.quantize(&policy).map_err(anyhow::Error::msg)?;
    print!("{table}");
    let sidecar = serde_json::to_string_pretty(&serde_json::json!({
        "method": "rtn",
        "policy": policy,
        "bits_per_weight_quantized": table.quantized_bits_per_weight(),
        "bits_per_weight_model": table.model_bits_per_weight(),
    }))?;
    model.save_hf(Some(&a.model), &a.out, dtype, &[("qat_quant.json", sidecar)])?;
    println!("wrote {}", a.out.display());
    Ok(())
}
