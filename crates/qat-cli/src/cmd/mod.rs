pub mod bench;
pub mod eval;
pub mod export;
pub mod generate;
pub mod import;
pub mod logits;
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

/// Loads a checkpoint directory's model onto `device`.
pub fn load_model(dir: &std::path::Path, device: &Device) -> anyhow::Result<qat_model::CausalLm> {
    let ckpt = qat_model::Checkpoint::open(dir).with_context(|| format!("opening checkpoint {}", dir.display()))?;
    Ok(qat_model::CausalLm::from_checkpoint(&ckpt, device)?)
}
