//! Benchmark files read into [`McItem`]s, each with the prompt of the lm-evaluation-harness
//! v0.4 task of the same name (zero-shot), so the accuracies compare with lm-eval's:
//!
//! - **HellaSwag** (`hellaswag`): context `preprocess(activity_label + ": " + ctx_a + " " +
//!   ctx_b.capitalize())`, choices `" " + preprocess(ending)`; `acc` and `acc_norm`.
//! - **MMLU** (`mmlu`): "The following are multiple choice questions (with answers) about
//!   {subject}.\n\n{question}\nA. …\nD. …\nAnswer:" and the letters " A".." D"; `acc`.
//! - **llm-foundry zero-shot JSONL** (one file per task, as mosaicml/llm-foundry ships them):
//!   `{query, choices, gold}` is ARC-Easy/-Challenge, PIQA and the like — context
//!   `query + "\nAnswer:"` (the query carries its "Question: "), choices `" " + choice`, as
//!   lm-eval's `arc_easy` / `piqa` prompts; `acc` and `acc_norm`. `{context_options,
//!   continuation, gold}` is Winogrande's partial scoring — the same continuation
//!   `" " + continuation` after each context; `acc`.
//! - **LAMBADA-style JSONL** `{context, continuation}`: the continuation after the context as
//!   given (lm-eval's `lambada_openai` puts the space before the last word into the
//!   continuation), `acc` = greedy decoding reproduces it, and `perplexity`.

use std::path::{Path, PathBuf};

use qat_model::CausalLm;
use qat_tokenizer::Tokenizer;

use crate::EvalError;
use crate::choice::{McItem, McResult, ScoreOptions, score_items};

/// A benchmark and where its data is.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// HellaSwag JSONL as released (ctx_a, ctx_b, activity_label, endings, label).
    HellaSwag(PathBuf),
    /// MMLU: a directory with `<split>/*.csv` files (question, A, B, C, D, answer; no header).
    Mmlu { dir: PathBuf, split: String },
    /// A zero-shot JSONL file in one of llm-foundry's two layouts, or LAMBADA's (module docs).
    Jsonl(PathBuf),
}

impl Task {
    /// The name results are reported under: `hellaswag`, `mmlu`, or the JSONL file's stem
    /// (`arc_easy`, `piqa`, …).
    pub fn name(&self) -> String {
        match self {
            Task::HellaSwag(_) => "hellaswag".into(),
            Task::Mmlu { .. } => "mmlu".into(),
            Task::Jsonl(p) => p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "mc".into()),
        }
    }

    /// The file or directory the task reads.
    pub fn path(&self) -> &Path {
        match self {
            Task::HellaSwag(p) | Task::Jsonl(p) => p,
            Task::Mmlu { dir, .. } => dir,
        }
    }

    /// The first `limit` items (0 = all). MMLU takes its questions round-robin over subjects,
    /// so that a limit still covers every subject.
    pub fn items(&self, limit: usize) -> Result<Vec<McItem>, EvalError> {
        let mut items = match self {
            Task::HellaSwag(p) => jsonl_items(p, hellaswag_item)?,
            Task::Jsonl(p) => jsonl_items(p, foundry_item)?,
            Task::Mmlu { dir, split } => mmlu_items(dir, split)?,
        };
        if limit > 0 {
            items.truncate(limit);
        }
        Ok(items)
    }

    /// Accuracy of `model` on the first `limit` items (0 = all).
    pub fn evaluate(&self, model: &CausalLm, tok: &Tokenizer, limit: usize, opts: ScoreOptions) -> Result<McResult, EvalError> {
        score_items(model, tok, &self.path().display().to_string(), &self.items(limit)?, opts)
    }
}

type Fields = serde_json::Map<String, serde_json::Value>;

/// Every non-blank line of a JSONL file through `parse`, errors naming the file and line.
fn jsonl_items(path: &Path, parse: fn(&Fields) -> Result<McItem, String>) -> Result<Vec<McItem>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io { path: path.display().to_string(), source })?;
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let err = |msg: String| EvalError::Item { path: path.display().to_string(), line: i + 1, msg };
        let v: Fields = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
        let item = parse(&v).map_err(err)?;
        if item.gold >= item.requests.len() {
            return Err(err(format!("gold {} but {} choices", item.gold, item.requests.len())));
        }
        items.push(McItem { line: i + 1, ..item });
    }
    Ok(items)
}

