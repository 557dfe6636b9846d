//! Rotating a checkpoint's residual stream and value heads by orthogonal matrices merged into
//! its weights (QuaRot's and SpinQuant's "R1" and "R2"), so that the same function is computed
//! by weights that quantize better.
//!
//! Every RMSNorm's weight `g` is first folded into the linears that read it (`W·diag(g)`; the
//! final norm's into the output head, which is untied from the embeddings for that), leaving
//! norms of ones. RMSNorm without a weight commutes with any orthogonal `Q` — `‖x·Q‖ = ‖x‖`,
//! so `RMSNorm(x·Q) = RMSNorm(x)·Q` — and the residual stream can then be carried as `x·Q`:
//! - embeddings `E·Q`; head `W·diag(g)·Q`;
//! - linears reading the stream (q, k, v, gate, up): `W·diag(g)·Q`;
//! - linears writing into it (o, down): `Qᵀ·W`, and an output bias `b` becomes `Qᵀ·b`.
//!
//! Each value head (`head_dim` rows of v_proj) is rotated by one `R2`: `R2ᵀ·W_v` per head (and
//! its bias), undone on the matching columns of o_proj, `W_o·R2`; attention mixes value
//! vectors linearly, so the rotation passes through it, and with grouped queries every head
//! that shares a value head sees the same `R2`.
//!
//! The result is a stock checkpoint of the same architecture, which transformers, llama.cpp
//! and every qat command load as they load the original. Weight-only quantization gains from
//! it because the rotation spreads the outlier rows and columns of the 576-wide matrices over
//! all groups. It is not free at round-to-nearest: with SmolLM2's massive activations on a few
//! residual channels, whose weights are small, spreading those channels makes round-to-nearest
//! worse; error-compensating rounding (GPTQ) is what profits (experiments/smollm2-135m-2bit).

use std::path::Path;

use rand::{Rng, SeedableRng, rngs::StdRng};
use rayon::prelude::*;

use crate::{CausalLm, Checkpoint, ModelConfig, ModelError};

/// Which orthogonal matrices rotate the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "lower"))]
pub enum Rotation {
    /// `H·diag(s)/√n`: a Hadamard matrix with random column signs `s`; `n` must be `2^a·12^b`
    /// (Sylvester doubling and the order-12 Paley matrix).
    Hadamard,
    /// A Haar-random orthogonal matrix (QR of a Gaussian matrix); any `n`.
    Random,
}

/// An orthogonal `n×n` matrix (row-major, f64) of `kind`, drawn from `rng`.
pub fn orthogonal(kind: Rotation, n: usize, rng: &mut StdRng) -> Result<Vec<f64>, String> {
    match kind {
        Rotation::Hadamard => {
            let h = hadamard(n).ok_or_else(|| format!("no Hadamard matrix of order {n} is built here (orders 2^a·12^b); use the random rotation"))?;
            let signs: Vec<f64> = (0..n).map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 }).collect();
            let norm = 1.0 / (n as f64).sqrt();
            Ok(h.iter().enumerate().map(|(i, v)| v * signs[i % n] * norm).collect())
        }
        Rotation::Random => Ok(random_orthogonal(n, rng)),
    }
}

/// A Hadamard matrix (entries ±1, `H·Hᵀ = n·I`) of order `n = 2^a·12^b`, or `None`: Kronecker
/// products of `[[1, 1], [1, −1]]` and the Paley-I matrix of order 12, `I + S` with
/// `S = [[0, 1ᵀ], [−1, J]]` and `J[i][j]` the quadratic character of `j − i` modulo 11.
pub fn hadamard(n: usize) -> Option<Vec<f64>> {
    if n == 0 {
        return None;
    }
    let (mut m, mut twelves, mut twos) = (n, 0, 0);
    while m % 12 == 0 {
        m /= 12;
        twelves += 1;
    }
    while m % 2 == 0 {
        m /= 2;
        twos += 1;
    }
    if m != 1 {
        return None;
    }
    let squares: Vec<bool> = (0..11).map(|r| (1..11usize).any(|i| i * i % 11 == r)).collect();
    let mut h12 = vec![0.0; 144];
    for i in 0..12 {
        for j in 0..12 {
            let s = match (i, j) {
                (0, 0) => 0.0,
                (0, _) => 1.0,
                (_, 0) => -1.0,
                _ if i == j => 0.0,
                _ => {
                    if squares[(j + 11 - i) % 11] {
                        1.0
                    } else {
                        -1.0
                    }
                }
            };
            h12[i * 12 + j] = s + if i == j { 1.0 } else { 0.0 };
        }
    }
    let mut h = vec![1.0];
    let mut order = 1;
    for _ in 0..twelves {
        h = kron(&h, order, &h12, 12);
        order *= 12;
    }
    for _ in 0..twos {
        h = kron(&h, order, &[1.0, 1.0, 1.0, -1.0], 2);
        order *= 2;
    }
    Some(h)
}

