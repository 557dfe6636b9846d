//! `qat train`: one function that reads top to bottom — setup, then the step loop with
//! evaluation and checkpoints, then the final report.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use qat_data::{Mixer, MixerState, tokenize_source};
use qat_eval::Report;
use qat_model::{AttentionBatch, CausalLm, Checkpoint};
use qat_quant::QuantSpec;
use qat_tokenizer::Tokenizer;

use crate::TrainError;
use crate::checkpoint::{self, TrainState};
use crate::config::{KdKind, RunConfig};
use crate::metrics::{Evaluation, MetricsLog, Record, TrainStep};
use crate::optim::{AdamW, GroupHyper, grad_norm, lr_factor};
use crate::{loss, params};

/// How a run ended and what it measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub steps: usize,
    pub skipped_steps: usize,
    pub tokens: u64,
    pub wall_seconds: f64,
    pub tokens_per_second: f64,
    pub peak_rss_mib: f64,
    /// `None` for an evaluation-only run.
    pub final_train_loss: Option<f64>,
    /// The unquantized starting model.
    pub fp_eval: Report,
    /// The quantized model before end-to-end training: round-to-nearest with the initial
    /// scales, or as `[calibration]` and `[blockwise]` left it.
    pub first_eval: Report,
    pub final_eval: Report,
    /// Share of the validation-loss gap between RTN and full precision closed by training.
    pub val_gap_recovered: Option<f64>,
    pub final_model: PathBuf,
    pub losses: Vec<f64>,
}

/// What [`train`] gives its caller, which writes the outputs it wants ([`save_final`],
/// [`crate::plot::plot_run`]).
#[derive(Debug)]
pub struct Trained {
    pub summary: RunSummary,
    /// The trained model (no autodiff graphs); `None` when the run had finished before this call.
    pub model: Option<CausalLm>,
}

/// Options of one invocation that are not part of the run config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Refuse to start a fresh run: there must be a checkpoint or a partial stage to continue
    /// (without it, a directory holding state of the same config is continued anyway).
    pub resume: bool,
    /// Stop (as if interrupted) after this many steps of this invocation; for resume tests.
    pub stop_after: Option<usize>,
    /// Stop (as if interrupted) after this many blocks of block-wise reconstruction trained
    /// in this invocation; for resume tests.
    pub stop_after_blocks: Option<usize>,
    pub progress_bar: bool,
}

/// The compute device: `cpu` (Burn's flex backend), or with the matching cargo feature
/// `vulkan:N` / `wgpu:N` (the N-th discrete GPU) or `vulkan` / `wgpu` alone (the adapter wgpu
/// ranks best, or the one `CUBECL_WGPU_DEFAULT_DEVICE` names, e.g. `IntegratedGpu(0)`).
pub fn parse_device(name: &str) -> Result<Device, TrainError> {
    let (kind, index) = match name.split_once(':') {
        Some((k, i)) => (k, Some(i.parse::<usize>().map_err(|_| TrainError::Run(format!("device `{name}`: `{i}` is not a GPU index")))?)),
        None => (name, None),
    };
    #[cfg(any(feature = "vulkan", feature = "wgpu"))]
    let gpu = index.map_or(burn::tensor::DeviceKind::DefaultDevice, burn::tensor::DeviceKind::DiscreteGpu);
    match kind {
        "cpu" | "flex" => Ok(Device::flex()),
        #[cfg(feature = "vulkan")]
        "vulkan" => Ok(Device::vulkan(gpu)),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(gpu)),
        // Only the GPU kinds this build lacks reach this arm.
        #[allow(unreachable_patterns)]
        "vulkan" | "wgpu" => {
            let _ = index;
            Err(TrainError::Run(format!("device `{name}`: this qat was built without the `{kind}` feature (cargo build --release --features {kind})")))
        }
        other => Err(TrainError::Run(format!("unknown device `{other}` (cpu, vulkan[:N], wgpu[:N])"))),
    }
}

