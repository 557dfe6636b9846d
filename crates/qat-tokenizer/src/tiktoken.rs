//! Byte-level BPE from a tiktoken ranks file (`base64(token) rank` per line), as Hunyuan ships
//! (`hy.tiktoken`), converted the way transformers' `TikTokenConverter` does: vocabulary from
//! the ranks in GPT-2's byte-to-unicode form, merges recovered from the ranks (every split of a
//! token into two tokens, ordered by the token's rank, then by the parts' ranks), a regex split
//! followed by byte-level mapping, and `ignore_merges` (a piece that is a token is taken whole,
//! as tiktoken does).

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;

use crate::TokenizerError;

/// Hunyuan's (and Qwen's) split pattern (`PAT_STR` of HunYuan's `tokenization_hy.py`).
pub const HUNYUAN_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-2's byte ↔ printable-unicode table.
pub fn byte_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).expect("valid")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid")
        };
    }
    table
}

/// Reads `path` into `(token bytes, rank)` pairs.
pub fn read_ranks(path: &Path) -> Result<Vec<(Vec<u8>, u32)>, TokenizerError> {
    let err = |line: usize, msg: &str| TokenizerError::File { path: format!("{}:{line}", path.display()), msg: msg.to_string() };
    let text = std::fs::read_to_string(path).map_err(|e| TokenizerError::File { path: path.display().to_string(), msg: e.to_string() })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let (tok, rank) = line.split_once(' ').ok_or_else(|| err(i + 1, "expected `base64 rank`"))?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(tok.trim()).map_err(|_| err(i + 1, "invalid base64"))?;
        let rank = rank.trim().parse::<u32>().map_err(|_| err(i + 1, "rank is not an integer"))?;
        out.push((bytes, rank));
    }
    if out.is_empty() {
        return Err(err(0, "no ranks"));
    }
    Ok(out)
}

/// A `tokenizer.json` value for the ranks, split pattern and added tokens `(id, content, special)`.
pub fn tokenizer_json(ranks: &[(Vec<u8>, u32)], pattern: &str, added: &[(u32, String, bool)]) -> serde_json::Value {
    let table = byte_to_unicode();
    let to_str = |b: &[u8]| b.iter().map(|&x| table[x as usize]).collect::<String>();
    let by_bytes: HashMap<&[u8], u32> = ranks.iter().map(|(b, r)| (b.as_slice(), *r)).collect();
    let mut vocab = serde_json::Map::new();
    let mut merges: Vec<(u32, u32, u32, String)> = Vec::new();
    for (bytes, rank) in ranks {
        vocab.insert(to_str(bytes), (*rank).into());
        for split in 1..bytes.len() {
            let (l, r) = bytes.split_at(split);
            if let (Some(&rl), Some(&rr)) = (by_bytes.get(l), by_bytes.get(r)) {
                merges.push((*rank, rl, rr, format!("{} {}", to_str(l), to_str(r))));
            }
        }
    }
    merges.sort_by_key(|m| (m.0, m.1, m.2));
    // Added tokens live in the vocabulary too, under their own ids.
    for (id, content, _) in added {
        vocab.insert(content.clone(), (*id).into());
    }
    let added: Vec<serde_json::Value> = added
        .iter()
        .map(|(id, content, special)| serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": special}))
        .collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": true, "vocab": vocab,
            "merges": merges.into_iter().map(|m| m.3).collect::<Vec<_>>()}
    })
}