/// The Kronecker product of `a` (`n×n`) and `b` (`m×m`): `out[i][j] = a[i/m][j/m]·b[i%m][j%m]`.
fn kron(a: &[f64], n: usize, b: &[f64], m: usize) -> Vec<f64> {
    let k = n * m;
    let mut out = vec![0.0; k * k];
    for (i, row) in out.chunks_exact_mut(k).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = a[(i / m) * n + j / m] * b[(i % m) * m + j % m];
        }
    }
    out
}

/// The Q of a QR decomposition of a standard Gaussian matrix, with `R`'s diagonal made positive
/// (which makes Q Haar-distributed): modified Gram–Schmidt on the columns, twice for accuracy.
fn random_orthogonal(n: usize, rng: &mut StdRng) -> Vec<f64> {
    // Box–Muller: two uniforms give one standard normal.
    let mut cols: Vec<Vec<f64>> = (0..n)
        .map(|_| {
            (0..n)
                .map(|_| {
                    let (u, v): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
                    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
                })
                .collect()
        })
        .collect();
    for j in 0..n {
        for _ in 0..2 {
            for k in 0..j {
                let d: f64 = cols[j].iter().zip(&cols[k]).map(|(a, b)| a * b).sum();
                let (done, rest) = cols.split_at_mut(j);
                rest[0].iter_mut().zip(&done[k]).for_each(|(a, b)| *a -= d * b);
            }
        }
        let norm = cols[j].iter().map(|a| a * a).sum::<f64>().sqrt();
        cols[j].iter_mut().for_each(|a| *a /= norm);
    }
    let mut q = vec![0.0; n * n];
    for (j, col) in cols.iter().enumerate() {
        for (i, v) in col.iter().enumerate() {
            q[i * n + j] = *v;
        }
    }
    q
}

/// `A·diag(g)·Q` for a row-major `A` of `cols = n` columns (`g` optional), in f64.
fn right(a: &[f64], g: Option<&[f64]>, q: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; a.len()];
    out.par_chunks_exact_mut(n).zip(a.par_chunks_exact(n)).for_each(|(o, row)| {
        for (k, &x) in row.iter().enumerate() {
            let x = x * g.map_or(1.0, |g| g[k]);
            if x != 0.0 {
                o.iter_mut().zip(&q[k * n..(k + 1) * n]).for_each(|(o, q)| *o += x * q);
            }
        }
    });
    out
}

/// `Qᵀ·A` for a row-major `A` of `n` rows: output row `r` is `Σ_k Q[k][r]·A[k]`.
fn left_transposed(q: &[f64], a: &[f64], n: usize) -> Vec<f64> {
    let c = a.len() / n;
    let mut out = vec![0.0; a.len()];
    out.par_chunks_exact_mut(c).enumerate().for_each(|(r, o)| {
        for (k, row) in a.chunks_exact(c).enumerate() {
            let w = q[k * n + r];
            o.iter_mut().zip(row).for_each(|(o, x)| *o += w * x);
        }
    });
    out
}

/// What [`rotate_checkpoint`] did, for the command's report.
pub struct RotateReport {
    /// Order of the residual-stream rotation R1.
    pub hidden: usize,
    /// Order of the value-head rotation R2.
    pub head_dim: usize,
    /// Tensors written (one more than read when the head was tied).
    pub n_tensors: usize,
}

