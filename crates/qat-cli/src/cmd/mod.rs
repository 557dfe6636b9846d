pub mod bench;
pub mod eval;
pub mod export;
pub mod generate;
pub mod import;
pub mod logits;
pub mod plot;
pub mod quantize;
pub mod rotate;
pub mod sweep;
pub mod synthesize;
pub mod train;
pub mod verify_export;

use anyhow::Context;
use burn::tensor::Device;

/// The compute device named on the command line (`cpu`, `vulkan[:N]`, `wgpu[:N]`).
pub fn device(name: &str) -> anyhow::Result<Device> {
    Ok(qat_train::train::parse_device(name)?)
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

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    /// Every word a flag accepts parses through serde (the run config's TOML) to the same value.
    fn flag_words_are_config_words<T: ValueEnum + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>() {
        for v in T::value_variants() {
            let word = v.to_possible_value().expect("no skipped variants").get_name().to_string();
            let parsed: T = serde_json::from_value(serde_json::Value::String(word.clone()))
                .unwrap_or_else(|e| panic!("`{word}` is a flag word but not a config word: {e}"));
            assert_eq!(&parsed, v, "`{word}`");
        }
    }

    #[test]
    fn cli_enums_accept_the_config_words() {
        flag_words_are_config_words::<qat_quant::HfDtype>();
        flag_words_are_config_words::<qat_quant::policy::SchemeChoice>();
        flag_words_are_config_words::<qat_quant::Granularity>();
        flag_words_are_config_words::<qat_quant::ScaleInit>();
        flag_words_are_config_words::<qat_export::HighPrecision>();
        flag_words_are_config_words::<qat_train::speed::BenchMode>();
        flag_words_are_config_words::<qat_train::config::ComputeDtype>();
        flag_words_are_config_words::<qat_model::SaveDtype>();
    }
}
