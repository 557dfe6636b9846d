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
    let device = model.embed_tokens.weight.val().device();
    let mut rng = StdRng::seed_from_u64(sampling.seed);
    let mut cache = model.new_cache();
    let limit = model.config.max_position_embeddings;
    let mut out = Vec::new();
    let mut input: Vec<u32> = prompt.to_vec();
    while out.len() < max_new_tokens && cache.len() + input.len() <= limit && !input.is_empty() {
        let t = input.len();
        let ids: Vec<i64> = input.iter().map(|&i| i as i64).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &device);
        let batch = AttentionBatch::causal(&[t], t, cache.len(), &device);
        let logits = model.forward(tokens, &batch, Some(&mut cache));
        let last: Vec<f32> = logits.narrow(1, t - 1, 1).into_data().try_to_vec::<f32>().expect("f32 logits");
        let next = pick(&last, sampling, &mut rng);
        out.push(next);
        on_token(next);
        if stop.contains(&next) {
            break;
        }
        input = vec![next];
    }
    out
}

fn pick(logits: &[f32], s: &Sampling, rng: &mut StdRng) -> u32 {
    let argmax = || logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32;
    if s.temperature <= 0.0 {
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