/// Sets `require_grad`: on the quantizer scales (the keys of `scale_params`) if `scales`, on
/// everything else if `weights`.
struct Freeze<'a> {
    weights: bool,
    scales: bool,
    scale_params: &'a HashMap<ParamId, QuantSpec>,
}

impl ModuleMapper for Freeze<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let train = if self.scale_params.contains_key(&param.id) { self.scales } else { self.weights };
        let (id, t, mapper) = param.consume();
        let t = if train { t.require_grad() } else { t.set_require_grad(false) };
        Param::from_mapped_value(id, t, mapper)
    }
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Evaluation of a model snapshot: validation loss per source, perplexity, benchmarks.
pub fn evaluate(model: &CausalLm, tok: &Tokenizer, mixer: &Mixer, cfg: &RunConfig) -> Result<Report, TrainError> {
    let device = model.embed_tokens.weight.val().device();
    let mut out = Report::default();
    let (mut nll_total, mut n_total) = (0.0f64, 0usize);
    for (s, name) in mixer.source_names().iter().enumerate() {
        let Some(b) = mixer.validation_batch(s, cfg.eval.val_rows) else {
            continue;
        };
        let targets = loss::Targets::new(&b.targets, b.rows, b.seq_len, &device);
        if targets.count == 0 {
            continue;
        }
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(b.tokens.iter().map(|&x| x as i64).collect::<Vec<_>>(), [b.rows, b.seq_len]), &device);
        let logits = model.forward(tokens, &AttentionBatch::packed(&b.segments, &device), None);
        let nll = loss::ce_sum(logits, &targets).into_scalar::<f32>() as f64;
        out.val_loss_by_source.insert(name.to_string(), nll / targets.count as f64);
        nll_total += nll;
        n_total += targets.count;
    }
    out.val_loss = (n_total > 0).then(|| nll_total / n_total as f64);
    for p in &cfg.eval.perplexity {
        let text = std::fs::read_to_string(p).map_err(|e| TrainError::file(p, e))?;
        let mut ids = tok.encode(&text, false)?;
        if cfg.eval.perplexity_max_tokens > 0 {
            ids.truncate(cfg.eval.perplexity_max_tokens);
        }
        let w = cfg.eval.perplexity_window.min(model.config.max_position_embeddings);
        let ppl = qat_eval::sliding_perplexity(model, &ids, w, w / 2);
        let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        out.perplexity.insert(name, ppl.ppl());
    }
    for task in cfg.eval.tasks() {
        let r = task.evaluate(model, tok, cfg.eval.limit_for(&task), qat_eval::ScoreOptions::default())?;
        out.tasks.insert(task.name().to_string(), r);
    }
    Ok(out)
}

/// The run's data: every source tokenized (through the cache) and checked against the model's
/// vocabulary, in a mixer seeded by `train.seed`.
pub fn load_mixer(cfg: &RunConfig, tok: &Tokenizer, ckpt: &Checkpoint) -> Result<Mixer, TrainError> {
    // The model config's id first: tokenizer files sometimes map "</s>" to a duplicate id.
    let eos = ckpt.config.eos_token_ids.first().copied().or(tok.eos_id());
    let cache = cfg.data.cache_dir.clone().unwrap_or_else(|| PathBuf::from(".qat-cache"));
    let mut sources = Vec::new();
    for s in &cfg.data.sources {
        let t = tokenize_source(s, tok, eos, Some(&cache))?;
        if t.max_token_id() as usize >= ckpt.config.vocab_size {
            return Err(TrainError::Run(format!(
                "{}: the tokenizer produced id {}, outside the model's vocab_size {}",
                s.path.display(),
                t.max_token_id(),
                ckpt.config.vocab_size
            )));
        }
        sources.push(t);
    }
    Ok(Mixer::new(sources, &cfg.data.mix, cfg.data.seq_len, cfg.data.val_fraction, cfg.train.seed)?)
}

