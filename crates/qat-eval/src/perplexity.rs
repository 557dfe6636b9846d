//! Likelihood evaluation: per-token negative log-likelihood and sliding-window perplexity.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

use qat_model::{AttentionBatch, CausalLm};

/// NLL (nats) of `ids[i]` given `ids[..i]` for `i` in `1..len`, in one causal forward pass.
pub fn token_nll(model: &CausalLm, ids: &[u32]) -> Vec<f32> {
    let device = model.embed_tokens.weight.val().device();
    let t = ids.len();
    if t < 2 {
        return Vec::new();
    }
    let input: Vec<i64> = ids[..t - 1].iter().map(|&i| i as i64).collect();
    let target: Vec<i64> = ids[1..].iter().map(|&i| i as i64).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(input, [1, t - 1]), &device);
    let targets = Tensor::<3, Int>::from_data(TensorData::new(target, [1, t - 1, 1]), &device);
    let logits = model.forward(tokens, &AttentionBatch::causal(&[t - 1], t - 1, 0, &device), None);
    let lp = log_softmax(logits, 2).gather(2, targets);
    lp.neg().into_data().try_to_vec::<f32>().expect("f32 log-probs")
}

/// Perplexity statistics over a token stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    pub nll_sum: f64,
    pub n_tokens: usize,
}

impl Perplexity {
    pub fn mean_nll(&self) -> f64 {
        self.nll_sum / self.n_tokens.max(1) as f64
    }
    pub fn ppl(&self) -> f64 {
        self.mean_nll().exp()
    }
}

/// Sliding-window perplexity (transformers' "strided" method): windows of `window` tokens
/// advance by `stride`; each token is scored once, in the first window where it has at least
/// `window - stride` tokens of context (or all it can have at the start).
pub fn sliding_perplexity(model: &CausalLm, ids: &[u32], window: usize, stride: usize) -> Perplexity {
    assert!(stride > 0 && stride <= window && window >= 2, "need 0 < stride <= window, window >= 2");
    let mut p = Perplexity { nll_sum: 0.0, n_tokens: 0 };
    let mut scored_to = 1; // ids[0] has no context and is never scored
    let mut start = 0;
    while scored_to < ids.len() {
        let end = (start + window).min(ids.len());
        let nll = token_nll(model, &ids[start..end]);
        // nll[j] scores ids[start + 1 + j].
        for (j, v) in nll.iter().enumerate() {
            if start + 1 + j >= scored_to {
                p.nll_sum += *v as f64;
                p.n_tokens += 1;
            }
        }
        scored_to = end;
        if end == ids.len() {
            break;
        }
        start += stride;
    }
    p
}
