//! GGUF container reading and writing, and the ggml block formats qat imports and exports.
//!
//! The layout follows llama.cpp's `gguf.c` / `ggml-common.h` (summarised in
//! `shared/docs/formats.md` §3–4). Everything here is plain Rust over bytes so that it can be
//! fuzzed and tested without a tensor framework: [`reader`] parses untrusted files with bounds
//! checks on every count and offset, [`blocks`] (de)quantizes ggml blocks, [`writer`] writes a
//! file atomically (temp file, then rename).

pub mod blocks;
pub mod hf;
pub mod import;
pub mod reader;
pub mod value;
pub mod writer;

pub use blocks::GgmlType;
pub use reader::{GgufFile, GgufHeader, TensorInfo};
pub use value::Value;
pub use writer::GgufWriter;

/// Everything that can go wrong reading or writing GGUF; each variant says where.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a GGUF file: magic is {0:?}, expected \"GGUF\"")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    Version(u32),
    #[error("file truncated: needed {needed} bytes at offset {offset} while reading {what}, file has {len}")]
    Truncated { what: String, offset: usize, needed: usize, len: usize },
    #[error("corrupt GGUF: {0}")]
    Corrupt(String),
    #[error("metadata key `{0}` is missing")]
    MissingKey(String),
    #[error("metadata key `{key}` has type {found}, expected {expected}")]
    KeyType { key: String, found: &'static str, expected: &'static str },
    #[error("tensor `{0}` not found in the GGUF file")]
    MissingTensor(String),
    #[error("tensor `{name}`: ggml type {ty} is not supported for {op}")]
    Unsupported { name: String, ty: String, op: &'static str },
    #[error("tensor `{name}`: {msg}")]
    Tensor { name: String, msg: String },
    /// Values or bytes that do not fit the ggml block layout asked for.
    #[error("{0}")]
    Blocks(String),
}

pub type Result<T> = std::result::Result<T, GgufError>;
