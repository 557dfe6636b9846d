//! Tokenized sources with an on-disk cache. The cache key covers the tokenizer file's bytes,
//! the source's config, and the source file's path, size and modification time, so a changed
//! tokenizer or source is re-tokenized.
//!
//! Tokens are streamed to the cache file as documents are tokenized and read back through a
//! memory map, so a source larger than memory can be trained on: what stays in memory is one
//! offset per document. Without a cache directory the file is a temporary one.
//!
//! File layout (little-endian): `QATTOK2\0`, token count `n` (u64), offset count `m` (u64),
//! largest token id (u64), `n` u32 tokens with the loss flag in bit 31, `m` u64 document offsets.

use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;
use sha2::{Digest, Sha256};

use crate::DataError;
use crate::source::{Document, SourceConfig, for_each_document};
use qat_tokenizer::Tokenizer;

const MAGIC: &[u8; 8] = b"QATTOK2\0";
const HEADER: usize = 32;
const LOSS_BIT: u32 = 1 << 31;

/// A source's documents as token ids with per-token loss flags, backed by a memory-mapped file.
#[derive(Debug, Clone)]
pub struct TokenizedSource {
    pub name: String,
    pub category: String,
    pub weight: f64,
    store: Arc<Store>,
}

#[derive(Debug)]
struct Store {
    map: Mmap,
    n_tokens: usize,
    max_id: u32,
    /// Document `d` is tokens `offsets[d]..offsets[d + 1]`.
    offsets: Vec<usize>,
    /// Keeps an uncached store's temporary file until the source is dropped.
    _temp: Option<tempfile::TempPath>,
}

impl TokenizedSource {
    /// A source from in-memory documents `(tokens, loss flags)` (tests and small inputs).
    pub fn from_docs(name: &str, category: &str, weight: f64, docs: impl IntoIterator<Item = (Vec<u32>, Vec<u8>)>) -> Result<Self, DataError> {
        let mut w = TokenWriter::new(None, name)?;
        for (ids, loss) in docs {
            w.push_doc(&ids, &loss)?;
        }
        Ok(TokenizedSource { name: name.into(), category: category.into(), weight, store: Arc::new(w.finish(None)?) })
    }

    pub fn n_docs(&self) -> usize {
        self.store.offsets.len() - 1
    }

    pub fn n_tokens(&self) -> usize {
        self.store.n_tokens
    }

    /// The largest token id (for checking against a model's vocabulary).
    pub fn max_token_id(&self) -> u32 {
        self.store.max_id
    }

    pub fn doc(&self, d: usize) -> std::ops::Range<usize> {
        self.store.offsets[d]..self.store.offsets[d + 1]
    }

    fn raw(&self, j: usize) -> u32 {
        assert!(j < self.store.n_tokens, "token {j} of {}", self.store.n_tokens);
        let at = HEADER + 4 * j;
        u32::from_le_bytes(self.store.map[at..at + 4].try_into().expect("4 bytes"))
    }

    /// Token `j` of the concatenated documents.
    pub fn token(&self, j: usize) -> u32 {
        self.raw(j) & !LOSS_BIT
    }

    /// Whether token `j` may be a training target (all text; assistant turns of chats).
    pub fn has_loss(&self, j: usize) -> bool {
        self.raw(j) & LOSS_BIT != 0
    }
}

fn write_error(path: &str, e: std::io::Error) -> DataError {
    DataError::Source { path: path.into(), line: None, msg: format!("writing tokens: {e}") }
}

/// Streams documents into a token file.
struct TokenWriter {
    out: BufWriter<tempfile::NamedTempFile>,
    n: usize,
    max_id: u32,
    offsets: Vec<usize>,
    path: String,
}

impl TokenWriter {
    /// A temporary file in `dir` (the cache directory) or in the system's temporary directory.
    fn new(dir: Option<&Path>, path: &str) -> Result<Self, DataError> {
        let io = |e| write_error(path, e);
        let file = match dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(io)?;
                tempfile::NamedTempFile::new_in(d)
            }
            None => tempfile::NamedTempFile::new(),
        }
        .map_err(io)?;
        let mut out = BufWriter::new(file);
        out.write_all(&[0u8; HEADER]).map_err(io)?;
        Ok(TokenWriter { out, n: 0, max_id: 0, offsets: vec![0], path: path.into() })
    }

    fn push_doc(&mut self, ids: &[u32], loss: &[u8]) -> Result<(), DataError> {
        for (&id, &l) in ids.iter().zip(loss) {
            if id & LOSS_BIT != 0 {
                return Err(DataError::Source { path: self.path.clone(), line: None, msg: format!("token id {id} does not fit 31 bits") });
            }
            self.max_id = self.max_id.max(id);
            let v = if l == 1 { id | LOSS_BIT } else { id };
            self.out.write_all(&v.to_le_bytes()).map_err(|e| write_error(&self.path, e))?;
        }
        self.n += ids.len();
        self.offsets.push(self.n);
        Ok(())
    }

    /// Completes the file, moves it to `dest` (a cache entry) or keeps it temporary, and maps it.
    fn finish(self, dest: Option<&Path>) -> Result<Store, DataError> {
        let TokenWriter { out, n, max_id, offsets, path } = self;
        let io = |e| write_error(&path, e);
        let mut out = out;
        for &o in &offsets {
            out.write_all(&(o as u64).to_le_bytes()).map_err(io)?;
        }
        let mut file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        for v in [n as u64, offsets.len() as u64, max_id as u64] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        file.write_all(&header).map_err(io)?;
        file.flush().map_err(io)?;
        let (file, temp) = match dest {
            Some(d) => (file.persist(d).map_err(|e| io(e.error))?, None),
            None => {
                let (f, p) = file.into_parts();
                (f, Some(p))
            }
        };
        // SAFETY: the file is private to this process (a fresh temporary file, or a cache entry
        // that is only ever replaced by rename, never written in place).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Ok(Store { map, n_tokens: n, max_id, offsets, _temp: temp })
    }
}

