pub mod bench;
pub mod eval;
pub mod export;
pub mod generate;
pub mod import;
pub mod logits;
pub mod plot;
pub mod quantize;
pub mod sweep;
pub mod train;
pub mod verify_export;

use anyhow::Context;
use burn::tensor::Device;

/// The compute device named on the command line (`cpu`, `vulkan[:N]`, `wgpu[:N]`).
pub fn device(name: &str) -> anyhow::Result<Device> {
    qat_train::train::parse_device(name).map_err(anyhow::Error::msg)
}

/// A checkpoint directory from a command-line model argument: the directory, or the Hub cache
/// snapshot of the model id it spells (`org/name[@revision]`, downloaded when missing and
/// online; `qat_model::hub`).
pub fn model_dir(spec: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    Ok(qat_model::hub::resolve(spec)?)
}

/// Loads a checkpoint directory's model onto `device`.
pub fn load_model(dir: &std::path::Path, device: &Device) -> anyhow::Result<qat_model::CausalLm> {
    let ckpt = qat_model::Checkpoint::open(dir).with_context(|| format!("opening checkpoint {}", dir.display()))?;
    Ok(qat_model::CausalLm::from_checkpoint(&ckpt, device)?)
}
