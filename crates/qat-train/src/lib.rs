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
