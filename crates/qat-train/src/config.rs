//! The run config (`qat train CONFIG.toml`): defaults, then the file, then `--set a.b=value`
//! overrides. Unknown keys and wrong types are errors naming the key; relative paths are
//! resolved against the config file's directory. The resolved config is saved in the run
//! directory and in every checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use qat_data::DataConfig;
use qat_quant::Policy;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelSection,
    #[serde(default)]
    pub quant: Policy,
    /// How the quantized weights are initialised before training (default: round to nearest
    /// with the scales of `quant.init`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationSection>,
    /// Block-by-block reconstruction after the initialisation, before end-to-end training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blockwise: Option<BlockwiseSection>,
    pub data: DataConfig,
    pub train: TrainSection,
    #[serde(default)]
    pub loss: LossSection,
    #[serde(default)]
    pub eval: EvalSection,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    pub output: OutputSection,
}

/// `[calibration]`: initialisation of the quantized weights from calibration data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSection {
    pub method: CalibrationMethod,
    /// Calibration rows of `data.seq_len` tokens, drawn from the data mix (they are the first
    /// rows the mixer yields, so the training batches are unchanged).
    #[serde(default = "calibration_rows")]
    pub rows: usize,
    /// GPTQ's settings ([`qat_quant::GptqOptions`]).
    #[serde(default = "gptq_damp")]
    pub damp: f64,
    #[serde(default = "gptq_block")]
    pub block_size: usize,
    #[serde(default)]
    pub act_order: bool,
    #[serde(default)]
    pub refit_scales: bool,
    #[serde(default)]
    pub asymmetric: f64,
    /// With tied embeddings that are quantized: calibrate them as the output head too
    /// ([`qat_model::gptq_model`]'s `tied_head`); else they keep `quant.init`'s rounding.
    #[serde(default)]
    pub tied_head: bool,
}

/// `[blockwise]`: each decoder block trained in turn to reproduce the full-precision model's
/// block output ([`crate::blockwise`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockwiseSection {
    /// Training rows of `data.seq_len` tokens (the first rows of the data mix).
    pub rows: usize,
    /// Held-out rows (the rows after those) for early stopping.
    #[serde(default = "blockwise_val_rows")]
    pub val_rows: usize,
    /// Passes over the rows per block; the best epoch by held-out loss is kept.
    pub epochs: usize,
    /// Learning rate of weights (0 freezes them: scales only).
    pub lr: f64,
    /// Learning rate of quantizer scales.
    pub scale_lr: f64,
    /// Rows per optimizer step.
    #[serde(default = "blockwise_batch")]
    pub batch_size: usize,
    /// Stop a block after this many epochs without a lower held-out loss.
    #[serde(default = "blockwise_patience")]
    pub patience: usize,
    /// What is reconstructed ([`crate::blockwise::reconstruction_loss`]).
    #[serde(default)]
    pub loss: ReconstructionLoss,
    /// Where the calibration rows' activations are kept: `memory`, or `disk` (memory-mapped
    /// files in the stage's state directory, for models whose activations do not fit).
    #[serde(default)]
    pub activations: crate::activations::Placement,
}

/// The block-wise reconstruction loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconstructionLoss {
    /// Mean squared error over rows, positions and channels.
    #[default]
    Mse,
    /// Per token, the squared error relative to the target's squared norm, averaged over
    /// tokens: what the next block's RMSNorm sees, and not dominated by the few tokens that
    /// carry massive activations.
    TokenRelative,
}

