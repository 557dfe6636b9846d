//! Multiple-choice log-likelihood benchmarks, scored as lm-evaluation-harness does:
//! HellaSwag (sum of continuation log-probs; `acc_norm` divides by the continuation's byte
//! length) and MMLU zero-shot (the letter among " A".." D" with the highest next-token
//! log-prob after "Answer:").

use std::path::Path;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use qat_model::{AttentionBatch, CausalLm};
use qat_tokenizer::Tokenizer;

/// Accuracy over `n` items.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct McResult {
    pub n: usize,
    pub acc: f64,
    pub acc_norm: f64,
}

fn bench_err(path: &Path, line: usize, msg: impl std::fmt::Display) -> String {
    format!("{}:{line}: {msg}", path.display())
}

/// lm-eval's HellaSwag text cleanup.
fn hellaswag_clean(s: &str) -> String {
    let s = s.trim().replace(" [title]", ". ");
    let mut out = String::with_capacity(s.len());
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '[' => depth += 1,
            ']' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.replace("  ", " ")
}

/// Sum of log p(continuation | context) for several continuations of one context, in one
/// right-padded batch.
fn continuation_logprobs(model: &CausalLm, ctx: &[u32], conts: &[Vec<u32>]) -> Vec<f64> {
    let device = model.embed_tokens.weight.val().device();
    if conts.iter().all(|c| c.len() == 1) {
        // Single-token continuations share one forward pass of the context.
        let t = ctx.len();
        let ids: Vec<i64> = ctx.iter().map(|&x| x as i64).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &device);
        let logits = model.forward(tokens, &AttentionBatch::causal(&[t], t, 0, &device), None).narrow(1, t - 1, 1);
        let lp: Vec<f32> = log_softmax(logits, 2).into_data().try_to_vec::<f32>().expect("f32");
        return conts.iter().map(|c| lp[c[0] as usize] as f64).collect();
    }
    let lens: Vec<usize> = conts.iter().map(|c| ctx.len() + c.len() - 1).collect();
    let t = *lens.iter().max().expect("at least one continuation");
    let mut ids = Vec::with_capacity(conts.len() * t);
    for c in conts {
        let row: Vec<i64> = ctx.iter().chain(c.iter()).take(ctx.len() + c.len() - 1).map(|&x| x as i64).collect();
        ids.extend(row.iter().copied().chain(std::iter::repeat_n(0, t - row.len())));
    }
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [conts.len(), t]), &device);
    let logits = model.forward(tokens, &AttentionBatch::causal(&lens, t, 0, &device), None);
    let lp = log_softmax(logits, 2);
    let v = lp.dims()[2];
    let lp: Vec<f32> = lp.into_data().try_to_vec::<f32>().expect("f32");
    conts.iter().enumerate().map(|(b, c)| c.iter().enumerate().map(|(j, &tok)| lp[(b * t + ctx.len() - 1 + j) * v + tok as usize] as f64).sum()).collect()
}

fn encode_context(tok: &Tokenizer, model: &CausalLm, text: &str) -> Result<Vec<u32>, String> {
    let mut ids: Vec<u32> = model.config.bos_token_id.into_iter().collect();
    ids.extend(tok.encode(text, false).map_err(|e| e.to_string())?);
    Ok(ids)
}

/// HellaSwag accuracy over the first `limit` items (0 = all) of a JSONL file.
pub fn hellaswag(model: &CausalLm, tok: &Tokenizer, path: &Path, limit: usize) -> Result<McResult, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (mut n, mut hit, mut hit_norm) = (0usize, 0usize, 0usize);
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        if limit > 0 && n == limit {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bench_err(path, i + 1, e))?;
        let get = |k: &str| v.get(k).and_then(|x| x.as_str()).ok_or_else(|| bench_err(path, i + 1, format!("missing string field `{k}`")));
        let ctx_b = get("ctx_b")?;
        let mut cap = ctx_b.chars();
        let ctx_b = cap.next().map(|c| c.to_uppercase().collect::<String>() + cap.as_str()).unwrap_or_default();
        let ctx = hellaswag_clean(&format!("{}: {} {}", get("activity_label")?, get("ctx_a")?, ctx_b));
        let label = v.get("label").and_then(|x| x.as_u64()).ok_or_else(|| bench_err(path, i + 1, "missing integer `label`"))? as usize;
        let endings: Vec<String> = v
            .get("endings")
            .and_then(|x| x.as_array())
            .ok_or_else(|| bench_err(path, i + 1, "missing `endings`"))?
            .iter()
            .map(|e| e.as_str().map(|s| format!(" {}", hellaswag_clean(s))).ok_or_else(|| bench_err(path, i + 1, "ending is not a string")))
            .collect::<Result<_, _>>()?;
        if label >= endings.len() {
            return Err(bench_err(path, i + 1, format!("label {label} but {} endings", endings.len())));
        }
        let ctx_ids = encode_context(tok, model, &ctx)?;
        let conts: Vec<Vec<u32>> = endings.iter().map(|e| tok.encode(e, false).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
        let scores = continuation_logprobs(model, &ctx_ids, &conts);
        let argmax = |f: &dyn Fn(usize) -> f64| (0..scores.len()).max_by(|&a, &b| f(a).total_cmp(&f(b))).unwrap();
        hit += usize::from(argmax(&|j| scores[j]) == label);
        hit_norm += usize::from(argmax(&|j| scores[j] / endings[j].len() as f64) == label);
        n += 1;
    }
    if n == 0 {
        return Err(format!("{}: no items", path.display()));
    }
    Ok(McResult { n, acc: hit as f64 / n as f64, acc_norm: hit_norm as f64 / n as f64 })
}

