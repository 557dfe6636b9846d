//! Data sources and the documents they yield.
//!
//! Line-based formats (text split by line or blank line, JSONL) are read as a stream; JSON
//! array formats (Alpaca, ShareGPT) are parsed whole, which is fine at their usual sizes.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::DataError;
use qat_tokenizer::Message;

/// File formats qat reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Plain text; documents separated as `split` says.
    Text,
    /// One JSON object per line with a text field (`field`, default "text").
    Jsonl,
    /// A JSON array of `{instruction, input, output}`.
    Alpaca,
    /// JSON array or JSONL of conversations: `{"messages": [{role, content}]}` or ShareGPT
    /// `{"conversations": [{from, value}]}`.
    Chat,
    /// JSONL of question/answer pairs (`question_field`, `answer_field`; GSM8K by default).
    Qa,
}

/// How a text file is cut into documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Paragraphs separated by blank lines.
    BlankLine,
    Line,
    /// The whole file is one document.
    None,
}

/// One `[[data.sources]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name in reports; defaults to the file stem.
    #[serde(default)]
    pub name: Option<String>,
    pub path: PathBuf,
    pub format: Format,
    /// Mixing category (e.g. chat, math, code, text).
    pub category: String,
    /// Weight of this source within its category.
    #[serde(default = "one")]
    pub weight: f64,
    /// Text field for `jsonl`.
    #[serde(default = "text_field")]
    pub field: String,
    #[serde(default = "question_field")]
    pub question_field: String,
    #[serde(default = "answer_field")]
    pub answer_field: String,
    /// Document separation for `text`.
    #[serde(default = "blank_line")]
    pub split: Split,
    /// Render Alpaca, chat and Q&A through the chat template with loss on assistant tokens
    /// (true), or as plain text with loss everywhere (false).
    #[serde(default = "yes")]
    pub chat_template: bool,
    /// Use at most this many documents (0 = all).
    #[serde(default)]
    pub max_documents: usize,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn blank_line() -> Split {
    Split::BlankLine
}
fn text_field() -> String {
    "text".into()
}
fn question_field() -> String {
    "question".into()
}
fn answer_field() -> String {
    "answer".into()
}

impl SourceConfig {
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default())
    }
}

/// A training document.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// Loss on every token.
    Text(String),
    /// Loss on assistant turns only (when rendered with the chat template).
    Chat(Vec<Message>),
}

fn err(path: &Path, line: Option<usize>, msg: impl std::fmt::Display) -> DataError {
    DataError::Source { path: path.display().to_string(), line, msg: msg.to_string() }
}

fn json_str<'a>(v: &'a serde_json::Value, field: &str, path: &Path, line: Option<usize>) -> Result<&'a str, DataError> {
    v.get(field).and_then(|x| x.as_str()).ok_or_else(|| err(path, line, format!("field `{field}` is missing or not a string")))
}

fn chat_from_json(v: &serde_json::Value, path: &Path, line: Option<usize>) -> Result<Vec<Message>, DataError> {
    if let Some(msgs) = v.get("messages").and_then(|m| m.as_array()) {
        return msgs.iter().map(|m| Ok(Message::new(json_str(m, "role", path, line)?, json_str(m, "content", path, line)?))).collect();
    }
    if let Some(conv) = v.get("conversations").and_then(|m| m.as_array()) {
        return conv
            .iter()
            .map(|m| {
                let role = match json_str(m, "from", path, line)? {
                    "human" | "user" => "user",
                    "gpt" | "assistant" | "chatgpt" | "bard" | "bing" => "assistant",
                    "system" => "system",
                    other => {
                        return Err(err(path, line, format!("unknown ShareGPT speaker `{other}`")));
                    }
                };
                Ok(Message::new(role, json_str(m, "value", path, line)?))
            })
            .collect();
    }
    Err(err(path, line, "expected a `messages` or `conversations` array"))
}

