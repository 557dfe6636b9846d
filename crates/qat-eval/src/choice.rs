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
//!   to the first choice, as `np.argmax` does;
//! - a LAMBADA-style item has one continuation and no choices: `acc` = [greedy decoding gives
//!   the continuation, every token the argmax], and the task's `perplexity` =
//!   `exp(−mean over items of score)` (lm-eval's `loglikelihood` tasks);
//! - standard errors are lm-eval's `mean_stderr`: the sample standard deviation of the per-item
//!   0/1 outcomes (n − 1 in the denominator) over √n.

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
    /// `None` for tasks that lm-eval reports `acc` only for (MMLU, Winogrande, LAMBADA).
    pub norm_chars: Option<Vec<usize>>,
    /// A single continuation scored by whether greedy decoding reproduces it (LAMBADA).
    pub greedy: bool,
}

/// Accuracy over `n` items, with lm-eval's standard errors.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct McResult {
    pub n: usize,
    pub acc: f64,
    pub acc_stderr: f64,
    /// Length-normalised accuracy, where the task defines it.
    pub acc_norm: Option<f64>,
    pub acc_norm_stderr: Option<f64>,
    /// `exp(−mean continuation log-likelihood)` of greedy (LAMBADA) tasks.
    pub perplexity: Option<f64>,
}

/// A continuation's summed log-likelihood and whether every one of its tokens is the model's
/// most likely next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub logprob: f64,
    pub greedy: bool,
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

/// A request as token ids: (context, continuation).
type TokenPair = (Vec<u32>, Vec<u32>);

/// An item's requests as token ids, checked.
fn item_pairs(model: &CausalLm, tok: &Tokenizer, item: &McItem, opts: ScoreOptions) -> Result<Vec<TokenPair>, EvalError> {
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
    Ok(pairs)
}

/// Each of an item's requests scored, the requests of one item in one right-padded batch.
pub fn item_scores(model: &CausalLm, tok: &Tokenizer, item: &McItem, opts: ScoreOptions) -> Result<Vec<Scored>, EvalError> {
    Ok(continuation_logprobs(model, &item_pairs(model, tok, item, opts)?))
}

/// The forward rows of `pairs`: consecutive requests with the same context share one row —
/// the context once, then each continuation but its last token ([`AttentionBatch::shared_prefix`]
/// lets each see only the context and itself) — unless a request needs lm-eval's left
/// truncation (context + continuation longer than `max_len + 1`), which gets a row of its own
/// with the context cut to fit. Each row: (tokens dropped from its context's left, the range of
/// `pairs` it scores).
fn rows_of(pairs: &[TokenPair], max_len: usize) -> Vec<(usize, std::ops::Range<usize>)> {
    let cut = |(c, k): &TokenPair| (c.len() + k.len()).saturating_sub(max_len + 1);
    let mut rows = Vec::new();
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i + 1;
        if cut(&pairs[i]) == 0 {
            while j < pairs.len() && pairs[j].0 == pairs[i].0 && cut(&pairs[j]) == 0 {
                j += 1;
            }
        }
        rows.push((cut(&pairs[i]), i..j));
        i = j;
    }
    rows
}

/// Length of a row of [`rows_of`]: the (cut) context and every continuation but its last token.
fn row_len(pairs: &[TokenPair], (cut, range): &(usize, std::ops::Range<usize>)) -> usize {
    pairs[range.start].0.len() - cut + pairs[range.clone()].iter().map(|(_, k)| k.len() - 1).sum::<usize>()
}