/// Writes `ckpt` rotated (module docs) to the new directory `out` as f32 safetensors with the
/// same config, except `tie_word_embeddings = false`; tokenizer and generation files are
/// copied, and `rotation.json` records `kind` and `seed`. `R1` is drawn first, then `R2`, from
/// one generator seeded with `seed`. The directory appears only when complete.
pub fn rotate_checkpoint(ckpt: &Checkpoint, kind: Rotation, seed: u64, out: &Path) -> Result<RotateReport, ModelError> {
    if out.exists() {
        return Err(ModelError::io(out, std::io::Error::new(std::io::ErrorKind::AlreadyExists, "output path already exists")));
    }
    let cfg = &ckpt.config;
    let bad = |field: &str, msg: String| ModelError::Config { path: ckpt.dir.join("config.json").display().to_string(), field: field.into(), msg };
    let (h, hd) = (cfg.hidden_size, cfg.head_dim);
    let mut rng = StdRng::seed_from_u64(seed);
    let r1 = orthogonal(kind, h, &mut rng).map_err(|e| bad("hidden_size", e))?;
    let r2 = orthogonal(kind, hd, &mut rng).map_err(|e| bad("head_dim", e))?;
    let tensors = CausalLm::checkpoint_tensors(ckpt)?;
    let get = |name: &str| -> Vec<f64> { tensors[name].iter().map(|&v| v as f64).collect() };
    let mut names = CausalLm::hf_tensor_names(cfg);
    if cfg.tie_word_embeddings {
        // The untied head starts as the embeddings (a tied checkpoint's own lm_head, if any,
        // is ignored, as loading ignores it).
        names.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, h]));
    }
    // Computed in f64 one tensor at a time, kept in f32: peak memory is the model twice in f32.
    let mut written: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for (name, shape) in names {
        let value = if name == "lm_head.weight" && cfg.tie_word_embeddings { get("model.embed_tokens.weight") } else { get(&name) };
        let rotated = rotated_tensor(cfg, &name, value, &get, &r1, &r2).map_err(|msg| ModelError::Safetensors { path: ckpt.dir.display().to_string(), msg })?;
        written.push((name, shape, rotated.into_iter().map(|x| x as f32).collect()));
    }
    let n_tensors = written.len();
    let mut config = crate::save::config_with_dtype(cfg.raw.clone(), crate::SaveDtype::F32);
    config["tie_word_embeddings"] = false.into();
    let record = serde_json::json!({ "rotation": kind, "seed": seed, "source": ckpt.dir.display().to_string() });
    let files =
        [("config.json", serde_json::to_string_pretty(&config).expect("JSON")), ("rotation.json", serde_json::to_string_pretty(&record).expect("JSON"))];
    crate::save::write_checkpoint_dir(out, Some(&ckpt.dir), written, crate::SaveDtype::F32, &files)?;
    Ok(RotateReport { hidden: h, head_dim: hd, n_tensors })
}

/// One checkpoint tensor after the rotation; `get` reads the original of another tensor. A
/// tensor this module does not know is an error, so that an architecture that gains a norm or
/// a bias cannot be rotated wrongly without a word.
fn rotated_tensor(cfg: &ModelConfig, name: &str, value: Vec<f64>, get: &impl Fn(&str) -> Vec<f64>, r1: &[f64], r2: &[f64]) -> Result<Vec<f64>, String> {
    let (h, hd) = (cfg.hidden_size, cfg.head_dim);
    let layer = |suffix: &str| name.strip_suffix(suffix).map(str::to_string);
    if name == "model.embed_tokens.weight" {
        return Ok(right(&value, None, r1, h));
    }
    if name == "lm_head.weight" {
        return Ok(right(&value, Some(&get("model.norm.weight")), r1, h));
    }
    if name == "model.norm.weight" || name.ends_with(".input_layernorm.weight") || name.ends_with(".post_attention_layernorm.weight") {
        return Ok(vec![1.0; value.len()]);
    }
    for (suffix, norm) in [
        (".self_attn.q_proj.weight", "input_layernorm"),
        (".self_attn.k_proj.weight", "input_layernorm"),
        (".self_attn.v_proj.weight", "input_layernorm"),
        (".mlp.gate_proj.weight", "post_attention_layernorm"),
        (".mlp.up_proj.weight", "post_attention_layernorm"),
    ] {
        if let Some(p) = layer(suffix) {
            let w = right(&value, Some(&get(&format!("{p}.{norm}.weight"))), r1, h);
            return Ok(if suffix == ".self_attn.v_proj.weight" { per_head_left(r2, &w, hd, h) } else { w });
        }
    }
    if name.ends_with(".self_attn.v_proj.bias") {
        return Ok(per_head_left(r2, &value, hd, 1));
    }
    if name.ends_with(".self_attn.o_proj.weight") {
        // Rows of the output stream (Qᵀ·W), columns per value head (·R2).
        return Ok(right(&left_transposed(r1, &value, h), None, r2, hd));
    }
    if name.ends_with(".self_attn.o_proj.bias") || name.ends_with(".mlp.down_proj.weight") {
        return Ok(left_transposed(r1, &value, h));
    }
    // q/k biases and q/k norms act after the projections, which R1 leaves unchanged.
    const UNCHANGED: [&str; 6] = [
        ".self_attn.q_proj.bias",
        ".self_attn.k_proj.bias",
        ".self_attn.q_norm.weight",
        ".self_attn.k_norm.weight",
        ".self_attn.query_layernorm.weight",
        ".self_attn.key_layernorm.weight",
    ];
    if UNCHANGED.iter().any(|s| name.ends_with(s)) {
        return Ok(value);
    }
    Err(format!("`{name}`: no rule rotates this tensor (rotate.rs knows the Llama block's tensors only)"))
}

/// `R2ᵀ·B` for each block `B` of `hd` consecutive rows of a row-major matrix of `cols`
/// columns (a value head's rows of v_proj, or of its bias with `cols = 1`).
fn per_head_left(r2: &[f64], a: &[f64], hd: usize, cols: usize) -> Vec<f64> {
    a.chunks_exact(hd * cols).flat_map(|b| left_transposed(r2, b, hd)).collect()
}
