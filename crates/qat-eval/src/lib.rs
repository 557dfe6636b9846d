//! How good a causal LM is: sliding-window perplexity on text, and zero-shot multiple-choice
//! accuracy scored exactly as lm-evaluation-harness (v0.4) scores it, so that a number qat
//! prints can be put beside a published one.
//!
//! [`perplexity`] scores token streams; [`choice`] turns (context, continuation) requests into
//! summed log-likelihoods and accuracies; [`tasks`] reads the benchmark files (HellaSwag, MMLU,
//! and llm-foundry's zero-shot layouts for ARC, PIQA, Winogrande and the like) into requests.
//! The training loop and `qat eval` both call this crate, so a run's metrics and a standalone
//! evaluation cannot drift apart.

pub mod choice;
pub mod perplexity;
pub mod report;
pub mod tasks;

pub use choice::{McItem, McResult, ScoreOptions, score_items};
pub use perplexity::{Perplexity, sliding_perplexity, token_nll};
pub use report::Report;
pub use tasks::Task;

/// What can go wrong reading a benchmark: each variant names the file, and the line where one
/// item is at fault.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}: {msg}")]
    Item { path: String, line: usize, msg: String },
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error(transparent)]
    Tokenizer(#[from] qat_tokenizer::TokenizerError),
}
