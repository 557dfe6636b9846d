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
