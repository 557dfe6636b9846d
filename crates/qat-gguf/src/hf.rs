//! The correspondence between Hugging Face checkpoints and llama.cpp's GGUF conventions
//! (`shared/docs/formats.md` §3): architecture names, tensor names, and the q/k row
//! permutation llama.cpp's converter applies for arch `llama`. Import and export both use it.

/// `(HF model_type, GGUF general.architecture)` pairs qat converts.
pub const ARCHES: &[(&str, &str)] = &[("llama", "llama"), ("qwen2", "qwen2"), ("qwen3", "qwen3"), ("hunyuan_v1_dense", "hunyuan-dense")];

pub fn gguf_arch(model_type: &str) -> Option<&'static str> {
    ARCHES.iter().find(|(m, _)| *m == model_type).map(|(_, g)| *g)
}

pub fn hf_model_type(gguf_arch: &str) -> Option<&'static str> {
    ARCHES.iter().find(|(_, g)| *g == gguf_arch).map(|(m, _)| *m)
}

/// Per-layer tensor names: `(GGUF suffix after blk.N., HF suffix after model.layers.N.)`.
const LAYER_NAMES: &[(&str, &str)] = &[
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// The per-head q/k norm names in HF for an architecture.
fn qk_norm_hf(model_type: &str) -> (&'static str, &'static str) {
    match model_type {
        "hunyuan_v1_dense" => ("self_attn.query_layernorm", "self_attn.key_layernorm"),
        _ => ("self_attn.q_norm", "self_attn.k_norm"),
    }
}

/// HF tensor name → GGUF tensor name, or `None` for a name with no GGUF counterpart.
pub fn gguf_name(model_type: &str, hf: &str) -> Option<String> {
    let (stem, kind) = hf.rsplit_once('.')?;
    let base = match stem {
        "model.embed_tokens" => "token_embd".to_string(),
        "model.norm" => "output_norm".to_string(),
        "lm_head" => "output".to_string(),
        _ => {
            let rest = stem.strip_prefix("model.layers.")?;
            let (n, suffix) = rest.split_once('.')?;
            n.parse::<usize>().ok()?;
            let (qn, kn) = qk_norm_hf(model_type);
            let g = if suffix == qn {
                "attn_q_norm"
            } else if suffix == kn {
                "attn_k_norm"
            } else {
                LAYER_NAMES.iter().find(|(_, h)| *h == suffix)?.0
            };
            format!("blk.{n}.{g}")
        }
    };
    Some(format!("{base}.{kind}"))
}

/// GGUF tensor name → HF tensor name.
pub fn hf_name(model_type: &str, gguf: &str) -> Option<String> {
    let (stem, kind) = gguf.rsplit_once('.')?;
    let base = match stem {
        "token_embd" => "model.embed_tokens".to_string(),
        "output_norm" => "model.norm".to_string(),
        "output" => "lm_head".to_string(),
        _ => {
            let rest = stem.strip_prefix("blk.")?;
            let (n, suffix) = rest.split_once('.')?;
            n.parse::<usize>().ok()?;
            let (qn, kn) = qk_norm_hf(model_type);
            let h = match suffix {
                "attn_q_norm" => qn,
                "attn_k_norm" => kn,
                _ => LAYER_NAMES.iter().find(|(g, _)| *g == suffix)?.1,
            };
            format!("model.layers.{n}.{h}")
        }
    };
    Some(format!("{base}.{kind}"))
}

/// For arch `llama`, q and k rows (and biases) are permuted by llama.cpp's converter; returns
/// the head count to permute with, or `None` when the tensor is stored as in HF.
pub fn permute_heads(model_type: &str, hf: &str, n_head: usize, n_head_kv: usize) -> Option<usize> {
    if model_type != "llama" {
        return None;
    }
    if hf.ends_with("self_attn.q_proj.weight") || hf.ends_with("self_attn.q_proj.bias") {
        Some(n_head)
    } else if hf.ends_with("self_attn.k_proj.weight") || hf.ends_with("self_attn.k_proj.bias") {
        Some(n_head_kv)
    } else {
        None
    }
}

/// Reorders rows of a `[rows, cols]` matrix from rotate-half to llama.cpp's interleaved order:
/// `w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2)` (`convert_hf_to_gguf.py` `permute`).
pub fn permute_rows<T: Copy>(w: &[T], rows: usize, cols: usize, n_head: usize) -> Vec<T> {
    let half = rows / n_head / 2;
    // New row (h, j, i) ← old row (h, i, j) with i ∈ {0,1}, j < half.
    reorder_rows(w, cols, rows, |new| {
        let (h, r) = (new / (2 * half), new % (2 * half));
        let (j, i) = (r / 2, r % 2);
        h * 2 * half + i * half + j
    })
}

/// Inverse of [`permute_rows`].
pub fn unpermute_rows<T: Copy>(w: &[T], rows: usize, cols: usize, n_head: usize) -> Vec<T> {
    let half = rows / n_head / 2;
    reorder_rows(w, cols, rows, |new| {
        let (h, r) = (new / (2 * half), new % (2 * half));
        let (i, j) = (r / half, r % half);
        h * 2 * half + j * 2 + i
    })
}

fn reorder_rows<T: Copy>(w: &[T], cols: usize, rows: usize, old_of_new: impl Fn(usize) -> usize) -> Vec<T> {
    let mut out = Vec::with_capacity(w.len());
    for new in 0..rows {
        let old = old_of_new(new);
        out.extend_from_slice(&w[old * cols..(old + 1) * cols]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for mt in ["llama", "qwen3", "hunyuan_v1_dense"] {
            for hf in [
                "model.embed_tokens.weight",
                "model.norm.weight",
                "lm_head.weight",
                "model.layers.3.self_attn.q_proj.weight",
                "model.layers.3.self_attn.q_proj.bias",
                "model.layers.12.mlp.down_proj.weight",
                "model.layers.0.post_attention_layernorm.weight",
            ] {
                let g = gguf_name(mt, hf).unwrap();
                assert_eq!(hf_name(mt, &g).as_deref(), Some(hf), "{mt} {hf} -> {g}");
            }
        }
        assert_eq!(gguf_name("qwen3", "model.layers.1.self_attn.q_norm.weight").unwrap(), "blk.1.attn_q_norm.weight");
        assert_eq!(gguf_name("hunyuan_v1_dense", "model.layers.1.self_attn.key_layernorm.weight").unwrap(), "blk.1.attn_k_norm.weight");
        assert_eq!(gguf_name("llama", "model.layers.x.mlp.up_proj.weight"), None);
    }

    #[test]
    fn permutation_matches_convert_hf_to_gguf() {
        // 2 heads, head_dim 4, 1 column: rows per head [a0 a1 b0 b1] → [a0 b0 a1 b1].
        let w: Vec<u32> = (0..8).collect();
        let p = permute_rows(&w, 8, 1, 2);
        assert_eq!(p, vec![0, 2, 1, 3, 4, 6, 5, 7]);
        assert_eq!(unpermute_rows(&p, 8, 1, 2), w);
        let w: Vec<u32> = (0..48).collect();
        assert_eq!(unpermute_rows(&permute_rows(&w, 12, 4, 3), 12, 4, 3), w);
    }
}