/// Each continuation after its context scored, token ids in, all pairs in one right-padded
/// batch of [`rows_of`] rows. Each context is non-empty and each continuation 1..=max_len
/// tokens. Only the positions that predict a continuation token go through the output head and
/// the log-softmax.
pub fn continuation_logprobs(model: &CausalLm, pairs: &[TokenPair]) -> Vec<Scored> {
    let max_len = model.config.max_position_embeddings;
    let device = model.embed_tokens.weight.val().device();
    let rows = rows_of(pairs, max_len);
    let t = rows.iter().map(|r| row_len(pairs, r)).max().expect("an item has choices");
    let mut ids = Vec::with_capacity(rows.len() * t);
    let mut shapes = Vec::with_capacity(rows.len());
    // Per pair, the flat positions (row · t + offset) whose hidden states predict its tokens.
    let mut positions: Vec<i64> = Vec::new();
    for (r, (cut, range)) in rows.iter().enumerate() {
        let ctx = &pairs[range.start].0[*cut..];
        let before = ids.len();
        ids.extend(ctx.iter().map(|&x| x as i64));
        let mut offset = ctx.len();
        for (_, k) in &pairs[range.clone()] {
            // Token 0 is predicted by the context's last position, token j by the branch's j − 1.
            positions.push((r * t + ctx.len() - 1) as i64);
            positions.extend((1..k.len()).map(|j| (r * t + offset + j - 1) as i64));
            ids.extend(k[..k.len() - 1].iter().map(|&x| x as i64));
            offset += k.len() - 1;
        }
        ids.resize(before + t, 0);
        shapes.push((ctx.len(), pairs[range.clone()].iter().map(|(_, k)| k.len() - 1).collect::<Vec<_>>()));
    }
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [rows.len(), t]), &device);
    let hidden = model.forward_hidden(tokens, &AttentionBatch::shared_prefix(&shapes, t, &device), None);
    let d = hidden.dims()[2];
    let n = positions.len();
    let picked = hidden.reshape([rows.len() * t, d]).select(0, Tensor::<1, Int>::from_data(TensorData::new(positions, [n]), &device));
    let lp = log_softmax(model.head(picked.unsqueeze_dim(0)), 2);
    let v = lp.dims()[2];
    let lp: Vec<f32> = lp.into_data().try_to_vec::<f32>().expect("f32 log-probs");
    let mut next = 0;
    pairs
        .iter()
        .map(|(_, k)| {
            let first = next;
            next += k.len();
            let row = |j: usize| &lp[(first + j) * v..][..v];
            Scored {
                logprob: k.iter().enumerate().map(|(j, &id)| row(j)[id as usize] as f64).sum(),
                greedy: k.iter().enumerate().all(|(j, &id)| argmax(row(j).iter().map(|&x| x as f64)) == id as usize),
            }
        })
        .collect()
}

/// Padded tokens per forward pass when the requests of several items are scored together:
/// larger matrix products (and both cores of a small machine busy) at a bounded activation size.
const TOKENS_PER_BATCH: usize = 4096;

/// Every item's requests scored ([`continuation_logprobs`]), several items per forward pass:
/// items taken in order of their longest row (so a batch pads little) until a batch would
/// exceed `tokens_per_batch` padded tokens. Scores come back in the items' order. Each
/// request's score depends only on what its row lets it see, so batching changes no result
/// beyond float rounding.
fn batched_scores(model: &CausalLm, items: &[Vec<TokenPair>], tokens_per_batch: usize) -> Vec<Vec<Scored>> {
    let max_len = model.config.max_position_embeddings;
    // (rows, longest row) of each item.
    let shape: Vec<(usize, usize)> = items
        .iter()
        .map(|pairs| {
            let rows = rows_of(pairs, max_len);
            (rows.len(), rows.iter().map(|r| row_len(pairs, r)).max().unwrap_or(0))
        })
        .collect();
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| shape[i].1);
    let mut scores: Vec<Vec<Scored>> = vec![Vec::new(); items.len()];
    let mut batch: Vec<usize> = Vec::new();
    let flush = |batch: &mut Vec<usize>, scores: &mut Vec<Vec<Scored>>| {
        let all: Vec<TokenPair> = batch.iter().flat_map(|&i| items[i].iter().cloned()).collect();
        let mut it = continuation_logprobs(model, &all).into_iter();
        for &i in batch.iter() {
            scores[i] = it.by_ref().take(items[i].len()).collect();
        }
        batch.clear();
    };
    for i in order {
        let rows: usize = batch.iter().map(|&j| shape[j].0).sum::<usize>() + shape[i].0;
        // Sorted by length: this item's longest row is the batch's.
        if !batch.is_empty() && rows * shape[i].1 > tokens_per_batch {
            flush(&mut batch, &mut scores);
        }
        batch.push(i);
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut scores);
    }
    scores
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

/// lm-eval's `mean_stderr` of 0/1 outcomes with `hits` ones among `n`.
fn stderr(hits: usize, n: usize) -> f64 {
    if n < 2 {
        return f64::NAN;
    }
    let p = hits as f64 / n as f64;
    let var = (hits as f64 * (1.0 - p).powi(2) + (n - hits) as f64 * p * p) / (n - 1) as f64;
    (var / n as f64).sqrt()
}

