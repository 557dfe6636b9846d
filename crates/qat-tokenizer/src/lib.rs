//! Tokenizers and chat templates of Hugging Face checkpoints.
//!
//! `tokenizer.json` is run by the `tokenizers` crate (the same code transformers' fast
//! tokenizers use). The chat template from `tokenizer_config.json` is rendered with minijinja
//! (with Python-compatible string methods), and [`Tokenizer::encode_chat`] marks which tokens
//! belong to assistant turns so the trainer can put loss only there.

pub mod tiktoken;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("chat template: {0}")]
    Template(String),
    #[error("tokenizer: {0}")]
    Encode(String),
}

/// One chat message as in transformers' `apply_chat_template`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message { role: role.into(), content: content.into() }
    }
}

/// A rendered and tokenized conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatEncoding {
    pub ids: Vec<u32>,
    /// `true` for tokens inside an assistant turn (content and its end-of-turn marker).
    pub assistant: Vec<bool>,
}

/// A checkpoint's tokenizer, special tokens and chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    source: PathBuf,
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::File { path: path.display().to_string(), msg: msg.to_string() }
}

/// `bos_token` etc. are either strings or `{"content": ...}` objects (AddedToken).
fn token_string(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        obj => obj.get("content")?.as_str().map(str::to_string),
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` (or, when a checkpoint ships only a tiktoken ranks file such as
    /// Hunyuan's `hy.tiktoken`, the byte-level BPE built from it with Hunyuan's split pattern
    /// and the added tokens of `tokenizer_config.json`) and the chat template.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let path = dir.join("tokenizer.json");
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Option<serde_json::Value> = match std::fs::read_to_string(&cfg_path) {
            Ok(text) => Some(serde_json::from_str(&text).map_err(|e| file_err(&cfg_path, format!("malformed JSON: {e}")))?),
            Err(_) => None,
        };
        let (inner, source) = if path.exists() {
            (tokenizers::Tokenizer::from_file(&path).map_err(|e| file_err(&path, e))?, path)
        } else {
            let ranks_file = std::fs::read_dir(dir)
                .map_err(|e| file_err(dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "tiktoken"))
                .ok_or_else(|| file_err(&path, "not found, and no *.tiktoken ranks file either"))?;
            let added: Vec<(u32, String, bool)> = cfg
                .as_ref()
                .and_then(|c| c.get("added_tokens_decoder"))
                .and_then(|d| d.as_object())
                .map(|d| {
                    d.iter()
                        .filter_map(|(id, t)| {
                            Some((id.parse().ok()?, t.get("content")?.as_str()?.to_string(), t.get("special").and_then(|x| x.as_bool()).unwrap_or(true)))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (Self::tiktoken_inner(&ranks_file, tiktoken::HUNYUAN_PATTERN, &added)?, ranks_file)
        };
        let mut tok = Tokenizer { inner, chat_template: None, bos_token: None, eos_token: None, source };
        if let Some(cfg) = cfg {
            tok.bos_token = token_string(cfg.get("bos_token"));
            tok.eos_token = token_string(cfg.get("eos_token"));
            tok.chat_template = match cfg.get("chat_template") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                // A list of named templates: take "default".
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
                Some(_) => {
                    return Err(file_err(&cfg_path, "field `chat_template` must be a string or a list"));
                }
            };
        }
        // Some checkpoints keep the template in its own file (transformers ≥ 4.43).
        let jinja = dir.join("chat_template.jinja");
        if tok.chat_template.is_none() && jinja.exists() {
            tok.chat_template = Some(std::fs::read_to_string(&jinja).map_err(|e| file_err(&jinja, e))?);
        }
        Ok(tok)
    }

    /// The byte-level BPE of a tiktoken ranks file with a split `pattern` and added tokens
    /// `(id, content, special)`.
    pub fn tiktoken_inner(ranks_file: &Path, pattern: &str, added: &[(u32, String, bool)]) -> Result<tokenizers::Tokenizer, TokenizerError> {
        let ranks = tiktoken::read_ranks(ranks_file)?;
        let json = tiktoken::tokenizer_json(&ranks, pattern, added).to_string();
        json.parse::<tokenizers::Tokenizer>().map_err(|e| file_err(ranks_file, format!("building the BPE: {e}")))
    }

    /// The tokenizer file this was read from (tokenizer.json or the tiktoken ranks).
    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text`; `add_special` applies the tokenizer's post-processor (e.g. BOS).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self.inner.encode_fast(text, add_special).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner.decode(ids, skip_special).map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Id of the tokenizer config's `eos_token`, if any.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_token.as_deref().and_then(|t| self.token_id(t))
    }

    /// Renders `messages` with the chat template, as `apply_chat_template(tokenize=False)`.
    pub fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, TokenizerError> {
        let template = self.chat_template.as_deref().ok_or_else(|| TokenizerError::Template(format!("{} has no chat template", self.source.display())))?;
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", template).map_err(|e| TokenizerError::Template(e.to_string()))?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        };
        env.get_template("chat").and_then(|t| t.render(ctx)).map_err(|e| TokenizerError::Template(format!("{e:#}")))
    }

    /// Renders and tokenizes a conversation, marking assistant tokens.
    ///
    /// An assistant turn `i` is the text that rendering `messages[..=i]` adds to rendering
    /// `messages[..i]` with the generation prompt, i.e. the reply and its end-of-turn marker;
    /// that holds for any template that renders prefixes as prefixes, which is checked.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<ChatEncoding, TokenizerError> {
        let full = self.render_chat(messages, false)?;
        let mut spans = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let before = self.render_chat(&messages[..i], true)?;
            let through = self.render_chat(&messages[..=i], false)?;
            if !full.starts_with(&through) || !through.starts_with(&before) {
                return Err(TokenizerError::Template(format!(
                    "the template does not render message {i} as an extension of the messages before it; cannot locate the assistant reply"
                )));
            }
            spans.push(before.len()..through.len());
        }
        // The template already contains any BOS it wants; do not add special tokens again.
        let enc = self.inner.encode(full.as_str(), false).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let assistant = enc.get_offsets().iter().map(|&(s, e)| e > s && spans.iter().any(|r| r.contains(&s))).collect();
        Ok(ChatEncoding { ids: enc.get_ids().to_vec(), assistant })
    }
}