fn blockwise_val_rows() -> usize {
    8
}
fn blockwise_batch() -> usize {
    4
}
fn blockwise_patience() -> usize {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CalibrationMethod {
    /// Error-compensating rounding in Hessian order, block by block ([`qat_model::gptq_model`]).
    Gptq,
}

fn calibration_rows() -> usize {
    32
}
fn gptq_damp() -> f64 {
    qat_quant::GptqOptions::default().damp
}
fn gptq_block() -> usize {
    qat_quant::GptqOptions::default().block_size
}

impl CalibrationSection {
    pub fn gptq_options(&self) -> qat_quant::GptqOptions {
        qat_quant::GptqOptions {
            damp: self.damp,
            block_size: self.block_size,
            act_order: self.act_order,
            refit_scales: self.refit_scales,
            asymmetric: self.asymmetric,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Hugging Face checkpoint directory, or a Hub model id `org/name[@revision]` (resolved to
    /// its snapshot in the Hub cache when no such directory exists beside the config).
    pub path: PathBuf,
    /// `cpu` (Burn's flex backend); GPU backends when built with their feature.
    #[serde(default = "cpu")]
    pub device: String,
    /// Precision of matrix products: `f32` (default), or `bf16` / `f16` autocast (products in
    /// half precision, parameters, gradients, optimizer state and everything else f32).
    #[serde(default)]
    pub compute_dtype: ComputeDtype,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "lower"))]
pub enum ComputeDtype {
    #[default]
    F32,
    Bf16,
    F16,
}

impl ComputeDtype {
    pub fn float_dtype(self) -> Option<burn::tensor::FloatDType> {
        match self {
            ComputeDtype::F32 => None,
            ComputeDtype::Bf16 => Some(burn::tensor::FloatDType::BF16),
            ComputeDtype::F16 => Some(burn::tensor::FloatDType::F16),
        }
    }
}

fn cpu() -> String {
    "cpu".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Cosine,
    Linear,
    Constant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Rows per optimizer step.
    pub batch_size: usize,
    /// Rows per forward/backward; gradients are accumulated over batch_size / micro_batch_size.
    #[serde(default)]
    pub micro_batch_size: Option<usize>,
    /// Stop after this many optimizer steps (0 = use max_tokens; both 0 = evaluate the
    /// full-precision and round-to-nearest models only, and export the latter).
    #[serde(default)]
    pub max_steps: usize,
    /// Stop after this many training tokens (rounded up to whole steps; 0 = use max_steps).
    #[serde(default)]
    pub max_tokens: u64,
    pub lr: f64,
    /// Learning rate of quantizer scales (default: lr).
    #[serde(default)]
    pub scale_lr: Option<f64>,
    #[serde(default)]
    pub weight_decay: f64,
    /// Weight decay of quantizer scales (default 0: decaying a step size has no meaning).
    #[serde(default)]
    pub scale_weight_decay: f64,
    #[serde(default = "betas")]
    pub betas: [f64; 2],
    #[serde(default = "eps")]
    pub eps: f64,
    /// Warmup as a fraction of all steps.
    #[serde(default)]
    pub warmup_fraction: f64,
    #[serde(default = "cosine")]
    pub schedule: Schedule,
    /// Final learning rate as a fraction of the peak.
    #[serde(default)]
    pub min_lr_ratio: f64,
    /// Global gradient-norm clipping (0 = off).
    #[serde(default)]
    pub clip_grad_norm: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "yes")]
    pub train_weights: bool,
    #[serde(default = "yes")]
    pub train_scales: bool,
    /// A NaN/inf loss or gradient skips the step; this many in a row stop the run.
    #[serde(default = "max_bad")]
    pub max_consecutive_bad_steps: usize,
}

