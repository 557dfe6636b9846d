//! Token generation with a KV cache: greedy, or sampled with temperature / top-k / top-p.

use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::{AttentionBatch, CausalLm};

/// How the next token is chosen. `temperature == 0` is greedy (argmax).
#[derive(Debug, Clone)]
pub struct Sampling {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u64,
}

impl Sampling {
    pub fn greedy() -> Self {
        Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

/// Continues `prompt` by up to `max_new_tokens` tokens, stopping after any token in `stop`.
/// `on_token` sees each new token as it is produced (for streaming output).
pub fn generate(model: &CausalLm, prompt: &[u32], max_new_tokens: usize, stop: &[u32], sampling: &Sampling, mut on_token: impl FnMut(u32)) -> Vec<u32> {
    let mut rows = generate_batch(model, &[prompt.to_vec()], max_new_tokens, stop, sampling, |step| on_token(step[0]));
    rows.pop().unwrap_or_default()
}

/// Continues every prompt of `prompts` (all of one length) in lockstep: one forward pass of
/// `[rows, 1]` tokens per step over a shared KV cache, so the matrix products see `rows`
/// tokens at a time instead of one (decoding one row is bound by reading the weights). A row
/// stops growing after its first token in `stop`; decoding ends when every row has stopped,
/// after `max_new_tokens`, or at the model's context length. `on_step` sees the tokens picked
/// for all rows at each step (stopped rows included). One random stream serves all rows, in
/// row order, so a row's text depends on the seed and its position in the batch.
pub fn generate_batch(
    model: &CausalLm,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
    stop: &[u32],
    sampling: &Sampling,
    mut on_step: impl FnMut(&[u32]),
) -> Vec<Vec<u32>> {
    let rows = prompts.len();
    let prompt_len = prompts.first().map_or(0, Vec::len);
    assert!(prompts.iter().all(|p| p.len() == prompt_len), "generate_batch: prompts of different lengths");
    let device = model.embed_tokens.weight.val().device();
    let mut rng = StdRng::seed_from_u64(sampling.seed);
    let mut cache = model.new_cache();
    let limit = model.config.max_position_embeddings;
    let mut out = vec![Vec::new(); rows];
    let mut done = vec![false; rows];
    let mut input: Vec<u32> = prompts.concat();
    let mut t = prompt_len;
    let mut steps = 0;
    while steps < max_new_tokens && cache.len() + t <= limit && t > 0 && done.iter().any(|d| !d) {
        let ids: Vec<i64> = input.iter().map(|&i| i as i64).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [rows, t]), &device);
        let batch = AttentionBatch::causal(&vec![t; rows], t, cache.len(), &device);
        let logits = model.forward(tokens, &batch, Some(&mut cache));
        let last: Vec<f32> = logits.narrow(1, t - 1, 1).into_data().try_to_vec::<f32>().expect("f32 logits");
        let vocab = last.len() / rows;
        let next: Vec<u32> = last.chunks(vocab).map(|row| pick(row, sampling, &mut rng)).collect();
        on_step(&next);
        for (r, &token) in next.iter().enumerate() {
            if !done[r] {
                out[r].push(token);
                done[r] = stop.contains(&token);
            }
        }
        input = next;
        t = 1;
        steps += 1;
    }
    out
}

/// Training text sampled from the model itself, for distillation without a dataset (LLM-QAT,
/// Liu et al. 2023, §2.1): each document starts from one of `first_tokens` (LLM-QAT draws it
/// uniformly from the vocabulary), takes its next `greedy_prefix` tokens by argmax, which
/// steers a random start into text the model finds likely, then samples the rest with
/// `sampling` — the paper found this hybrid better than all-greedy or all-sampled text. A
/// document ends after `len` tokens or at its first token in `stop` (kept). Returns one token
/// row per first token, first token included.
pub fn sample_documents(model: &CausalLm, first_tokens: &[u32], greedy_prefix: usize, len: usize, stop: &[u32], sampling: &Sampling) -> Vec<Vec<u32>> {
    let starts: Vec<Vec<u32>> = first_tokens.iter().map(|&t| vec![t]).collect();
    let prefix_len = greedy_prefix.min(len.saturating_sub(1));
    let prefixes = generate_batch(model, &starts, prefix_len, &[], &Sampling::greedy(), |_| {});
    let prompts: Vec<Vec<u32>> = starts.iter().zip(&prefixes).map(|(s, p)| [s.as_slice(), p].concat()).collect();
    // A stop token inside the greedy prefix ends that document there.
    let ended: Vec<Option<usize>> = prompts.iter().map(|p| p.iter().skip(1).position(|t| stop.contains(t)).map(|i| i + 2)).collect();
    let rest = generate_batch(model, &prompts, len.saturating_sub(1 + prefix_len), stop, sampling, |_| {});
    prompts
        .into_iter()
        .zip(rest)
        .zip(ended)
        .map(|((mut doc, more), end)| {
            match end {
                Some(n) => doc.truncate(n),
                None => doc.extend(more),
            }
            doc
        })
        .collect()
}

fn pick(logits: &[f32], s: &Sampling, rng: &mut StdRng) -> u32 {
    let argmax = || logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32;
    if s.temperature <= 0.0 {
        return argmax();
    }
    if s.top_k == 0 && s.top_p >= 1.0 {
        // Plain sampling needs no order: walk the unnormalised weights once.
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let weights: Vec<f32> = logits.iter().map(|&v| ((v - max) / s.temperature).exp()).collect();
        let mut r = rng.random::<f32>() * weights.iter().sum::<f32>();
        for (i, w) in weights.iter().enumerate() {
            r -= w;
            if r <= 0.0 {
                return i as u32;
            }
        }
        return argmax();
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if s.top_k > 0 {
        idx.truncate(s.top_k);
    }
    let max = logits[idx[0]];
    let mut probs: Vec<f32> = idx.iter().map(|&i| ((logits[i] - max) / s.temperature).exp()).collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    // Nucleus: the smallest prefix whose mass reaches top_p.
    let mut mass = 0.0;
    let keep = probs.iter().position(|p| {
        mass += p;
        mass >= s.top_p
    });
    let keep = keep.map_or(probs.len(), |k| k + 1);
    let total: f32 = probs[..keep].iter().sum();
    let mut r = rng.random::<f32>() * total;
    for (j, p) in probs[..keep].iter().enumerate() {
        r -= p;
        if r <= 0.0 {
            return idx[j] as u32;
        }
    }
    idx[keep - 1] as u32
}