/// MMLU zero-shot accuracy on `dir/<split>/*.csv`, taking questions round-robin over subjects
/// so that a `limit` covers all subjects (0 = all questions).
pub fn mmlu(model: &CausalLm, tok: &Tokenizer, dir: &Path, split: &str, limit: usize) -> Result<McResult, String> {
    let split_dir = dir.join(split);
    let mut files: Vec<_> = std::fs::read_dir(&split_dir)
        .map_err(|e| format!("{}: {e}", split_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    let mut subjects = Vec::new();
    for f in &files {
        let subject = f.file_stem().unwrap().to_string_lossy().trim_end_matches(&format!("_{split}")).replace('_', " ");
        let mut rows = Vec::new();
        let mut rdr = csv::ReaderBuilder::new().has_headers(false).from_path(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for (i, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(|e| format!("{}:{}: {e}", f.display(), i + 1))?;
            if rec.len() != 6 {
                return Err(format!("{}:{}: expected 6 columns (question, A, B, C, D, answer), found {}", f.display(), i + 1, rec.len()));
            }
            let answer = match &rec[5] {
                "A" => 0,
                "B" => 1,
                "C" => 2,
                "D" => 3,
                other => {
                    return Err(format!("{}:{}: answer `{other}` is not A-D", f.display(), i + 1));
                }
            };
            rows.push((rec[0].to_string(), [rec[1].to_string(), rec[2].to_string(), rec[3].to_string(), rec[4].to_string()], answer));
        }
        subjects.push((subject, rows));
    }
    if subjects.is_empty() {
        return Err(format!("{}: no CSV files", split_dir.display()));
    }
    let letters: Vec<u32> = ["A", "B", "C", "D"]
        .iter()
        .map(|l| {
            let ids = tok.encode(&format!(" {l}"), false).map_err(|e| e.to_string())?;
            ids.last().copied().ok_or_else(|| "empty letter encoding".to_string())
        })
        .collect::<Result<_, String>>()?;
    let (mut n, mut hit) = (0usize, 0usize);
    let max_rows = subjects.iter().map(|s| s.1.len()).max().unwrap_or(0);
    'outer: for r in 0..max_rows {
        for (subject, rows) in &subjects {
            if limit > 0 && n == limit {
                break 'outer;
            }
            let Some((q, choices, answer)) = rows.get(r) else {
                continue;
            };
            let prompt = format!(
                "The following are multiple choice questions (with answers) about {subject}.\n\n{q}\nA. {}\nB. {}\nC. {}\nD. {}\nAnswer:",
                choices[0], choices[1], choices[2], choices[3]
            );
            let ctx = encode_context(tok, model, &prompt)?;
            let scores = continuation_logprobs(model, &ctx, &letters.iter().map(|&l| vec![l]).collect::<Vec<_>>());
            let best = (0..4).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap();
            hit += usize::from(best == *answer);
            n += 1;
        }
    }
    Ok(McResult { n, acc: hit as f64 / n as f64, acc_norm: hit as f64 / n as f64 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use qat_model::Checkpoint;

    /// Batched, right-padded scoring of several continuations equals scoring each one alone.
    #[test]
    fn batched_continuations_match_single_sequences() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../qat-model/tests/fixtures/llama");
        let model = CausalLm::from_checkpoint(&Checkpoint::open(&dir).unwrap(), &burn::tensor::Device::flex()).unwrap();
        let ctx = vec![1u32, 17, 42, 9];
        let conts = vec![vec![5u32, 6, 7], vec![8u32], vec![10u32, 11, 12, 13, 14]];
        let batched = continuation_logprobs(&model, &ctx, &conts);
        for (c, b) in conts.iter().zip(&batched) {
            let seq: Vec<u32> = ctx.iter().chain(c).copied().collect();
            let nll = qat_model::eval::token_nll(&model, &seq);
            let single: f64 = -nll[ctx.len() - 1..].iter().map(|&x| x as f64).sum::<f64>();
            assert!((single - b).abs() < 1e-4, "{single} vs {b}");
        }
        // The single-token path (MMLU letters) agrees with the general one.
        let letters = vec![vec![3u32], vec![4u32]];
        let fast = continuation_logprobs(&model, &ctx, &letters);
        for (c, f) in letters.iter().zip(&fast) {
            let seq: Vec<u32> = ctx.iter().chain(c).copied().collect();
            let single = -(*qat_model::eval::token_nll(&model, &seq).last().unwrap() as f64);
            assert!((single - f).abs() < 1e-4);
        }
    }
}