/// The first rows the mixer yields, cut into consecutive sets of `counts[k]` rows in batches of
/// at most `batch` rows; the mixer's state is put back afterwards, so training sees the same
/// batches as if these rows had not been drawn.
pub fn first_rows(mixer: &mut Mixer, counts: &[usize], batch: usize, device: &Device) -> Result<Vec<Vec<qat_model::CalibrationBatch>>, TrainError> {
    let saved = mixer.state.clone();
    let mut sets = Vec::new();
    for &count in counts {
        let mut batches = Vec::new();
        let mut left = count;
        while left > 0 {
            let b = mixer.next_batch(left.min(batch));
            left -= b.rows;
            let ids: Vec<i64> = b.tokens.iter().map(|&x| x as i64).collect();
            batches.push(qat_model::CalibrationBatch {
                tokens: Tensor::from_data(TensorData::new(ids, [b.rows, b.seq_len]), device),
                attention: AttentionBatch::packed(&b.segments, device),
            });
        }
        sets.push(batches);
    }
    mixer.restore(saved)?;
    Ok(sets)
}

/// Block-wise reconstruction of `model` ([`crate::blockwise`]) on the first rows of the data
/// mix, with its report (per-block held-out losses).
#[allow(clippy::too_many_arguments)]
fn blockwise_stage(
    model: CausalLm,
    bw: &crate::config::BlockwiseSection,
    cfg: &RunConfig,
    ckpt: &Checkpoint,
    mixer: &mut Mixer,
    device: &Device,
    state_dir: &Path,
    stop_after: Option<usize>,
) -> Result<(CausalLm, serde_json::Value), TrainError> {
    let started = Instant::now();
    let mut sets = first_rows(mixer, &[bw.rows, bw.val_rows], bw.batch_size, device)?;
    let (train_rows, val_rows) = (sets.remove(0), sets.remove(0));
    let teacher = CausalLm::from_checkpoint(ckpt, device)?;
    eprintln!("blockwise: {} rows of {} tokens, {} held out, up to {} epochs per block", bw.rows, cfg.data.seq_len, bw.val_rows, bw.epochs);
    let (model, reports) = crate::blockwise::reconstruct(model, &teacher, &train_rows, &val_rows, bw, cfg.quant.round_scales, state_dir, stop_after, |r| {
        eprintln!(
            "  block {}: held-out loss {:.4e} -> {:.4e} (epoch {} of {}, {:.1} s)",
            r.block, r.initial_loss, r.final_loss, r.best_epoch, r.epochs_run, r.seconds
        )
    })?;
    let report = serde_json::json!({
        "rows": bw.rows,
        "val_rows": bw.val_rows,
        "tokens": bw.rows * cfg.data.seq_len,
        "seconds": started.elapsed().as_secs_f64(),
        "blocks": reports,
    });
    Ok((model, report))
}

/// Initialises the quantized weights and scales of `model` from calibration data
/// (`[calibration]`), with its report (GPTQ's per-module error estimates). The calibration rows
/// are the first rows the mixer yields; its state is put back afterwards, so training sees the
/// same batches as without calibration.
fn calibrate(
    model: CausalLm,
    cal: &crate::config::CalibrationSection,
    cfg: &RunConfig,
    ckpt: &Checkpoint,
    mixer: &mut Mixer,
    device: &Device,
) -> Result<(CausalLm, serde_json::Value), TrainError> {
    let started = Instant::now();
    let batches = first_rows(mixer, &[cal.rows], cfg.micro_batch_size(), device)?.remove(0);
    let plain = CausalLm::from_checkpoint(ckpt, device)?;
    let (plain, _) = plain.prepare_qat(&cfg.quant)?;
    eprintln!("calibration: GPTQ on {} rows of {} tokens", cal.rows, cfg.data.seq_len);
    let (plain, losses) = qat_model::gptq_model(plain, &batches, &cal.gptq_options(), cfg.quant.round_scales, cal.tied_head, |i, n| {
        eprintln!("  block {i}/{n}");
        // Calibration writes nothing to resume from: stop now rather than after the stage.
        match crate::interrupt::requested() {
            Some(signal) => Err(TrainError::Stopped(format!("calibration stopped by {signal} after block {i}/{n}; run the same command to start it again"))),
            None => Ok(()),
        }
    })?;
    let report = serde_json::json!({
        "method": cal.method,
        "rows": cal.rows,
        "tokens": cal.rows * cfg.data.seq_len,
        "seconds": started.elapsed().as_secs_f64(),
        "modules": losses,
    });
    Ok((params::load(model, &params::collect(&plain))?, report))
}