/// Accuracy of `model` on `items`; `name` (the task's file) prefixes error messages.
pub fn score_items(model: &CausalLm, tok: &Tokenizer, name: &str, items: &[McItem], opts: ScoreOptions) -> Result<McResult, EvalError> {
    if items.is_empty() {
        return Err(EvalError::File { path: name.into(), msg: "no items".into() });
    }
    let pairs = items.iter().map(|item| item_pairs(model, tok, item, opts)).collect::<Result<Vec<_>, _>>().map_err(|e| match e {
        EvalError::Item { line, msg, .. } => EvalError::Item { path: name.into(), line, msg },
        e => e,
    })?;
    let (mut hit, mut hit_norm, mut loglik) = (0usize, 0usize, 0f64);
    for (item, scores) in items.iter().zip(batched_scores(model, &pairs, TOKENS_PER_BATCH)) {
        if item.greedy {
            hit += usize::from(scores[0].greedy);
            loglik += scores[0].logprob;
            continue;
        }
        hit += usize::from(argmax(scores.iter().map(|s| s.logprob)) == item.gold);
        if let Some(chars) = &item.norm_chars {
            hit_norm += usize::from(argmax(scores.iter().zip(chars).map(|(s, &c)| s.logprob / c as f64)) == item.gold);
        }
    }
    let n = items.len();
    let normed = items.iter().all(|i| i.norm_chars.is_some());
    let greedy = items.iter().all(|i| i.greedy);
    Ok(McResult {
        n,
        acc: hit as f64 / n as f64,
        acc_stderr: stderr(hit, n),
        acc_norm: normed.then(|| hit_norm as f64 / n as f64),
        acc_norm_stderr: normed.then(|| stderr(hit_norm, n)),
        perplexity: greedy.then(|| (-loglik / n as f64).exp()),
    })
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
                let (s, b) = (single(&model, c, k), b.logprob);
                assert!((s - b).abs() < 1e-4, "{s} vs {b}");
            }
        }
        model.config.max_position_embeddings = 16;
        for ((c, k), b) in long.iter().zip(continuation_logprobs(&model, &long)) {
            let (s, b) = (single(&model, c, k), b.logprob);
            assert!((s - b).abs() < 1e-4, "truncated: {s} vs {b}");
        }
    }

    /// Scoring many items together (sorted by length, several per forward pass, a
    /// shared-context item alone) gives each item what scoring it alone gives, in item order.
    #[test]
    fn items_scored_together_match_items_scored_alone() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../qat-model/tests/fixtures/llama");
        let model = CausalLm::from_checkpoint(&Checkpoint::open(&dir).unwrap(), &burn::tensor::Device::flex()).unwrap();
        let items: Vec<Vec<(Vec<u32>, Vec<u32>)>> = (0..40u32)
            .map(|i| {
                let ctx: Vec<u32> = (0..(3 + i * 7 % 23)).map(|j| (i * 13 + j * 5) % 60 + 1).collect();
                if i % 9 == 4 {
                    (0..4).map(|c| (ctx.clone(), vec![c + 2])).collect()
                } else {
                    (0..(2 + i % 3)).map(|c| (ctx.clone(), (0..(1 + (i + c) % 5)).map(|j| (c * 7 + j) % 60 + 1).collect())).collect()
                }
            })
            .collect();
        // A budget of 64 padded tokens: many batches of a few items each.
        for (pairs, together) in items.iter().zip(batched_scores(&model, &items, 64)) {
            let alone = continuation_logprobs(&model, pairs);
            assert_eq!(alone.len(), together.len());
            for (a, b) in alone.iter().zip(&together) {
                assert!((a.logprob - b.logprob).abs() < 1e-4 && a.greedy == b.greedy, "{a:?} vs {b:?}");
            }
        }
    }

    /// A continuation built from the model's own greedy choices is greedy; changing its last
    /// token to a less likely one is not.
    #[test]
    fn greedy_continuations_are_recognised() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../qat-model/tests/fixtures/llama");
        let model = CausalLm::from_checkpoint(&Checkpoint::open(&dir).unwrap(), &burn::tensor::Device::flex()).unwrap();
        let mut seq = vec![1u32, 17, 42];
        let v = model.config.vocab_size as u32;
        for _ in 0..3 {
            // Every token after `seq` in one pass (the shared-context path): one is the argmax.
            let all: Vec<(Vec<u32>, Vec<u32>)> = (0..v).map(|id| (seq.clone(), vec![id])).collect();
            let scored = continuation_logprobs(&model, &all);
            assert_eq!(scored.iter().filter(|s| s.greedy).count(), 1);
            seq.push(scored.iter().position(|s| s.greedy).unwrap() as u32);
        }
        let (ctx, cont) = (seq[..3].to_vec(), seq[3..].to_vec());
        assert!(continuation_logprobs(&model, &[(ctx.clone(), cont.clone())])[0].greedy);
        let mut wrong = cont.clone();
        wrong[2] = (wrong[2] + 1) % v;
        let s = continuation_logprobs(&model, &[(ctx.clone(), cont), (ctx, wrong)]);
        assert!(s[0].greedy && !s[1].greedy && s[0].logprob > s[1].logprob);
    }

    #[test]
    fn stderr_is_lm_evals_mean_stderr() {
        // Outcomes 1,1,0,0: mean 0.5, sample std sqrt(1/3), over sqrt(4).
        assert!((stderr(2, 4) - (1.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-15);
        assert_eq!(stderr(3, 3), 0.0);
    }

    #[test]
    fn argmax_takes_the_first_of_equal_values() {
        assert_eq!(argmax([1.0, 3.0, 3.0, 2.0].into_iter()), 1);
        assert_eq!(argmax([-5.0, -1.0].into_iter()), 1);
    }
}