fn betas() -> [f64; 2] {
    [0.9, 0.95]
}
fn eps() -> f64 {
    1e-8
}
fn cosine() -> Schedule {
    Schedule::Cosine
}
fn yes() -> bool {
    true
}
fn max_bad() -> usize {
    5
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KdKind {
    None,
    ForwardKl,
    ReverseKl,
    Cakld,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossSection {
    pub ce_weight: f64,
    /// Distillation from the frozen full-precision starting model.
    pub kd: KdKind,
    pub kd_weight: f64,
}

impl Default for LossSection {
    fn default() -> Self {
        LossSection { ce_weight: 1.0, kd: KdKind::None, kd_weight: 1.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Evaluate every N steps (0 = only before and after training).
    pub every: usize,
    /// Validation rows per source.
    pub val_rows: usize,
    /// Text files for sliding-window perplexity.
    pub perplexity: Vec<PathBuf>,
    pub perplexity_max_tokens: usize,
    pub perplexity_window: usize,
    /// HellaSwag JSONL and how many items to score (0 = all).
    pub hellaswag: Option<PathBuf>,
    pub hellaswag_limit: usize,
    /// MMLU directory (dev/val/test CSVs), split, and how many questions (0 = all).
    pub mmlu: Option<PathBuf>,
    pub mmlu_split: String,
    pub mmlu_limit: usize,
    /// Zero-shot JSONL files in llm-foundry's layouts (ARC, PIQA, Winogrande, …), reported
    /// under their file stems, and how many items of each to score (0 = all).
    pub mc: Vec<PathBuf>,
    pub mc_limit: usize,
}

impl EvalSection {
    /// The multiple-choice benchmarks this section asks for.
    pub fn tasks(&self) -> Vec<qat_eval::Task> {
        let mut tasks: Vec<qat_eval::Task> = self.hellaswag.iter().map(|p| qat_eval::Task::HellaSwag(p.clone())).collect();
        tasks.extend(self.mmlu.iter().map(|p| qat_eval::Task::Mmlu { dir: p.clone(), split: self.mmlu_split.clone() }));
        tasks.extend(self.mc.iter().map(|p| qat_eval::Task::Jsonl(p.clone())));
        tasks
    }

    /// How many items of `task` to score (0 = all).
    pub fn limit_for(&self, task: &qat_eval::Task) -> usize {
        match task {
            qat_eval::Task::HellaSwag(_) => self.hellaswag_limit,
            qat_eval::Task::Mmlu { .. } => self.mmlu_limit,
            qat_eval::Task::Jsonl(_) => self.mc_limit,
        }
    }
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            every: 0,
            val_rows: 4,
            perplexity: Vec::new(),
            perplexity_max_tokens: 8192,
            perplexity_window: 512,
            hellaswag: None,
            hellaswag_limit: 0,
            mmlu: None,
            mmlu_split: "test".into(),
            mmlu_limit: 0,
            mc: Vec::new(),
            mc_limit: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// Save every N steps (0 = only at the end).
    pub every: usize,
    /// Checkpoints kept (oldest removed first).
    pub keep: usize,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection { every: 0, keep: 2 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Run directory (metrics, checkpoints, plots, final model).
    pub dir: PathBuf,
    /// Also write every metrics record as TensorBoard scalars to `dir/tb/`
    /// ([`crate::tensorboard`]).
    #[serde(default)]
    pub tensorboard: bool,
}

/// A config error, naming the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {msg}")]
pub struct ConfigError {
    pub file: String,
    pub msg: String,
}

/// Applies `section.key=value` to a TOML tree; the value is parsed as TOML (so `1e-4`,
/// `true`, `"text"`, `[1, 2]`) or taken as a bare string. In a list of tables an index names an
/// element (`data.sources.0.weight=2`, or `data.sources.0={…}` for the whole element), and the
/// index one past the end appends one (`data.sources.6={path="…",…}`: a source added to a
/// config's mix without restating the others).
pub(crate) fn apply_override(root: &mut toml::Table, assignment: &str) -> Result<(), String> {
    let (key, value) = assignment.split_once('=').ok_or_else(|| format!("--set {assignment}: expected key=value"))?;
    let key = key.trim();
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t.remove("v").expect("parsed"),
        Err(_) => toml::Value::String(value.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut table = root;
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        // `data.sources.0.weight`: index into arrays of tables.
        let next = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match next {
            toml::Value::Table(t) => t,
            toml::Value::Array(items) => {
                let idx: usize = parts.get(i + 1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("--set {key}: `{part}` is a list; give an index"))?;
                if idx > items.len() {
                    return Err(format!("--set {key}: `{part}` has {} elements; index {idx} is neither one of them nor the next", items.len()));
                }
                if idx == items.len() {
                    items.push(toml::Value::Table(toml::Table::new()));
                }
                if i + 2 == parts.len() {
                    items[idx] = value;
                    return Ok(());
                }
                let toml::Value::Table(t) = &mut items[idx] else {
                    return Err(format!("--set {key}: `{part}.{idx}` is not a table"));
                };
                let rest = parts[i + 2..].join(".");
                return apply_override(t, &format!("{rest}={}", assignment.split_once('=').unwrap().1));
            }
            _ => return Err(format!("--set {key}: `{part}` is not a table")),
        };
    }
    Ok(())
}

impl RunConfig {
    /// Reads a config file and applies overrides.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let err = |msg: String| ConfigError { file: file.clone(), msg };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| err(format!("malformed TOML: {e}")))?;
        for o in overrides {
            apply_override(&mut table, o).map_err(err)?;
        }
        let mut cfg: RunConfig = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| err(e.to_string()))?;
        let base = directory_of(path).map_err(err)?;
        let model = cfg.model.path.clone();
        cfg.resolve_paths(&base);
        // A Hub model id (`org/name[@revision]`) that is no directory beside the config: its
        // cache snapshot (downloaded when missing and online).
        if !cfg.model.path.is_dir() && model.is_relative() && qat_model::hub::parse_id(&model.to_string_lossy()).is_some() {
            cfg.model.path = qat_model::hub::resolve_id(&model.to_string_lossy()).map_err(|e| err(format!("model.path: {e}")))?;
        }
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        // Lexically normalised absolute paths, so the resolved config saved in the run
        // directory means the same wherever it is read from.
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                let mut out = PathBuf::new();
                for c in base.join(&*p).components() {
                    match c {
                        std::path::Component::ParentDir => {
                            out.pop();
                        }
                        std::path::Component::CurDir => {}
                        other => out.push(other),
                    }
                }
                *p = out;
            }
        };
        fix(&mut self.model.path);
        fix(&mut self.output.dir);
        self.data.sources.iter_mut().for_each(|s| fix(&mut s.path));
        if let Some(d) = &mut self.data.cache_dir {
            fix(d);
        }
        self.eval.perplexity.iter_mut().for_each(fix);
        self.eval.mc.iter_mut().for_each(fix);
        if let Some(p) = &mut self.eval.hellaswag {
            fix(p);
        }
        if let Some(p) = &mut self.eval.mmlu {
            fix(p);
        }
    }

    /// Checks values and that every referenced file exists, before anything is loaded.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let t = &self.train;
        if t.batch_size == 0 {
            return Err("train.batch_size must be positive".into());
        }
        let micro = self.micro_batch_size();
        if micro == 0 || !t.batch_size.is_multiple_of(micro) {
            return Err(format!("train.micro_batch_size = {micro} must divide train.batch_size = {}", t.batch_size));
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return Err(format!("train.lr = {}: must be positive", t.lr));
        }
        if !(0.0..1.0).contains(&t.warmup_fraction) {
            return Err(format!("train.warmup_fraction = {}: must be in [0, 1)", t.warmup_fraction));
        }
        if !(0.0..=1.0).contains(&t.min_lr_ratio) {
            return Err(format!("train.min_lr_ratio = {}: must be in [0, 1]", t.min_lr_ratio));
        }
        if t.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return Err(format!("train.betas = {:?}: each must be in [0, 1)", t.betas));
        }
        if !t.train_weights && !t.train_scales {
            return Err("train.train_weights and train.train_scales are both false: nothing to train".into());
        }
        if self.loss.ce_weight < 0.0 || self.loss.kd_weight < 0.0 || (self.loss.ce_weight == 0.0 && self.loss.kd == KdKind::None) {
            return Err("loss: weights must be non-negative and some loss must be on".into());
        }
        if let Some(c) = &self.calibration {
            if c.rows == 0 {
                return Err("calibration.rows must be positive".into());
            }
            if !(c.damp.is_finite() && c.damp > 0.0) || c.block_size == 0 {
                return Err(format!("calibration: damp = {} must be positive and block_size = {} positive", c.damp, c.block_size));
            }
            if !(0.0..=1.0).contains(&c.asymmetric) {
                return Err(format!("calibration.asymmetric = {} must be in [0, 1]", c.asymmetric));
            }
        }
        if let Some(b) = &self.blockwise {
            if b.rows == 0 || b.val_rows == 0 || b.epochs == 0 || b.batch_size == 0 {
                return Err("blockwise: rows, val_rows, epochs and batch_size must be positive".into());
            }
            if !(b.lr >= 0.0 && b.scale_lr >= 0.0 && b.lr.is_finite() && b.scale_lr.is_finite()) || b.lr + b.scale_lr == 0.0 {
                return Err(format!("blockwise: lr = {} and scale_lr = {} must be non-negative, not both 0", b.lr, b.scale_lr));
            }
        }
        if self.data.sources.is_empty() {
            return Err("data.sources is empty".into());
        }
        if !self.model.path.is_dir() {
            return Err(format!("model.path: {} is not a directory", self.model.path.display()));
        }
        for (i, s) in self.data.sources.iter().enumerate() {
            if !s.path.is_file() {
                return Err(format!("data.sources[{i}].path: {} does not exist", s.path.display()));
            }
        }
        for (k, paths) in [("eval.perplexity", &self.eval.perplexity), ("eval.mc", &self.eval.mc)] {
            if let Some(p) = paths.iter().find(|p| !p.is_file()) {
                return Err(format!("{k}: {} does not exist", p.display()));
            }
        }
        for (k, p) in [("eval.hellaswag", &self.eval.hellaswag), ("eval.mmlu", &self.eval.mmlu)] {
            if let Some(p) = p
                && !p.exists()
            {
                return Err(format!("{k}: {} does not exist", p.display()));
            }
        }
        Ok(())
    }

    pub fn micro_batch_size(&self) -> usize {
        self.train.micro_batch_size.unwrap_or(self.train.batch_size)
    }

    /// Optimizer steps of the run.
    pub fn total_steps(&self) -> usize {
        if self.train.max_steps > 0 {
            self.train.max_steps
        } else {
            let per_step = (self.train.batch_size * self.data.seq_len) as u64;
            self.train.max_tokens.div_ceil(per_step) as usize
        }
    }
}

/// The absolute directory of a config file, which anchors its relative paths. (A bare file name
/// has the empty path as its parent: the current directory.)
pub(crate) fn directory_of(file: &Path) -> Result<PathBuf, String> {
    let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::path::absolute(parent).map_err(|e| format!("{}: {e}", file.display()))
}