/// Writes a stage's report as `NAME.json` in the run directory; when a later stage follows,
/// with the evaluation of the model as this stage left it (`eval`), so every stage of a
/// recipe has its numbers. The last stage's model is the run's `eval` at step 0.
fn finish_stage(
    run_dir: &Path,
    name: &str,
    mut report: serde_json::Value,
    model: &CausalLm,
    more_follows: bool,
    eval: impl Fn(&CausalLm) -> Result<Report, TrainError>,
) -> Result<(), TrainError> {
    if more_follows {
        report["eval"] = serde_json::to_value(eval(&model.valid().convert_qat())?).expect("JSON");
    }
    let path = run_dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("JSON")).map_err(|e| TrainError::file(&path, e))
}

/// What a run directory already holds of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Finished,
    Checkpoints,
    PartialStage,
}

impl Held {
    fn description(self) -> &'static str {
        match self {
            Held::Finished => "a finished run",
            Held::Checkpoints => "checkpoints",
            Held::PartialStage => "a partial block-wise stage",
        }
    }
}

/// Runs (or resumes) a training run.
pub fn train(cfg: &RunConfig, opts: &RunOptions) -> Result<Trained, TrainError> {
    // ---- setup -------------------------------------------------------------------------
    let run_dir = cfg.output.dir.clone();
    let ckpt_root = run_dir.join("checkpoints");
    let latest = checkpoint::latest(&ckpt_root)?;
    // Block-wise reconstruction saves its finished blocks here; before the first checkpoint a
    // resume continues that stage.
    let blockwise_dir = run_dir.join("blockwise");
    let partial_stage = latest.is_none() && blockwise_dir.is_dir();
    let summary_path = run_dir.join("summary.json");
    let cfg_text = toml::to_string_pretty(cfg).expect("a run config is TOML");
    // The same command is the way to continue: a directory holding state of this config resumes
    // (or, finished, reports its summary); state of another config is never overwritten.
    let held = if summary_path.is_file() {
        Some(Held::Finished)
    } else if latest.is_some() {
        Some(Held::Checkpoints)
    } else if partial_stage {
        Some(Held::PartialStage)
    } else {
        None
    };
    if let Some(what) = held.map(Held::description) {
        // Written at every start once this check passed: the config of the state held.
        let saved_path = run_dir.join("config.toml");
        let saved = std::fs::read_to_string(&saved_path)
            .map_err(|e| TrainError::Run(format!("{} holds {what}, but its config: {}: {e}", run_dir.display(), saved_path.display())))?;
        // A config written by an earlier qat lacks the keys added since (with their defaults):
        // compare it as this version reads it.
        let same = saved == cfg_text || toml::from_str::<RunConfig>(&saved).is_ok_and(|c| toml::to_string_pretty(&c).is_ok_and(|t| t == cfg_text));
        if !same {
            return Err(TrainError::Run(format!(
                "{} holds {what} of a different config ({}); choose another output.dir, or delete the directory to start over",
                run_dir.display(),
                saved_path.display()
            )));
        }
    }
    if held == Some(Held::Finished) {
        let summary: RunSummary = serde_json::from_str(&std::fs::read_to_string(&summary_path).map_err(|e| TrainError::file(&summary_path, e))?)
            .map_err(|e| TrainError::file(&summary_path, e))?;
        eprintln!("{} already finished ({} steps); nothing to do", run_dir.display(), summary.steps);
        return Ok(Trained { summary, model: None });
    }
    if opts.resume && held.is_none() {
        return Err(TrainError::Run(format!("{}: no checkpoint to resume from", run_dir.display())));
    }
    std::fs::create_dir_all(&run_dir).map_err(|e| TrainError::file(&run_dir, e))?;
    let saved_path = run_dir.join("config.toml");
    std::fs::write(&saved_path, &cfg_text).map_err(|e| TrainError::file(&saved_path, e))?;

    let device = parse_device(&cfg.model.device)?;
    let ad_device = device.clone().autodiff();
    let ckpt = Checkpoint::open(&cfg.model.path)?;
    if cfg.data.seq_len > ckpt.config.max_position_embeddings {
        return Err(TrainError::Run(format!(
            "data.seq_len = {} exceeds the model's max_position_embeddings = {}",
            cfg.data.seq_len, ckpt.config.max_position_embeddings
        )));
    }
    let tok = Tokenizer::from_dir(&cfg.model.path)?;
    let mut mixer = load_mixer(cfg, &tok, &ckpt)?;

    let policy_table;
    let mut model = {
        let m = CausalLm::from_checkpoint(&ckpt, &ad_device)?;
        let (m, table) = m.prepare_qat(&cfg.quant)?;
        policy_table = table;
        let m = match cfg.quant.round_scales {
            Some(dtype) => m.round_scales(dtype)?.0,
            None => m,
        };
        m.with_compute_dtype(cfg.model.compute_dtype.float_dtype())
    };
    let teacher = match cfg.loss.kd {
        KdKind::None => None,
        _ => Some(CausalLm::from_checkpoint(&ckpt, &device)?.with_compute_dtype(cfg.model.compute_dtype.float_dtype())),
    };
    let total = cfg.total_steps();
    let warmup = (cfg.train.warmup_fraction * total as f64).round() as usize;
    let mut state = TrainState {
        step: 0,
        optimizer_step: 0,
        mixer: MixerState::default(),
        skipped_steps: 0,
        consecutive_bad: 0,
        elapsed_seconds: 0.0,
        fp_eval: Report::default(),
        first_eval: Report::default(),
        losses: Vec::new(),
    };
    let metrics_path = run_dir.join("metrics.jsonl");
    if latest.is_none()
        && let Some(cal) = &cfg.calibration
    {
        let (m, report) = calibrate(model, cal, cfg, &ckpt, &mut mixer, &device)?;
        model = m;
        finish_stage(&run_dir, "calibration", report, &model, cfg.blockwise.is_some() || total > 0, |m| evaluate(m, &tok, &mixer, cfg))?;
    }
    if latest.is_none()
        && let Some(bw) = &cfg.blockwise
    {
        let (m, report) = blockwise_stage(model, bw, cfg, &ckpt, &mut mixer, &device, &blockwise_dir, opts.stop_after_blocks)?;
        model = m;
        finish_stage(&run_dir, "blockwise", report, &model, total > 0, |m| evaluate(m, &tok, &mixer, cfg))?;
    }
    // The end-to-end stage's parameter groups, by structure: the stages above may have
    // replaced parameters (GPTQ writes new weights and scales).
    let t = &cfg.train;
    let scale_params = model.scale_params();
    model = model.map(&mut Freeze { weights: t.train_weights, scales: t.train_scales, scale_params: &scale_params });
    let mut opt = AdamW::new(
        GroupHyper { lr: t.lr, weight_decay: t.weight_decay },
        GroupHyper { lr: t.scale_lr.unwrap_or(t.lr), weight_decay: t.scale_weight_decay },
        scale_params,
        t.betas,
        t.eps,
    );
    opt.round_scales = cfg.quant.round_scales;
    if let Some(dir) = &latest {
        let checkpoint::Loaded { params: p, moments, masters, train: st } = checkpoint::load(dir)?;
        model = params::load(model, &p)?;
        opt.step = st.optimizer_step;
        opt.moments = moments;
        opt.masters = masters;
        mixer.restore(st.mixer.clone())?;
        crate::metrics::truncate(&metrics_path, st.step)?;
        state = st;
        eprintln!("resumed {} at step {}", run_dir.display(), state.step);
    } else {
        eprint!("{policy_table}");
        let _ = std::fs::remove_file(&metrics_path);
        let _ = std::fs::remove_dir_all(run_dir.join("tb"));
    }
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path).map_err(|e| TrainError::file(&metrics_path, e))?;
    let mut tensorboard = cfg.output.tensorboard.then(|| crate::tensorboard::EventWriter::create(&run_dir.join("tb"))).transpose()?;
    if let (Some(tb), Some(_)) = (&mut tensorboard, &latest) {
        tb.restart(state.step + 1)?;
    }
    let mut metrics = MetricsLog { file, tensorboard };
    if state.step == 0 {
        state.fp_eval = match &teacher {
            Some(t) => evaluate(t, &tok, &mixer, cfg)?,
            None => evaluate(&CausalLm::from_checkpoint(&ckpt, &device)?, &tok, &mixer, cfg)?,
        };
        state.first_eval = evaluate(&model.valid().convert_qat(), &tok, &mixer, cfg)?;
        metrics.write(&Record::EvalFp(Evaluation { step: 0, tokens: 0, eval: state.fp_eval.clone() }))?;
        metrics.write(&Record::Eval(Evaluation { step: 0, tokens: 0, eval: state.first_eval.clone() }))?;
    }

    // ---- the loop ----------------------------------------------------------------------
    let micro = cfg.micro_batch_size();
    let bar = opts.progress_bar.then(|| {
        let b = indicatif::ProgressBar::new(total as u64);
        b.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]").expect("valid template"));
        b.set_position(state.step as u64);
        b
    });
    let started = Instant::now();
    let elapsed_before = state.elapsed_seconds;
    let tokens_before = mixer.state.total_tokens;
    let mut steps_this_run = 0;
    while state.step < total {
        if opts.stop_after.is_some_and(|n| steps_this_run == n) {
            return Err(TrainError::Stopped(format!("stopped after {steps_this_run} steps as requested (--stop-after); resume with --resume")));
        }
        if let Some(signal) = crate::interrupt::requested() {
            // Arrived before this invocation's first step: the state on disk is current.
            return Err(TrainError::Stopped(format!("stopped by {signal} at step {}; run the same command to continue", state.step)));
        }
        let step_start = Instant::now();
        let lr_f = lr_factor(state.step, total, warmup, t.schedule, t.min_lr_ratio);
        let batches: Vec<_> = (0..t.batch_size / micro).map(|_| mixer.next_batch(micro)).collect();
        let n_targets: usize = batches.iter().map(|b| b.n_targets()).sum::<usize>().max(1);
        let mut accum = GradientsAccumulator::<CausalLm>::new();
        let (mut ce_total, mut kd_total) = (0.0f64, 0.0f64);
        for b in &batches {
            let ids: Vec<i64> = b.tokens.iter().map(|&x| x as i64).collect();
            let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [b.rows, b.seq_len]), &ad_device);
            let targets = loss::Targets::new(&b.targets, b.rows, b.seq_len, &ad_device);
            let logits = model.forward(tokens.clone(), &AttentionBatch::packed(&b.segments, &ad_device), None);
            let t_logits = teacher.as_ref().map(|t| Tensor::from_inner(t.forward(tokens.inner(), &AttentionBatch::packed(&b.segments, &device), None)));
            let objective = loss::objective(logits, t_logits, &targets, &cfg.loss, n_targets);
            ce_total += objective.ce_sum;
            kd_total += objective.kd_sum.unwrap_or(0.0);
            let total_loss = objective.loss;
            let grads = GradientsParams::from_grads(total_loss.backward(), &model);
            accum.accumulate(&model, grads);
        }
        let grads = accum.grads();
        let (ce_mean, kd_mean) = (ce_total / n_targets as f64, kd_total / n_targets as f64);
        let loss_value = cfg.loss.ce_weight * ce_mean + if teacher.is_some() { cfg.loss.kd_weight * kd_mean } else { 0.0 };
        let norm = grad_norm(&model, &grads);
        let tokens_step: u64 = batches.iter().map(|b| (b.rows * b.seq_len) as u64).sum();
        state.step += 1;
        steps_this_run += 1;
        if !loss_value.is_finite() || !norm.is_finite() {
            state.skipped_steps += 1;
            state.consecutive_bad += 1;
            metrics.write(&Record::Skipped { step: state.step, loss: loss_value.to_string(), grad_norm: norm.to_string() })?;
            if state.consecutive_bad >= t.max_consecutive_bad_steps {
                return Err(TrainError::Run(format!(
                    "{} consecutive steps had a non-finite loss or gradient (last loss {loss_value}, grad norm {norm}); stopped. The last good checkpoint in {} is intact",
                    state.consecutive_bad,
                    ckpt_root.display()
                )));
            }
            continue;
        }
        state.consecutive_bad = 0;
        let clip = if t.clip_grad_norm > 0.0 { (t.clip_grad_norm / (norm + 1e-6)).min(1.0) } else { 1.0 };
        model = opt.step(model, &grads, lr_f, clip);
        state.optimizer_step = opt.step;
        state.losses.push(loss_value);
        let dt = step_start.elapsed().as_secs_f64();
        let names = mixer.category_names();
        metrics.write(&Record::Train(TrainStep {
            step: state.step,
            tokens: mixer.state.total_tokens,
            loss: loss_value,
            ce: ce_mean,
            kd: teacher.is_some().then_some(kd_mean),
            lr: t.lr * lr_f,
            grad_norm: norm,
            tokens_per_second: tokens_step as f64 / dt,
            step_seconds: dt,
            category_tokens: names.iter().zip(&mixer.state.category_tokens).map(|(n, &c)| (n.to_string(), c)).collect(),
        }))?;
        if let Some(b) = &bar {
            b.set_position(state.step as u64);
            b.set_message(format!("loss {loss_value:.4}  lr {:.2e}  {} tok  {:.0} tok/s", t.lr * lr_f, mixer.state.total_tokens, tokens_step as f64 / dt));
        }
        let last = state.step == total;
        if cfg.eval.every > 0 && state.step.is_multiple_of(cfg.eval.every) && !last {
            let ev = evaluate(&model.valid().convert_qat(), &tok, &mixer, cfg)?;
            metrics.write(&Record::Eval(Evaluation { step: state.step, tokens: mixer.state.total_tokens, eval: ev }))?;
        }
        let interrupted = crate::interrupt::requested();
        if (cfg.checkpoint.every > 0 && state.step.is_multiple_of(cfg.checkpoint.every)) || last || interrupted.is_some() {
            state.mixer = mixer.state.clone();
            state.elapsed_seconds = elapsed_before + started.elapsed().as_secs_f64();
            checkpoint::save(&ckpt_root, &model, &opt, &state, &cfg_text, cfg.checkpoint.keep)?;
            remove_stage_state(&blockwise_dir)?;
        }
        if let Some(signal) = interrupted.filter(|_| !last) {
            if let Some(b) = &bar {
                b.abandon();
            }
            return Err(TrainError::Stopped(format!(
                "stopped by {signal} at step {}: checkpoint written to {}; run the same command to continue",
                state.step,
                ckpt_root.display()
            )));
        }
    }
    if let Some(b) = &bar {
        b.finish();
    }

    // ---- report ------------------------------------------------------------------------
    let final_eval = evaluate(&model.valid().convert_qat(), &tok, &mixer, cfg)?;
    metrics.write(&Record::Eval(Evaluation { step: state.step, tokens: mixer.state.total_tokens, eval: final_eval.clone() }))?;
    let final_model = run_dir.join("final");
    // A final model of an earlier attempt of this run is stale.
    if final_model.exists() {
        std::fs::remove_dir_all(&final_model).map_err(|e| TrainError::file(&final_model, e))?;
    }
    let valid = model.valid();
    params::write_safetensors(&run_dir.join("qat_params.safetensors"), &params::collect(&valid))?;
    let wall = elapsed_before + started.elapsed().as_secs_f64();
    let run_tokens = mixer.state.total_tokens - tokens_before;
    let summary = RunSummary {
        steps: state.step,
        skipped_steps: state.skipped_steps,
        tokens: mixer.state.total_tokens,
        wall_seconds: wall,
        tokens_per_second: run_tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
        peak_rss_mib: peak_rss_mib(),
        final_train_loss: state.losses.last().copied(),
        fp_eval: state.fp_eval.clone(),
        first_eval: state.first_eval.clone(),
        val_gap_recovered: match (state.fp_eval.val_loss, state.first_eval.val_loss, final_eval.val_loss) {
            (Some(fp), Some(rtn), Some(end)) if rtn > fp => Some((rtn - end) / (rtn - fp)),
            _ => None,
        },
        final_eval,
        final_model,
        losses: state.losses.clone(),
    };
    std::fs::write(&summary_path, serde_json::to_string_pretty(&summary).expect("JSON")).map_err(|e| TrainError::file(&summary_path, e))?;
    remove_stage_state(&blockwise_dir)?;
    Ok(Trained { summary, model: Some(valid) })
}

