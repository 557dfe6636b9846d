//! Tokenized sources with an on-disk cache. The cache key covers the tokenizer file's bytes,
//! the source's config, and the source file's path, size and modification time, so a changed
//! tokenizer or source is re-tokenized.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::DataError;
use crate::source::{Document, SourceConfig, for_each_document};
use qat_tokenizer::Tokenizer;

const MAGIC: &[u8; 8] = b"QATTOK1\0";

/// A source's documents as token ids with per-token loss flags.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedSource {
    pub name: String,
    pub category: String,
    pub weight: f64,
    pub tokens: Vec<u32>,
    /// 1 where the token may be a training target (all text; assistant turns of chats).
    pub loss: Vec<u8>,
    /// Document `d` is `tokens[offsets[d]..offsets[d + 1]]`.
    pub offsets: Vec<usize>,
}

impl TokenizedSource {
    pub fn n_docs(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn doc(&self, d: usize) -> std::ops::Range<usize> {
        self.offsets[d]..self.offsets[d + 1]
    }
}

fn cache_key(cfg: &SourceConfig, tok: &Tokenizer, eos: Option<u32>) -> Result<String, DataError> {
    let mut h = Sha256::new();
    h.update(b"qat-data-v1");
    let tok_bytes = std::fs::read(tok.source()).map_err(|e| DataError::Source {
        path: tok.source().display().to_string(),
        line: None,
        msg: e.to_string(),
    })?;
    h.update(&tok_bytes);
    h.update(tok.chat_template().unwrap_or("").as_bytes());
    h.update(serde_json::to_vec(cfg).expect("config serializes"));
    h.update(format!("{eos:?}").as_bytes());
    let meta = std::fs::metadata(&cfg.path).map_err(|e| DataError::Source {
        path: cfg.path.display().to_string(),
        line: None,
        msg: e.to_string(),
    })?;
    h.update(std::fs::canonicalize(&cfg.path).unwrap_or(cfg.path.clone()).to_string_lossy().as_bytes());
    h.update(meta.len().to_le_bytes());
    if let Ok(t) = meta.modified() {
        h.update(format!("{t:?}").as_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Tokenizes a source, or reads it from `cache_dir` when an entry with the same key exists.
/// Text documents get the tokenizer's special tokens (e.g. BOS) and `eos` appended.
pub fn tokenize_source(
    cfg: &SourceConfig,
    tok: &Tokenizer,
    eos: Option<u32>,
    cache_dir: Option<&Path>,
) -> Result<TokenizedSource, DataError> {
    let name = cfg.display_name();
    let key = cache_key(cfg, tok, eos)?;
    let cache_file = cache_dir.map(|d| d.join(format!("{key}.tok")));
    let mut t = TokenizedSource {
        name,
        category: cfg.category.clone(),
        weight: cfg.weight,
        tokens: Vec::new(),
        loss: Vec::new(),
        offsets: vec![0],
    };
    if let Some(f) = &cache_file
        && let Ok(bytes) = std::fs::read(f)
        && let Some((tokens, loss, offsets)) = decode(&bytes)
    {
        t.tokens = tokens;
        t.loss = loss;
        t.offsets = offsets;
        return Ok(t);
    }
    let path = cfg.path.display().to_string();
    let mut doc_index = 0usize;
    for_each_document(cfg, |doc| {
        let (ids, loss) = match doc {
            Document::Text(text) => {
                let mut ids = tok.encode(&text, true).map_err(|e| DataError::Source {
                    path: path.clone(),
                    line: None,
                    msg: format!("document {doc_index}: {e}"),
                })?;
                ids.extend(eos);
                let n = ids.len();
                (ids, vec![1u8; n])
            }
            Document::Chat(msgs) => {
                let enc = tok.encode_chat(&msgs).map_err(|e| DataError::Source {
                    path: path.clone(),
                    line: None,
                    msg: format!("document {doc_index}: {e}"),
                })?;
                (enc.ids, enc.assistant.iter().map(|&a| a as u8).collect())
            }
        };
        doc_index += 1;
        if ids.len() >= 2 {
            t.tokens.extend(ids);
            t.loss.extend(loss);
            t.offsets.push(t.tokens.len());
        }
        Ok(())
    })?;
    if t.n_docs() == 0 {
        return Err(DataError::Source { path, line: None, msg: "no document has 2 or more tokens".into() });
    }
    if !t.loss.contains(&1) {
        return Err(DataError::Source { path, line: None, msg: "no token carries loss (chat data without assistant turns?)".into() });
    }
    if let (Some(dir), Some(f)) = (cache_dir, &cache_file) {
        write_cache(dir, f, &t)?;
    }
    Ok(t)
}

fn write_cache(dir: &Path, file: &Path, t: &TokenizedSource) -> Result<(), DataError> {
    let io =
        |e: std::io::Error| DataError::Source { path: file.display().to_string(), line: None, msg: format!("writing token cache: {e}") };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut out = Vec::with_capacity(24 + t.tokens.len() * 5 + t.offsets.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(t.tokens.len() as u64).to_le_bytes());
    out.extend_from_slice(&(t.offsets.len() as u64).to_le_bytes());
    t.tokens.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    out.extend_from_slice(&t.loss);
    t.offsets.iter().for_each(|x| out.extend_from_slice(&(*x as u64).to_le_bytes()));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(&out).map_err(io)?;
    tmp.persist(file).map_err(|e| io(e.error))?;
    Ok(())
}

/// Parses a cache file; `None` for anything malformed (it is then rebuilt).
fn decode(b: &[u8]) -> Option<(Vec<u32>, Vec<u8>, Vec<usize>)> {
    if b.len() < 24 || &b[..8] != MAGIC {
        return None;
    }
    let n = u64::from_le_bytes(b[8..16].try_into().ok()?) as usize;
    let m = u64::from_le_bytes(b[16..24].try_into().ok()?) as usize;
    if b.len() != 24usize.checked_add(n.checked_mul(5)?)?.checked_add(m.checked_mul(8)?)? {
        return None;
    }
    let tokens = b[24..24 + 4 * n].chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    let loss = b[24 + 4 * n..24 + 5 * n].to_vec();
    let offsets: Vec<usize> = b[24 + 5 * n..].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap()) as usize).collect();
    if offsets.first() != Some(&0) || offsets.last() != Some(&n) || offsets.windows(2).any(|w| w[0] > w[1]) {
        return None;
    }
    Some((tokens, loss, offsets))
}
