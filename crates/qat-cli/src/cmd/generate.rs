use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use qat_model::generate::{Sampling, generate};
use qat_tokenizer::{Message, Tokenizer};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (Hugging Face layout).
    model: PathBuf,
    /// The prompt; with --chat it is the user message.
    #[arg(short, long, default_value = "")]
    prompt: String,
    /// Render the prompt as a user turn through the checkpoint's chat template.
    #[arg(long)]
    chat: bool,
    /// Optional system message for --chat.
    #[arg(long)]
    system: Option<String>,
    #[arg(short = 'n', long, default_value_t = 128)]
    max_new_tokens: usize,
    /// 0 means greedy decoding.
    #[arg(short, long, default_value_t = 0.0)]
    temperature: f32,
    #[command(flatten)]
    sampling: SamplingFlags,
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Sampling flags of `generate` and `synthesize`; each command has its own `--temperature`,
/// because their defaults differ (greedy answers, sampled training text).
#[derive(clap::Args)]
pub struct SamplingFlags {
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingFlags {
    pub fn with_temperature(&self, temperature: f32, seed: u64) -> Sampling {
        Sampling { temperature, top_k: self.top_k, top_p: self.top_p, seed }
    }

    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.top_p > 0.0 && self.top_p <= 1.0, "--top-p must be in (0, 1]");
        Ok(())
    }
}

pub fn run(mut a: Args) -> anyhow::Result<()> {
    a.model = super::model_dir(&a.model)?;
    let device = super::device(&a.device)?;
    let model = super::load_model(&a.model, &device)?;
    let tok = Tokenizer::from_dir(&a.model)?;
    let prompt_ids = if a.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(Message::new("system", s));
        }
        msgs.push(Message::new("user", &a.prompt));
        let text = tok.render_chat(&msgs, true)?;
        tok.encode(&text, false)?
    } else {
        // A raw prompt starts with BOS when the model has one (as llama.cpp and llama2.c do).
        let mut ids: Vec<u32> = model.config.bos_token_id.into_iter().collect();
        ids.extend(tok.encode(&a.prompt, false)?);
        ids
    };
    let mut stop = model.config.eos_token_ids.clone();
    stop.extend(tok.eos_id());
    a.sampling.check()?;
    let sampling = a.sampling.with_temperature(a.temperature, a.sampling.seed);
    let mut shown = String::new();
    let mut out_ids = Vec::new();
    let mut stdout = std::io::stdout();
    print!("{}", a.prompt);
    generate(&model, &prompt_ids, a.max_new_tokens, &stop, &sampling, |t| {
        out_ids.push(t);
        // Decode the whole continuation each time so multi-token characters print correctly.
        if let Ok(text) = tok.decode(&out_ids, true) {
            if let Some(new) = text.strip_prefix(shown.as_str()) {
                print!("{new}");
                let _ = stdout.flush();
            }
            shown = text;
        }
    });
    println!();
    let _ = stdout.flush().context("writing output");
    Ok(())
}
