use std::path::PathBuf;

use anyhow::Context;
use qat_export::{HfDtype, HighPrecision};
use qat_quant::Policy;
use qat_quant::policy::{Overrides, SchemeChoice};

/// Export a trained run (or a checkpoint, or an HF model quantized round-to-nearest) as
/// pseudo-quantized safetensors or GGUF.
#[derive(clap::Args)]
pub struct Args {
    /// A run directory, a checkpoint directory, or (with --scheme) a Hugging Face checkpoint.
    source: PathBuf,
    /// hf (pseudo-quantized safetensors) or gguf.
    #[arg(long, value_enum)]
    format: Format,
    #[arg(long)]
    out: PathBuf,
    /// Storage of the HF export: bf16 (default) or f32.
    #[arg(long, default_value = "bf16", value_enum)]
    hf_dtype: HfDtype,
    /// GGUF type of unquantized matrices (embeddings): bf16, f16, q8_0, or f32. Default: the
    /// --hf-dtype (bf16 or f32), so the GGUF and the HF export hold the same values.
    #[arg(long, value_enum)]
    hp_type: Option<HighPrecision>,
    /// Keep the trained scales as they are (the HF and GGUF exports may then differ).
    #[arg(long)]
    no_scale_rounding: bool,
    /// Round-to-nearest quantize a Hugging Face checkpoint with this scheme instead of a run.
    #[arg(long, value_enum)]
    scheme: Option<SchemeChoice>,
    #[arg(long)]
    bits: Option<u32>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Hf,
    Gguf,
}

pub fn run(mut a: Args) -> anyhow::Result<()> {
    a.source = super::model_dir(&a.source)?;
    let device = burn::tensor::Device::flex();
    let (model, base_dir, method) = match a.scheme {
        Some(scheme) => {
            let mut policy = Policy::default();
            policy.set(&Overrides { scheme: Some(scheme), bits: a.bits, ..Default::default() });
            let (m, _) = super::load_model(&a.source, &device)?.prepare_qat(&policy)?;
            (m, a.source.clone(), "rtn")
        }
        None => {
            let (m, cfg) = qat_train::train::load_trained(&a.source, &device)?;
            (m, cfg.model.path, "qat")
        }
    };
    let hf_dtype = a.hf_dtype;
    let (model, rounding) = if a.no_scale_rounding {
        (model, None)
    } else {
        let (m, r) = qat_export::round_scales(model, hf_dtype)?;
        println!("scale rounding: {} of {} scales changed, largest relative change {:.3e}", r.changed, r.scales, r.max_relative_change);
        (m, Some(r))
    };
    let specs: Vec<_> = model.linears().iter().map(|(n, l)| (n.clone(), l.quant.as_ref().map(|q| q.spec.label()))).collect();
    match a.format {
        Format::Hf => {
            let sidecar = serde_json::json!({
                "method": method, "source": a.source.display().to_string(), "scale_rounding": rounding,
                "hf_dtype": a.hf_dtype, "modules": specs.iter().map(|(n, s)| serde_json::json!({"module": n, "quantizer": s})).collect::<Vec<_>>(),
                "linears": specs.len(),
            });
            qat_export::export_hf(&model, &base_dir, &a.out, hf_dtype, &sidecar)?;
            println!("wrote {}", a.out.display());
        }
        Format::Gguf => {
            let hp = a.hp_type.unwrap_or(match a.hf_dtype {
                HfDtype::Bf16 => HighPrecision::Bf16,
                HfDtype::F32 => HighPrecision::F32,
            });
            let name = a.source.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let r = qat_export::export_gguf(&model, &base_dir, &a.out, hp, hf_dtype, &name)?;
            let mut by_type = std::collections::BTreeMap::new();
            for t in &r.tensors {
                *by_type.entry(t.ggml_type.clone()).or_insert(0) += 1;
            }
            for t in r.tensors.iter().filter(|t| t.fallback.is_some()).take(3) {
                println!("fallback: {} → {} ({})", t.name, t.ggml_type, t.fallback.as_deref().unwrap_or(""));
            }
            let n_fallback = r.tensors.iter().filter(|t| t.fallback.is_some()).count();
            if n_fallback > 3 {
                println!("fallback: … {} tensors in all", n_fallback);
            }
            println!(
                "wrote {}: {} bytes, {:.3} bits/weight over {} parameters; tensor types {:?}",
                a.out.display(),
                r.file_bytes,
                r.bits_per_weight,
                r.n_params,
                by_type
            );
            let report = a.out.with_extension("export.json");
            std::fs::write(&report, serde_json::to_string_pretty(&r)?).with_context(|| report.display().to_string())?;
        }
    }
    Ok(())
}