/// Maps a cache file; `None` for anything malformed (it is then rebuilt).
fn open_cache(file: &Path) -> Option<Store> {
    let f = std::fs::File::open(file).ok()?;
    // SAFETY: as in `TokenWriter::finish`: cache entries are replaced by rename, never modified.
    let map = unsafe { Mmap::map(&f) }.ok()?;
    if map.len() < HEADER || &map[..8] != MAGIC {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(map[8 * i..8 * i + 8].try_into().expect("8 bytes")) as usize;
    let (n, m, max_id) = (word(1), word(2), word(3));
    if map.len() != HEADER.checked_add(n.checked_mul(4)?)?.checked_add(m.checked_mul(8)?)? || max_id > u32::MAX as usize {
        return None;
    }
    let offsets: Vec<usize> = map[HEADER + 4 * n..].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) as usize).collect();
    if offsets.first() != Some(&0) || offsets.last() != Some(&n) || offsets.windows(2).any(|w| w[0] > w[1]) {
        return None;
    }
    Some(Store { map, n_tokens: n, max_id: max_id as u32, offsets, _temp: None })
}

fn cache_key(cfg: &SourceConfig, tok: &Tokenizer, eos: Option<u32>) -> Result<String, DataError> {
    let mut h = Sha256::new();
    h.update(b"qat-data-v1");
    let tok_bytes = std::fs::read(tok.source()).map_err(|e| DataError::Source { path: tok.source().display().to_string(), line: None, msg: e.to_string() })?;
    h.update(&tok_bytes);
    h.update(tok.chat_template().unwrap_or("").as_bytes());
    h.update(serde_json::to_vec(cfg).expect("config serializes"));
    h.update(format!("{eos:?}").as_bytes());
    let meta = std::fs::metadata(&cfg.path).map_err(|e| DataError::Source { path: cfg.path.display().to_string(), line: None, msg: e.to_string() })?;
    h.update(std::fs::canonicalize(&cfg.path).unwrap_or(cfg.path.clone()).to_string_lossy().as_bytes());
    h.update(meta.len().to_le_bytes());
    if let Ok(t) = meta.modified() {
        h.update(format!("{t:?}").as_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Tokenizes a source, or maps it from `cache_dir` when an entry with the same key exists.
/// Text documents get the tokenizer's special tokens (e.g. BOS) and `eos` appended.
pub fn tokenize_source(cfg: &SourceConfig, tok: &Tokenizer, eos: Option<u32>, cache_dir: Option<&Path>) -> Result<TokenizedSource, DataError> {
    let key = cache_key(cfg, tok, eos)?;
    let cache_file = cache_dir.map(|d| d.join(format!("{key}.tok")));
    let source = |store| TokenizedSource { name: cfg.display_name(), category: cfg.category.clone(), weight: cfg.weight, store: Arc::new(store) };
    if let Some(store) = cache_file.as_deref().and_then(open_cache) {
        return Ok(source(store));
    }
    let path = cfg.path.display().to_string();
    let mut w = TokenWriter::new(cache_dir, &path)?;
    let mut doc_index = 0usize;
    let mut any_loss = false;
    for_each_document(cfg, |doc| {
        let (ids, loss) = match doc {
            Document::Text(text) => {
                let mut ids =
                    tok.encode(&text, true).map_err(|e| DataError::Source { path: path.clone(), line: None, msg: format!("document {doc_index}: {e}") })?;
                ids.extend(eos);
                let n = ids.len();
                (ids, vec![1u8; n])
            }
            Document::Chat(msgs) => {
                let enc =
                    tok.encode_chat(&msgs).map_err(|e| DataError::Source { path: path.clone(), line: None, msg: format!("document {doc_index}: {e}") })?;
                (enc.ids, enc.assistant.iter().map(|&a| a as u8).collect())
            }
        };
        doc_index += 1;
        if ids.len() >= 2 {
            any_loss |= loss.contains(&1);
            w.push_doc(&ids, &loss)?;
        }
        Ok(())
    })?;
    if w.offsets.len() == 1 {
        return Err(DataError::Source { path, line: None, msg: "no document has 2 or more tokens".into() });
    }
    if !any_loss {
        return Err(DataError::Source { path, line: None, msg: "no token carries loss (chat data without assistant turns?)".into() });
    }
    Ok(source(w.finish(cache_file.as_deref())?))
}