fn string<'a>(v: &'a Fields, key: &str) -> Result<&'a str, String> {
    v.get(key).and_then(|x| x.as_str()).ok_or_else(|| format!("missing string field `{key}`"))
}

fn strings(v: &Fields, key: &str) -> Result<Vec<String>, String> {
    let list = v.get(key).and_then(|x| x.as_array()).ok_or_else(|| format!("missing list `{key}`"))?;
    if list.len() < 2 {
        return Err(format!("`{key}` has {} entries, need at least 2", list.len()));
    }
    list.iter().map(|x| x.as_str().map(str::to_string).ok_or_else(|| format!("`{key}` holds a non-string"))).collect()
}

fn index(v: &Fields, key: &str) -> Result<usize, String> {
    v.get(key).and_then(|x| x.as_u64()).map(|x| x as usize).ok_or_else(|| format!("missing non-negative integer `{key}`"))
}

/// Requests that put each choice, after lm-eval's " " delimiter, behind one context.
fn after_context(context: &str, choices: &[String]) -> Vec<(String, String)> {
    choices.iter().map(|c| (context.to_string(), format!(" {c}"))).collect()
}

fn char_lengths(choices: &[String]) -> Option<Vec<usize>> {
    Some(choices.iter().map(|c| c.chars().count()).collect())
}

/// An item of either llm-foundry layout (its `line` is set by the caller).
fn foundry_item(v: &Fields) -> Result<McItem, String> {
    let gold = if v.contains_key("gold") || !v.contains_key("context") { index(v, "gold")? } else { 0 };
    if v.contains_key("query") {
        let choices = strings(v, "choices")?;
        let context = format!("{}\nAnswer:", string(v, "query")?);
        Ok(McItem { line: 0, requests: after_context(&context, &choices), gold, norm_chars: char_lengths(&choices), greedy: false })
    } else if v.contains_key("context_options") {
        let continuation = format!(" {}", string(v, "continuation")?);
        let requests = strings(v, "context_options")?.into_iter().map(|c| (c, continuation.clone())).collect();
        Ok(McItem { line: 0, requests, gold, norm_chars: None, greedy: false })
    } else if v.contains_key("context") {
        let requests = vec![(string(v, "context")?.to_string(), string(v, "continuation")?.to_string())];
        Ok(McItem { line: 0, requests, gold: 0, norm_chars: None, greedy: true })
    } else {
        Err("neither `query` + `choices`, `context_options` + `continuation` nor `context` + `continuation`: not a zero-shot item qat reads".into())
    }
}

