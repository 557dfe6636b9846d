//! Zero-shot multiple choice, scored as lm-evaluation-harness (0.4.13) scores its
//! `multiple_choice` tasks with a Hugging Face model, so that qat's numbers and lm-eval's agree
//! item by item:
//!
//! - each choice is one request `(context, continuation)`; its score is
//!   `Σ_k log p(cont_k | context, cont_<k)`, the summed log-likelihood of the continuation;
//! - the pair is tokenized as lm-eval's `_encode_pair` does: trailing whitespace of the context
//!   moves to the continuation, then `cont = encode(context + continuation)[len(encode(context))..]`
//!   (so a token that straddles the boundary belongs to the continuation), with the tokenizer's
//!   own special tokens (its post-processor: stories260K's adds BOS, SmolLM2's adds nothing —
//!   lm-eval's default since 0.4.10 when `add_bos_token` is unset); an empty context is
//!   replaced by the prefix token (BOS, else EOS);
//! - a sequence longer than the model's context keeps its last `max_len + 1` tokens;
//! - `acc` = [argmax_j score_j = gold], `acc_norm` = [argmax_j score_j / chars_j = gold] with
//!   `chars_j` the length in characters of choice j's text (lm-eval's `completion_len`); ties go
//!   to the first choice, as `np.argmax` does.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use qat_model::{AttentionBatch, CausalLm};
use qat_tokenizer::Tokenizer;

use crate::EvalError;

/// One question.
#[derive(Debug, Clone, PartialEq)]
pub struct McItem {
    /// Line (or row) of the item in its file, for error messages.
    pub line: usize,
    /// Per choice: the context and the continuation, the continuation carrying lm-eval's
    /// target delimiter (" ").
    pub requests: Vec<(String, String)>,
    /// Index of the right choice.
    pub gold: usize,
    /// Characters of each choice's text without the delimiter (the `acc_norm` divisor), or
    /// `None` for tasks that lm-eval reports `acc` only for (MMLU, Winogrande).
    pub norm_chars: Option<Vec<usize>>,
}

/// Accuracy over `n` items.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct McResult {
    pub n: usize,
    pub acc: f64,
    /// Length-normalised accuracy, where the task defines it.
    pub acc_norm: Option<f64>,
}

/// How requests are scored beyond lm-eval's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScoreOptions {
    /// lm-eval's `add_bos_token`: `None` encodes with the tokenizer's own special tokens (the
    /// default), `Some(true)` puts the model's BOS token before every context and nothing else,
    /// `Some(false)` adds no special token.
    pub bos: Option<bool>,
}

/// Token ids of `text` under `opts` (module docs).
fn encode(tok: &Tokenizer, model: &CausalLm, text: &str, opts: ScoreOptions) -> Result<Vec<u32>, EvalError> {
    Ok(match opts.bos {
        None => tok.encode(text, true)?,
        Some(bos) => {
            let prefix = model.config.bos_token_id.filter(|_| bos);
            prefix.into_iter().chain(tok.encode(text, false)?).collect()
        }
    })
}

/// lm-eval's `_encode_pair`: the context's and the continuation's token ids.
fn encode_pair(tok: &Tokenizer, model: &CausalLm, context: &str, continuation: &str, opts: ScoreOptions) -> Result<(Vec<u32>, Vec<u32>), EvalError> {
    if context.is_empty() {
        let prefix = model.config.bos_token_id.or(model.config.eos_token_ids.first().copied());
        return Ok((prefix.into_iter().collect(), encode(tok, model, continuation, opts)?));
    }
    let trimmed = context.trim_end();
    let continuation = format!("{}{continuation}", &context[trimmed.len()..]);
    let whole = encode(tok, model, &format!("{trimmed}{continuation}"), opts)?;
    let ctx = encode(tok, model, trimmed, opts)?;
    let cont = whole.get(ctx.len()..).unwrap_or_default().to_vec();
    Ok((ctx, cont))
}

/// Summed continuation log-likelihood of each of an item's requests, the requests of one item
/// in one right-padded batch.
pub fn item_scores(model: &CausalLm, tok: &Tokenizer, item: &McItem, opts: ScoreOptions) -> Result<Vec<f64>, EvalError> {
    let bad = |msg: String| EvalError::Item { path: String::new(), line: item.line, msg };
    let max_len = model.config.max_position_embeddings;
    let mut pairs = Vec::with_capacity(item.requests.len());
    for (context, continuation) in &item.requests {
        let (ctx, cont) = encode_pair(tok, model, context, continuation, opts)?;
        if ctx.is_empty() {
            return Err(bad("empty context and the model has neither a BOS nor an EOS token".into()));
        }
        if cont.is_empty() || cont.len() > max_len {
            return Err(bad(format!("continuation {continuation:?} is {} tokens (need 1..={max_len})", cont.len())));
        }
        pairs.push((ctx, cont));
    }
    Ok(continuation_logprobs(model, &pairs))
}