/// Writes the Hugging Face checkpoint of a finished run, `RUN_DIR/final/` (fake-quantized
/// weights in f32, with `qat_quant.json` saying how they were made), unless it is there.
/// `model` is what [`train`] returned; `None` (the run had finished before) rebuilds it from the
/// run directory.
pub fn save_final(cfg: &RunConfig, summary: &RunSummary, model: Option<&CausalLm>) -> Result<(), TrainError> {
    if summary.final_model.exists() {
        return Ok(());
    }
    let loaded;
    let model = match model {
        Some(m) => m,
        None => {
            loaded = load_trained(&cfg.output.dir, &Device::flex())?.0;
            &loaded
        }
    };
    let table = model.policy_table(&cfg.quant)?;
    let sidecar = serde_json::json!({
        "method": "qat", "policy": cfg.quant, "steps": summary.steps, "tokens": summary.tokens,
        "bits_per_weight_quantized": table.quantized_bits_per_weight(), "bits_per_weight_model": table.model_bits_per_weight(),
    });
    let sidecar = serde_json::to_string_pretty(&sidecar).expect("JSON");
    model.save_hf(Some(&cfg.model.path), &summary.final_model, qat_model::SaveDtype::F32, &[("qat_quant.json", sidecar)])?;
    Ok(())
}

