use std::path::PathBuf;

use anyhow::Context;
use qat_model::generate::sample_documents;

use super::generate::SamplingFlags;
use qat_tokenizer::Tokenizer;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Sample training documents from a model (LLM-QAT's data-free distillation data).
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (Hugging Face layout): the model the run distils from.
    model: PathBuf,
    /// Output JSONL file, one `{"text": …}` document per line (`format = "jsonl"` in a run's
    /// `[[data.sources]]`). Written whole or not at all.
    #[arg(long)]
    out: PathBuf,
    /// Number of documents.
    #[arg(long)]
    documents: usize,
    /// Tokens per document (fewer where the model emits a special token, which ends it).
    #[arg(long, default_value_t = 512)]
    tokens: usize,
    /// Documents decoded together (one forward pass of this many tokens per step).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Tokens after the random first one chosen by argmax before sampling starts.
    #[arg(long, default_value_t = 4)]
    greedy_prefix: usize,
    #[arg(short, long, default_value_t = 1.0)]
    temperature: f32,
    #[command(flatten)]
    sampling: SamplingFlags,
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(mut a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.documents > 0, "--documents must be at least 1");
    anyhow::ensure!(a.tokens > 0, "--tokens must be at least 1");
    anyhow::ensure!(a.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(a.temperature > 0.0, "--temperature must be above 0 (sampled text; --greedy-prefix sets the argmax part)");
    a.sampling.check()?;
    a.model = super::model_dir(&a.model)?;
    let device = super::device(&a.device)?;
    let model = super::load_model(&a.model, &device)?;
    let tok = Tokenizer::from_dir(&a.model)?;
    // Special tokens (BOS, EOS, chat markers) never start a document, and any of them ends one:
    // they separate documents, and the text written is what the data loader tokenizes again.
    let mut stop: Vec<u32> = tok.inner().get_added_tokens_decoder().iter().filter(|(_, t)| t.special).map(|(&id, _)| id).collect();
    stop.extend(&model.config.eos_token_ids);
    let first_choices: Vec<u32> = (0..model.config.vocab_size as u32).filter(|id| !stop.contains(id)).collect();
    anyhow::ensure!(!first_choices.is_empty(), "{}: every token is special", a.model.display());

    let mut rng = StdRng::seed_from_u64(a.sampling.seed);
    let started = std::time::Instant::now();
    let (mut lines, mut tokens, mut written) = (String::new(), 0usize, 0usize);
    let batches = a.documents.div_ceil(a.batch);
    for b in 0..batches {
        let n = a.batch.min(a.documents - b * a.batch);
        let firsts: Vec<u32> = (0..n).map(|_| first_choices[rng.random_range(0..first_choices.len())]).collect();
        let sampling = a.sampling.with_temperature(a.temperature, rng.random());
        for doc in sample_documents(&model, &firsts, a.greedy_prefix, a.tokens, &stop, &sampling) {
            let (text, kept) = readable_text(&tok, &doc, model.config.vocab_size)?;
            tokens += kept;
            if text.is_empty() {
                continue;
            }
            lines.push_str(&serde_json::to_string(&serde_json::json!({ "text": text }))?);
            lines.push('\n');
            written += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!("batch {}/{batches}: {tokens} tokens, {:.0} tokens/s", b + 1, tokens as f64 / secs);
    }
    qat_gguf::writer::write_atomic(&a.out, lines.as_bytes()).with_context(|| format!("writing {}", a.out.display()))?;
    anyhow::ensure!(written > 0, "no sampled document tokenizes again inside the model's vocabulary; {} is not written", a.out.display());
    println!("{}: {written} documents, {tokens} tokens", a.out.display());
    Ok(())
}

/// The text of the longest prefix of `doc` that the data loader reads back inside the model's
/// vocabulary, and that prefix's length in tokens. Decoding and encoding again is not always
/// the identity: pieces can spell a special token's text (stories260K's `<`, `s`, `>` become
/// `<s>`, which its tokenizer maps to id 512 of a 512-token model), and a run would reject the
/// file.
fn readable_text(tok: &Tokenizer, doc: &[u32], vocab: usize) -> anyhow::Result<(String, usize)> {
    for n in (1..=doc.len()).rev() {
        let text = tok.decode(&doc[..n], true)?;
        if tok.encode(&text, false)?.iter().all(|&id| (id as usize) < vocab) {
            return Ok((text, n));
        }
    }
    Ok((String::new(), 0))
}
