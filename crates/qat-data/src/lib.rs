//! Training data for QAT: sources ([`source`]), tokenization with an on-disk cache
//! ([`tokenized`]), and the weighted mixer that packs documents into rows ([`mix`]).

pub mod mix;
pub mod source;
pub mod tokenized;

pub use mix::{Batch, DataConfig, Mixer, MixerState};
pub use source::{Document, Format, SourceConfig, Split};
pub use tokenized::{TokenizedSource, tokenize_source};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A problem in a source file; `line` when it is known.
    #[error("{path}{}: {msg}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Source { path: String, line: Option<usize>, msg: String },
    #[error("{0}")]
    Config(String),
}