/// lm-eval's HellaSwag `preprocess`: strip, " [title]" → ". ", drop `[…]` spans (no newline
/// inside, shortest match), collapse one level of double spaces.
fn hellaswag_preprocess(s: &str) -> String {
    let s = s.trim().replace(" [title]", ". ");
    let (mut out, mut rest) = (String::with_capacity(s.len()), s.as_str());
    while let Some(i) = rest.find('[') {
        let after = &rest[i + 1..];
        match after.find([']', '\n']) {
            Some(j) if after.as_bytes()[j] == b']' => {
                out.push_str(&rest[..i]);
                rest = &after[j + 1..];
            }
            _ => {
                out.push_str(&rest[..=i]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("  ", " ")
}

/// Python's `str.capitalize`: the first character upper case, the rest lower case.
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars.as_str().to_lowercase().chars()).collect()).unwrap_or_default()
}

fn hellaswag_item(v: &Fields) -> Result<McItem, String> {
    let context = hellaswag_preprocess(&format!("{}: {} {}", string(v, "activity_label")?, string(v, "ctx_a")?, capitalize(string(v, "ctx_b")?)));
    let choices: Vec<String> = strings(v, "endings")?.iter().map(|e| hellaswag_preprocess(e)).collect();
    let gold = match v.get("label") {
        Some(serde_json::Value::String(s)) => s.parse().map_err(|_| format!("`label` {s:?} is not an integer"))?,
        _ => index(v, "label")?,
    };
    Ok(McItem { line: 0, requests: after_context(&context, &choices), gold, norm_chars: char_lengths(&choices), greedy: false })
}

fn mmlu_items(dir: &Path, split: &str) -> Result<Vec<McItem>, EvalError> {
    let split_dir = dir.join(split);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&split_dir)
        .map_err(|source| EvalError::Io { path: split_dir.display().to_string(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(EvalError::File { path: split_dir.display().to_string(), msg: "no CSV files".into() });
    }
    let letters: Vec<String> = ["A", "B", "C", "D"].iter().map(|l| l.to_string()).collect();
    let mut subjects = Vec::new();
    for f in &files {
        let subject = f.file_stem().unwrap_or_default().to_string_lossy().trim_end_matches(&format!("_{split}")).replace('_', " ");
        let mut rdr =
            csv::ReaderBuilder::new().has_headers(false).from_path(f).map_err(|e| EvalError::File { path: f.display().to_string(), msg: e.to_string() })?;
        let mut rows = Vec::new();
        for (i, rec) in rdr.records().enumerate() {
            let err = |msg: String| EvalError::Item { path: f.display().to_string(), line: i + 1, msg };
            let rec = rec.map_err(|e| err(e.to_string()))?;
            if rec.len() != 6 {
                return Err(err(format!("expected 6 columns (question, A, B, C, D, answer), found {}", rec.len())));
            }
            let gold = letters.iter().position(|l| *l == rec[5]).ok_or_else(|| err(format!("answer `{}` is not A-D", &rec[5])))?;
            let context = format!(
                "The following are multiple choice questions (with answers) about {subject}.\n\n{}\nA. {}\nB. {}\nC. {}\nD. {}\nAnswer:",
                rec[0].trim(),
                &rec[1],
                &rec[2],
                &rec[3],
                &rec[4]
            );
            rows.push(McItem { line: i + 1, requests: after_context(&context, &letters), gold, norm_chars: None, greedy: false });
        }
        subjects.push(rows.into_iter());
    }
    // Round-robin over subjects.
    let mut items = Vec::new();
    loop {
        let before = items.len();
        items.extend(subjects.iter_mut().filter_map(Iterator::next));
        if items.len() == before {
            return Ok(items);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellaswag_text_is_cleaned_as_lm_eval_does() {
        assert_eq!(hellaswag_preprocess(" A man [title] walks [step] in. "), "A man. walks in.");
        // An unclosed bracket stays; a bracket span may not cross a line.
        assert_eq!(hellaswag_preprocess("a [b\n] c [d] e"), "a [b\n] c e");
        assert_eq!(capitalize("tHE dog"), "The dog");
        assert_eq!(capitalize(""), "");
    }

    #[test]
    fn malformed_items_name_file_and_line() {
        let dir = std::env::temp_dir().join(format!("qat-eval-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.jsonl");
        std::fs::write(&p, "{\"query\": \"Q\", \"choices\": [\"a\", \"b\"], \"gold\": 1}\n\n{\"query\": \"Q\", \"choices\": [\"a\", \"b\"], \"gold\": 2}\n")
            .unwrap();
        let e = Task::Jsonl(p.clone()).items(0).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl:3") && e.contains("gold 2 but 2 choices"), "{e}");
        std::fs::write(&p, "{\"prompt\": \"x\", \"gold\": 0}\n").unwrap();
        let e = Task::Jsonl(p.clone()).items(0).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl:1") && e.contains("zero-shot item"), "{e}");
        std::fs::write(&p, "{\"context\": \"x\"}\n").unwrap();
        let e = Task::Jsonl(p.clone()).items(0).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl:1") && e.contains("`continuation`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn foundry_layouts_become_lm_eval_requests() {
        let v: Fields = serde_json::from_str(r#"{"query": "Question: Why?", "choices": ["Sun", "Rain"], "gold": 0}"#).unwrap();
        let item = foundry_item(&v).unwrap();
        assert_eq!(item.requests, vec![("Question: Why?\nAnswer:".into(), " Sun".into()), ("Question: Why?\nAnswer:".into(), " Rain".into())]);
        assert_eq!((item.gold, item.norm_chars), (0, Some(vec![3, 4])));
        let v: Fields = serde_json::from_str(r#"{"context_options": ["so Sarah", "so Maria"], "continuation": "won.", "gold": 1}"#).unwrap();
        let item = foundry_item(&v).unwrap();
        assert_eq!(item.requests, vec![("so Sarah".into(), " won.".into()), ("so Maria".into(), " won.".into())]);
        assert_eq!((item.gold, item.norm_chars), (1, None));
        let v: Fields = serde_json::from_str(r#"{"context": "The cat sat on the", "continuation": " mat"}"#).unwrap();
        let item = foundry_item(&v).unwrap();
        assert_eq!(item.requests, vec![("The cat sat on the".into(), " mat".into())]);
        assert!(item.greedy);
    }
}
