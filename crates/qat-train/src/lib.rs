//! Quantization-aware training: the run config ([`config`]), the optimizer ([`optim`]), losses
//! ([`loss`]), checkpoints ([`checkpoint`]) and the loop ([`train`]); evaluations come from
//! `qat-eval`.

pub mod activations;
pub mod blockwise;
pub mod checkpoint;
pub mod config;
pub mod fused_loss;
pub mod interrupt;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod params;
pub mod plot;
pub mod slurm;
pub mod speed;
pub mod sweep;
pub mod tensorboard;
pub mod train;

pub use config::RunConfig;
pub use train::{RunOptions, RunSummary, Trained, save_final, train};

use std::path::Path;

/// What can fail in a run, a sweep or their files. The messages name the file, config field or
/// step concerned; errors of the crates below are wrapped as they are.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file read or written (`path: problem`).
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    /// A run config that cannot work (the file and the field).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The run stopped before its end, by a signal or as asked; the same command continues it.
    #[error("{0}")]
    Stopped(String),
    /// A run, stage or sweep that cannot start or go on.
    #[error("{0}")]
    Run(String),
    #[error(transparent)]
    Model(#[from] qat_model::ModelError),
    #[error(transparent)]
    Quant(#[from] qat_quant::QuantError),
    #[error(transparent)]
    Data(#[from] qat_data::DataError),
    #[error(transparent)]
    Eval(#[from] qat_eval::EvalError),
    #[error(transparent)]
    Tokenizer(#[from] qat_tokenizer::TokenizerError),
}

impl From<burn::tensor::DataError> for TrainError {
    fn from(e: burn::tensor::DataError) -> Self {
        TrainError::Run(format!("tensor data: {e:?}"))
    }
}

impl TrainError {
    pub fn file(path: &Path, msg: impl std::fmt::Display) -> Self {
        TrainError::File { path: path.display().to_string(), msg: msg.to_string() }
    }
}

/// Creates `path` all at once: `write` fills a hidden temporary file beside it (same
/// filesystem), which is renamed onto `path` if it succeeded and removed if not, so a crash
/// never leaves a half-written file where a reader (a resume, a chart viewer) looks.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<(), TrainError>) -> Result<(), TrainError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // The extension is kept: some writers pick the format by it (PNG).
    let tmp = path.with_file_name(format!(".{}.{name}", std::process::id()));
    match write(&tmp) {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|e| TrainError::file(path, e)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