/// Summed log-likelihood of each continuation after its context, token ids in, all pairs in
/// one right-padded batch. Each context is non-empty and each continuation 1..=max_len tokens.
pub fn continuation_logprobs(model: &CausalLm, pairs: &[(Vec<u32>, Vec<u32>)]) -> Vec<f64> {
    let max_len = model.config.max_position_embeddings;
    let device = model.embed_tokens.weight.val().device();
    if pairs.iter().all(|(c, k)| k.len() == 1 && *c == pairs[0].0) {
        // Single-token continuations of one context (MMLU's letters) share one forward pass.
        let ctx = &pairs[0].0[pairs[0].0.len().saturating_sub(max_len)..];
        let t = ctx.len();
        let ids: Vec<i64> = ctx.iter().map(|&x| x as i64).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &device);
        let logits = model.forward(tokens, &AttentionBatch::causal(&[t], t, 0, &device), None).narrow(1, t - 1, 1);
        let lp: Vec<f32> = log_softmax(logits, 2).into_data().try_to_vec::<f32>().expect("f32 log-probs");
        return pairs.iter().map(|(_, k)| lp[k[0] as usize] as f64).collect();
    }
    // Row j = (ctx + cont)[start_j .. len − 1] with start_j dropping what exceeds max_len + 1.
    let starts: Vec<usize> = pairs.iter().map(|(c, k)| (c.len() + k.len()).saturating_sub(max_len + 1)).collect();
    let lens: Vec<usize> = pairs.iter().zip(&starts).map(|((c, k), s)| c.len() + k.len() - 1 - s).collect();
    let t = *lens.iter().max().expect("an item has choices");
    let mut ids = Vec::with_capacity(pairs.len() * t);
    for ((c, k), &s) in pairs.iter().zip(&starts) {
        let row = c.iter().chain(k).skip(s).take(c.len() + k.len() - 1 - s);
        ids.extend(row.map(|&x| x as i64).chain(std::iter::repeat(0)).take(t));
    }
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [pairs.len(), t]), &device);
    let lp = log_softmax(model.forward(tokens, &AttentionBatch::causal(&lens, t, 0, &device), None), 2);
    let v = lp.dims()[2];
    let lp: Vec<f32> = lp.into_data().try_to_vec::<f32>().expect("f32 log-probs");
    // The first continuation token is predicted at row position len(ctx) − 1 − start.
    pairs
        .iter()
        .zip(&starts)
        .enumerate()
        .map(|(b, ((c, k), &s))| k.iter().enumerate().map(|(j, &id)| lp[(b * t + c.len() - 1 - s + j) * v + id as usize] as f64).sum())
        .collect()
}

/// Index of the largest value, the first one on ties (`np.argmax`).
fn argmax(values: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// Accuracy of `model` on `items`; `name` (the task's file) prefixes error messages.
pub fn score_items(model: &CausalLm, tok: &Tokenizer, name: &str, items: &[McItem], opts: ScoreOptions) -> Result<McResult, EvalError> {
    if items.is_empty() {
        return Err(EvalError::File { path: name.into(), msg: "no items".into() });
    }
    let (mut hit, mut hit_norm) = (0usize, 0usize);
    for item in items {
        let scores = item_scores(model, tok, item, opts).map_err(|e| match e {
            EvalError::Item { line, msg, .. } => EvalError::Item { path: name.into(), line, msg },
            e => e,
        })?;
        hit += usize::from(argmax(scores.iter().copied()) == item.gold);
        if let Some(chars) = &item.norm_chars {
            hit_norm += usize::from(argmax(scores.iter().zip(chars).map(|(s, &c)| s / c as f64)) == item.gold);
        }
    }
    let n = items.len();
    let normed = items.iter().all(|i| i.norm_chars.is_some());
    Ok(McResult { n, acc: hit as f64 / n as f64, acc_norm: normed.then(|| hit_norm as f64 / n as f64) })
}

#[cfg(test)]
mod tests {
    use super::*;

    use qat_model::Checkpoint;

    /// Batched, right-padded scoring of several continuations equals scoring each one alone,
    /// with a shared context, with different contexts, and with sequences truncated on the left
    /// to the model's context length.
    #[test]
    fn batched_continuations_match_single_sequences() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../qat-model/tests/fixtures/llama");
        let mut model = CausalLm::from_checkpoint(&Checkpoint::open(&dir).unwrap(), &burn::tensor::Device::flex()).unwrap();
        let single = |model: &CausalLm, ctx: &[u32], cont: &[u32]| -> f64 {
            let seq: Vec<u32> = ctx.iter().chain(cont).copied().collect();
            let start = seq.len().saturating_sub(model.config.max_position_embeddings + 1);
            let nll = crate::token_nll(model, &seq[start..]);
            -nll[nll.len() - cont.len()..].iter().map(|&x| x as f64).sum::<f64>()
        };
        let shared = vec![1u32, 17, 42, 9];
        let pairs: Vec<(Vec<u32>, Vec<u32>)> = vec![(shared.clone(), vec![5, 6, 7]), (shared.clone(), vec![8]), (vec![3, 4], vec![10, 11, 12, 13, 14])];
        let letters: Vec<(Vec<u32>, Vec<u32>)> = vec![(shared.clone(), vec![3]), (shared.clone(), vec![4])];
        let long: Vec<(Vec<u32>, Vec<u32>)> = vec![((0..40).map(|i| i % 50 + 1).collect(), vec![7, 8, 9]), (vec![2; 30], vec![5])];
        for set in [&pairs, &letters] {
            for ((c, k), b) in set.iter().zip(continuation_logprobs(&model, set)) {
                let s = single(&model, c, k);
                assert!((s - b).abs() < 1e-4, "{s} vs {b}");
            }
        }
        model.config.max_position_embeddings = 16;
        for ((c, k), b) in long.iter().zip(continuation_logprobs(&model, &long)) {
            let s = single(&model, c, k);
            assert!((s - b).abs() < 1e-4, "truncated: {s} vs {b}");
        }
    }

    #[test]
    fn argmax_takes_the_first_of_equal_values() {
        assert_eq!(argmax([1.0, 3.0, 3.0, 2.0].into_iter()), 1);
        assert_eq!(argmax([-5.0, -1.0].into_iter()), 1);
    }
}
