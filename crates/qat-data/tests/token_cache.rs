//! The token cache: a cached source reads back exactly what tokenizing gives, is reused while
//! nothing changes, is rebuilt when the source or the tokenizer changes or the entry is damaged.

use std::path::Path;

use qat_data::{SourceConfig, TokenizedSource, tokenize_source};
use qat_tokenizer::Tokenizer;

fn tokens(t: &TokenizedSource) -> Vec<(u32, bool)> {
    (0..t.n_tokens()).map(|j| (t.token(j), t.has_loss(j))).collect()
}

fn entries(cache: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(cache).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn cache_is_reused_and_invalidated() {
    let tmp = tempfile::tempdir().unwrap();
    let tok_dir = tmp.path().join("tok");
    std::fs::create_dir(&tok_dir).unwrap();
    std::fs::copy(qat_testing::stories_model().join("tokenizer.json"), tok_dir.join("tokenizer.json")).unwrap();
    let tok = Tokenizer::from_dir(&tok_dir).unwrap();
    let text = tmp.path().join("stories.txt");
    let stories = std::fs::read_to_string(qat_testing::stories_text()).unwrap();
    std::fs::write(&text, &stories[..20_000]).unwrap();
    let cfg: SourceConfig = toml::from_str(&format!("path = {:?}\nformat = \"text\"\ncategory = \"text\"", text)).unwrap();
    let cache = tmp.path().join("cache");

    let uncached = tokenize_source(&cfg, &tok, Some(2), None).unwrap();
    let first = tokenize_source(&cfg, &tok, Some(2), Some(&cache)).unwrap();
    assert_eq!(tokens(&first), tokens(&uncached));
    assert!(uncached.n_docs() > 10 && (0..uncached.n_docs()).all(|d| uncached.doc(d) == first.doc(d)));
    let [entry] = entries(&cache).try_into().unwrap();
    let written = std::fs::metadata(&entry).unwrap().modified().unwrap();

    // Nothing changed: the entry is mapped again, not rewritten.
    let again = tokenize_source(&cfg, &tok, Some(2), Some(&cache)).unwrap();
    assert_eq!(tokens(&again), tokens(&first));
    assert_eq!(std::fs::metadata(&entry).unwrap().modified().unwrap(), written);

    // A damaged entry is rebuilt.
    let len = std::fs::metadata(&entry).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&entry).unwrap().set_len(len - 3).unwrap();
    let rebuilt = tokenize_source(&cfg, &tok, Some(2), Some(&cache)).unwrap();
    assert_eq!(tokens(&rebuilt), tokens(&first));
    assert_eq!(std::fs::metadata(&entry).unwrap().len(), len);

    // The source changes: a new entry with the new text.
    std::fs::write(&text, format!("{}\n\nOne more story about a cat.", &stories[..20_000])).unwrap();
    let changed = tokenize_source(&cfg, &tok, Some(2), Some(&cache)).unwrap();
    assert_eq!(changed.n_docs(), first.n_docs() + 1);
    assert_eq!(entries(&cache).len(), 2);

    // The tokenizer changes (same vocabulary, a different file): another entry.
    let json = std::fs::read_to_string(tok_dir.join("tokenizer.json")).unwrap();
    std::fs::write(tok_dir.join("tokenizer.json"), format!("{json}\n")).unwrap();
    let tok2 = Tokenizer::from_dir(&tok_dir).unwrap();
    tokenize_source(&cfg, &tok2, Some(2), Some(&cache)).unwrap();
    assert_eq!(entries(&cache).len(), 3);
}