/// Deletes the finished blocks of block-wise reconstruction once a checkpoint (or the finished
/// run) holds their result.
fn remove_stage_state(dir: &Path) -> Result<(), TrainError> {
    if dir.is_dir() {
        std::fs::remove_dir_all(dir).map_err(|e| TrainError::file(dir, e))?;
    }
    Ok(())
}

/// Loads a trained model from a run directory (`qat_params.safetensors`, or its latest
/// checkpoint if the run did not finish) or from one checkpoint directory, rebuilt exactly as
/// the run built it (base checkpoint, quantization policy, trained parameters).
pub fn load_trained(source: &Path, device: &Device) -> Result<(CausalLm, RunConfig), TrainError> {
    let params_file = if source.join("qat_params.safetensors").exists() {
        source.join("qat_params.safetensors")
    } else if source.join("params.safetensors").exists() {
        source.join("params.safetensors")
    } else if let Some(c) = checkpoint::latest(&source.join("checkpoints"))? {
        c.join("params.safetensors")
    } else {
        return Err(TrainError::Run(format!(
            "{}: not a run or checkpoint directory (no qat_params.safetensors, params.safetensors or checkpoints/)",
            source.display()
        )));
    };
    let cfg_path = params_file.parent().expect("a file has a parent").join("config.toml");
    let cfg = RunConfig::load(&cfg_path, &[])?;
    let ckpt = Checkpoint::open(&cfg.model.path)?;
    let (model, _) = CausalLm::from_checkpoint(&ckpt, device)?.prepare_qat(&cfg.quant)?;
    let model = params::load(model, &params::read_safetensors(&params_file)?)?;
    // For evaluation and export: no parameter may record autodiff graphs.
    Ok((model.valid(), cfg))
}
