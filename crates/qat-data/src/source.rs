//! Data sources and the documents they yield.
//!
//! Line-based formats (text split by line or blank line, JSONL) are read as a stream; JSON
//! array formats (Alpaca, ShareGPT) are parsed whole, which is fine at their usual sizes.
//! Any file may be gzip- or zstd-compressed (`.jsonl.gz`, `.txt.zst`, …: recognised by its
//! magic bytes, decompressed as it streams). A Parquet file (as the Hub stores datasets) is read
//! row group by row group, each row as the JSON object its columns make (nested lists and
//! structs included, e.g. chat `messages`), so every record format maps its columns exactly as
//! it maps JSON fields.

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

/// How a source file is stored, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Plain,
    Gzip,
    Zstd,
    Parquet,
}

fn container(path: &Path) -> Result<Container, DataError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| err(path, None, e))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| err(path, None, e))?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => Container::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Container::Zstd,
        b"PAR1" => Container::Parquet,
        _ => Container::Plain,
    })
}

/// The file's bytes, decompressed when it is gzip or zstd.
fn open(path: &Path, how: Container) -> Result<Box<dyn BufRead>, DataError> {
    let file = std::fs::File::open(path).map_err(|e| err(path, None, e))?;
    Ok(match how {
        // Multi-member: concatenated gzip files (as `cat a.gz b.gz` or pigz make) are one stream.
        Container::Gzip => Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file))),
        Container::Zstd => Box::new(std::io::BufReader::new(zstd::Decoder::new(file).map_err(|e| err(path, None, format!("zstd: {e}")))?)),
        Container::Plain | Container::Parquet => Box::new(std::io::BufReader::new(file)),
    })
}

/// One JSON record (a JSONL line, an item of a JSON array, a Parquet row) as a document of
/// `cfg.format` (not `text`).
fn record_document(cfg: &SourceConfig, v: &serde_json::Value, path: &Path, line: Option<usize>) -> Result<Document, DataError> {
    let qa_or_alpaca = |prompt: String, answer: String| {
        if cfg.chat_template {
            Document::Chat(vec![Message::new("user", &prompt), Message::new("assistant", &answer)])
        } else {
            Document::Text(format!("{prompt}\n{answer}"))
        }
    };
    Ok(match cfg.format {
        Format::Jsonl => Document::Text(json_str(v, &cfg.field, path, line)?.to_string()),
        Format::Qa => qa_or_alpaca(json_str(v, &cfg.question_field, path, line)?.into(), json_str(v, &cfg.answer_field, path, line)?.into()),
        Format::Alpaca => {
            let instruction = json_str(v, "instruction", path, line)?;
            // A missing or null `input` (Parquet writes absent values as null) is empty.
            let input = v.get("input").and_then(|x| x.as_str()).unwrap_or("");
            let prompt = if input.is_empty() { instruction.to_string() } else { format!("{instruction}\n\n{input}") };
            qa_or_alpaca(prompt, json_str(v, "output", path, line)?.to_string())
        }
        Format::Chat => Document::Chat(chat_from_json(v, path, line)?),
        Format::Text => return Err(err(path, line, "a text source has no records")),
    })
}

/// Reads all documents of a source, calling `f` for each (streaming for line formats and
/// Parquet).
pub fn for_each_document(cfg: &SourceConfig, mut f: impl FnMut(Document) -> Result<(), DataError>) -> Result<usize, DataError> {
    let path = cfg.path.as_path();
    let how = container(path)?;
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
    // Errors inside a record that has no line: "item i" / "row i" in front of the message.
    let at = |what: &'static str, i: usize| {
        move |m: DataError| match m {
            DataError::Source { path, msg, .. } => DataError::Source { path, line: None, msg: format!("{what} {i}: {msg}") },
            other => other,
        }
    };
    if how == Container::Parquet {
        if cfg.format == Format::Text {
            return Err(err(path, None, "a Parquet file holds records, not text: read a text column with format = \"jsonl\" and field = \"<column>\""));
        }
        let file = std::fs::File::open(path).map_err(|e| err(path, None, e))?;
        let reader = parquet::file::reader::SerializedFileReader::new(file).map_err(|e| err(path, None, format!("Parquet: {e}")))?;
        let rows = parquet::file::reader::FileReader::get_row_iter(&reader, None).map_err(|e| err(path, None, format!("Parquet: {e}")))?;
        for (i, row) in rows.enumerate() {
            let row = row.map_err(|e| err(path, None, format!("Parquet row {i}: {e}")))?;
            let doc = record_document(cfg, &row.to_json_value(), path, None).map_err(at("row", i))?;
            if !emit(doc, &mut n)? {
                break;
            }
        }
    } else {
        let mut reader = open(path, how)?;
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
            Format::Jsonl | Format::Qa | Format::Chat if !starts_with_array(path, how)? => {
                for (i, line) in reader.lines().enumerate() {
                    let line = line.map_err(|e| err(path, Some(i + 1), e))?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| err(path, Some(i + 1), format!("invalid JSON: {e}")))?;
                    if !emit(record_document(cfg, &v, path, Some(i + 1))?, &mut n)? {
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
                    if !emit(record_document(cfg, item, path, None).map_err(at("item", i))?, &mut n)? {
                        break;
                    }
                }
            }
        }
    }
    if n == 0 {
        return Err(err(path, None, "source is empty (no documents)"));
    }
    Ok(n)
}

/// Whether the (decompressed) file starts, after whitespace, with a JSON array.
fn starts_with_array(path: &Path, how: Container) -> Result<bool, DataError> {
    let mut reader = open(path, how)?;
    loop {
        let buf = reader.fill_buf().map_err(|e| err(path, None, e))?;
        if buf.is_empty() {
            return Ok(false);
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => return Ok(buf[i] == b'['),
            None => {
                let len = buf.len();
                reader.consume(len);
            }
        }
    }
}