/// Reads all documents of a source, calling `f` for each (streaming for line formats).
pub fn for_each_document(cfg: &SourceConfig, mut f: impl FnMut(Document) -> Result<(), DataError>) -> Result<usize, DataError> {
    let path = cfg.path.as_path();
    let file = std::fs::File::open(path).map_err(|e| err(path, None, e))?;
    let mut reader = std::io::BufReader::new(file);
    let mut n = 0usize;
    let limit = if cfg.max_documents == 0 { usize::MAX } else { cfg.max_documents };
    let mut emit = |d: Document, n: &mut usize| -> Result<bool, DataError> {
        if *n >= limit {
            return Ok(false);
        }
        *n += 1;
        f(d)?;
        Ok(true)
    };
    let qa_or_alpaca = |prompt: String, answer: String| {
        if cfg.chat_template {
            Document::Chat(vec![Message::new("user", &prompt), Message::new("assistant", &answer)])
        } else {
            Document::Text(format!("{prompt}\n{answer}"))
        }
    };
    match cfg.format {
        Format::Text => {
            let mut buf = String::new();
            let mut line = String::new();
            loop {
                line.clear();
                let read = reader.read_line(&mut line).map_err(|e| err(path, None, e))?;
                let ended = read == 0;
                let is_blank = line.trim().is_empty();
                let boundary = match cfg.split {
                    Split::Line => !ended,
                    Split::BlankLine => is_blank,
                    Split::None => false,
                };
                if !(cfg.split == Split::BlankLine && is_blank) {
                    buf.push_str(&line);
                }
                if (boundary || ended) && !buf.trim().is_empty() {
                    let doc = std::mem::take(&mut buf);
                    let doc = if cfg.split == Split::None { doc } else { doc.trim_end_matches(['\n', '\r']).to_string() };
                    if !emit(Document::Text(doc), &mut n)? {
                        break;
                    }
                } else if boundary {
                    buf.clear();
                }
                if ended {
                    break;
                }
            }
        }
        Format::Jsonl | Format::Qa | Format::Chat if !starts_with_array(path)? => {
            for (i, line) in reader.lines().enumerate() {
                let line = line.map_err(|e| err(path, Some(i + 1), e))?;
                if line.trim().is_empty() {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| err(path, Some(i + 1), format!("invalid JSON: {e}")))?;
                let ln = Some(i + 1);
                let doc = match cfg.format {
                    Format::Jsonl => Document::Text(json_str(&v, &cfg.field, path, ln)?.to_string()),
                    Format::Qa => qa_or_alpaca(json_str(&v, &cfg.question_field, path, ln)?.into(), json_str(&v, &cfg.answer_field, path, ln)?.into()),
                    _ => Document::Chat(chat_from_json(&v, path, ln)?),
                };
                if !emit(doc, &mut n)? {
                    break;
                }
            }
        }
        Format::Jsonl | Format::Qa => {
            return Err(err(path, None, "expected JSON Lines (one object per line), found a JSON array"));
        }
        Format::Alpaca | Format::Chat => {
            let v: serde_json::Value = serde_json::from_reader(reader).map_err(|e| err(path, Some(e.line()), format!("invalid JSON: {e}")))?;
            let items = v.as_array().ok_or_else(|| err(path, None, "expected a JSON array"))?;
            for (i, item) in items.iter().enumerate() {
                let at = |m: DataError| match m {
                    DataError::Source { path, msg, .. } => DataError::Source { path, line: None, msg: format!("item {i}: {msg}") },
                    other => other,
                };
                let doc = if cfg.format == Format::Alpaca {
                    let instruction = json_str(item, "instruction", path, None).map_err(at)?;
                    let input = item.get("input").and_then(|x| x.as_str()).unwrap_or("");
                    let prompt = if input.is_empty() { instruction.to_string() } else { format!("{instruction}\n\n{input}") };
                    qa_or_alpaca(prompt, json_str(item, "output", path, None).map_err(at)?.to_string())
                } else {
                    Document::Chat(chat_from_json(item, path, None).map_err(at)?)
                };
                if !emit(doc, &mut n)? {
                    break;
                }
            }
        }
    }
    if n == 0 {
        return Err(err(path, None, "source is empty (no documents)"));
    }
    Ok(n)
}

fn starts_with_array(path: &Path) -> Result<bool, DataError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| err(path, None, e))?;
    let mut buf = [0u8; 64];
    let n = f.read(&mut buf).map_err(|e| err(path, None, e))?;
    Ok(buf[..n].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'['))
}
