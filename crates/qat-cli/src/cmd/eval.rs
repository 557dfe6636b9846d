use std::path::PathBuf;

use anyhow::Context;
use qat_eval::{ScoreOptions, Task, sliding_perplexity};
use qat_tokenizer::Tokenizer;

/// Perplexity on text files (sliding window) and zero-shot multiple-choice accuracy (HellaSwag,
/// MMLU, ARC, PIQA, Winogrande, … scored as lm-evaluation-harness scores them) of a checkpoint
/// or a training run.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (Hugging Face layout), or a qat run / checkpoint directory.
    model: PathBuf,
    /// Plain-text files; each is scored as one token stream.
    #[arg(long = "text")]
    texts: Vec<PathBuf>,
    /// HellaSwag JSONL (ctx_a, ctx_b, activity_label, endings, label).
    #[arg(long)]
    hellaswag: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    hellaswag_limit: usize,
    /// MMLU directory with dev/ val/ test/ CSVs (question, A, B, C, D, answer).
    #[arg(long)]
    mmlu: Option<PathBuf>,
    #[arg(long, default_value = "test")]
    mmlu_split: String,
    #[arg(long, default_value_t = 0)]
    mmlu_limit: usize,
    /// Zero-shot JSONL in llm-foundry's layouts: `{query, choices, gold}` (ARC, PIQA, …) or
    /// `{context_options, continuation, gold}` (Winogrande). Repeat for several tasks.
    #[arg(long = "mc")]
    mc: Vec<PathBuf>,
    /// Zero-shot tasks by name, comma-separated (`arc_easy,piqa,…`): the files
    /// `TASK_DIR/NAME.jsonl`, read as `--mc` reads them.
    #[arg(long, value_delimiter = ',', requires = "task_dir")]
    tasks: Vec<String>,
    /// Directory of `--tasks` files (e.g. `../shared/data/eval/mc`).
    #[arg(long, requires = "tasks")]
    task_dir: Option<PathBuf>,
    /// Items of each `--mc` / `--tasks` file to score (0 = all).
    #[arg(long, default_value_t = 0)]
    mc_limit: usize,
    /// Window length in tokens (at most the model's context).
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// Window advance; tokens get at least window − stride tokens of context.
    #[arg(long, default_value_t = 256)]
    stride: usize,
    /// Score only the first N tokens of each file (0 = all).
    #[arg(long, default_value_t = 0)]
    max_tokens: usize,
    /// Prepend BOS to each text file's tokens, and to every multiple-choice context instead of
    /// the tokenizer's own special tokens (lm-eval's `add_bos_token=True`).
    #[arg(long)]
    bos: bool,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(mut a: Args) -> anyhow::Result<()> {
    a.model = super::model_dir(&a.model)?;
    let device = super::device(&a.device)?;
    let mut tasks: Vec<(Task, usize)> = a.hellaswag.iter().map(|p| (Task::HellaSwag(p.clone()), a.hellaswag_limit)).collect();
    tasks.extend(a.mmlu.iter().map(|p| (Task::Mmlu { dir: p.clone(), split: a.mmlu_split.clone() }, a.mmlu_limit)));
    tasks.extend(a.mc.iter().map(|p| (Task::Jsonl(p.clone()), a.mc_limit)));
    if let Some(dir) = &a.task_dir {
        for name in &a.tasks {
            let p = dir.join(format!("{name}.jsonl"));
            anyhow::ensure!(p.is_file(), "--tasks {name}: {} does not exist", p.display());
            tasks.push((Task::Jsonl(p), a.mc_limit));
        }
    }
    anyhow::ensure!(!a.texts.is_empty() || !tasks.is_empty(), "nothing to evaluate: give --text, --hellaswag, --mmlu, --mc or --tasks");
    // A run directory evaluates its trained model with the base checkpoint's tokenizer.
    let (model, tok_dir) = if a.model.join("config.json").exists() {
        (super::load_model(&a.model, &device)?, a.model.clone())
    } else {
        let (m, cfg) = qat_train::train::load_trained(&a.model, &device)?;
        (m.convert_qat(), cfg.model.path)
    };
    let tok = Tokenizer::from_dir(&tok_dir)?;
    anyhow::ensure!(a.window >= 2 && a.stride >= 1 && a.stride <= a.window, "need window >= 2 and 1 <= stride <= window");
    anyhow::ensure!(
        a.window <= model.config.max_position_embeddings,
        "--window {} exceeds the model's max_position_embeddings {}",
        a.window,
        model.config.max_position_embeddings
    );
    let mut results = Vec::new();
    for path in &a.texts {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut ids: Vec<u32> = if a.bos { model.config.bos_token_id.into_iter().collect() } else { Vec::new() };
        ids.extend(tok.encode(&text, false)?);
        if a.max_tokens > 0 {
            ids.truncate(a.max_tokens);
        }
        anyhow::ensure!(ids.len() >= 2, "{}: fewer than 2 tokens", path.display());
        let p = sliding_perplexity(&model, &ids, a.window, a.stride);
        results.push(serde_json::json!({
            "file": path.display().to_string(), "tokens_scored": p.n_tokens,
            "mean_nll": p.mean_nll(), "perplexity": p.ppl(), "window": a.window, "stride": a.stride,
        }));
        if !a.json {
            println!(
                "{}: perplexity {:.4} (mean NLL {:.4} over {} tokens, window {}, stride {})",
                path.display(),
                p.ppl(),
                p.mean_nll(),
                p.n_tokens,
                a.window,
                a.stride
            );
        }
    }
    for (task, limit) in &tasks {
        let r = task.evaluate(&model, &tok, *limit, ScoreOptions { bos: a.bos.then_some(true) })?;
        let name = task.name();
        results.push(serde_json::json!({
            "benchmark": name, "file": task.path().display().to_string(), "n": r.n, "acc": r.acc, "acc_stderr": r.acc_stderr,
            "acc_norm": r.acc_norm, "acc_norm_stderr": r.acc_norm_stderr, "perplexity": r.perplexity,
        }));
        if !a.json {
            let norm = match (r.acc_norm, r.acc_norm_stderr) {
                (Some(x), Some(e)) => format!(", acc_norm {x:.4} ± {e:.4}"),
                _ => String::new(),
            };
            let ppl = r.perplexity.map(|p| format!(", perplexity {p:.3}")).unwrap_or_default();
            println!("{name} (zero-shot): acc {:.4} ± {:.4}{norm}{ppl} over {} items", r.acc, r.acc_stderr, r.n);
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}
