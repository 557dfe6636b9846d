use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::{Int, Tensor, TensorData};
use qat_model::AttentionBatch;

/// Write the logits of a token sequence as JSON (for comparisons with other implementations).
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (Hugging Face layout).
    model: PathBuf,
    /// Comma-separated token ids.
    #[arg(long)]
    tokens: String,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(mut a: Args) -> anyhow::Result<()> {
    a.model = super::model_dir(&a.model)?;
    let device = burn::tensor::Device::flex();
    let model = super::load_model(&a.model, &device)?;
    let ids: Vec<i64> =
        a.tokens.split(',').map(|s| s.trim().parse::<i64>().with_context(|| format!("--tokens: `{s}` is not a token id"))).collect::<Result<_, _>>()?;
    let t = ids.len();
    anyhow::ensure!(t > 0, "--tokens is empty");
    if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as usize >= model.config.vocab_size) {
        anyhow::bail!("--tokens: id {bad} is outside the vocabulary of {}", model.config.vocab_size);
    }
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &device);
    let logits = model.forward(tokens, &AttentionBatch::causal(&[t], t, 0, &device), None);
    let v = model.config.vocab_size;
    let flat: Vec<f32> = logits.into_data().try_to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let rows: Vec<&[f32]> = flat.chunks(v).collect();
    std::fs::write(&a.out, serde_json::to_string(&rows)?).with_context(|| a.out.display().to_string())?;
    Ok(())
}
