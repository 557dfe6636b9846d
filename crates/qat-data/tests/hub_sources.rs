//! Data as the Hub stores it: Parquet files written by pyarrow (snappy, zstd, gzip and
//! uncompressed pages; nested `messages` lists; two row groups; a null `input`) and gzip / zstd
//! compressed JSONL give exactly the documents — and the tokens — of their plain JSON twins.
//! Fixtures: `scripts/make_parquet_fixture.py`.

use std::path::PathBuf;

mod common;

use common::docs;
use qat_data::source::Document;
use qat_data::{Format, SourceConfig, tokenize_source};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hub").join(name)
}

fn cfg(file: &str, format: Format, extra: &str) -> SourceConfig {
    let format = format!("{format:?}").to_lowercase();
    toml::from_str(&format!("path = {:?}\nformat = {format:?}\ncategory = \"x\"\n{extra}", fixture(file))).unwrap()
}

/// (the plain twin, the copies that must read the same, its number of documents)
fn families() -> Vec<(SourceConfig, Vec<SourceConfig>, usize)> {
    vec![
        (cfg("qa.jsonl", Format::Qa, ""), vec![cfg("qa.parquet", Format::Qa, ""), cfg("qa.jsonl.gz", Format::Qa, ""), cfg("qa.jsonl.zst", Format::Qa, "")], 12),
        (cfg("alpaca.json", Format::Alpaca, ""), vec![cfg("alpaca.parquet", Format::Alpaca, "")], 12),
        (cfg("chat.jsonl", Format::Chat, ""), vec![cfg("chat.parquet", Format::Chat, "")], 10),
        (cfg("text.jsonl.zst", Format::Jsonl, ""), vec![cfg("text.parquet", Format::Jsonl, "")], 16),
    ]
}

#[test]
fn parquet_and_compressed_sources_give_their_twins_documents() {
    for (twin, copies, n) in families() {
        let want = docs(&twin).unwrap();
        assert_eq!(want.len(), n, "{}", twin.path.display());
        for c in copies {
            assert_eq!(docs(&c).unwrap(), want, "{} differs from {}", c.path.display(), twin.path.display());
        }
    }
    // The null `input` of item 3 reads as no input, as in the JSON twin.
    match &docs(&cfg("alpaca.parquet", Format::Alpaca, "")).unwrap()[3] {
        Document::Chat(m) => assert!(!m[0].content.ends_with("\n\n"), "{:?}", m[0].content),
        other => panic!("{other:?}"),
    }
    // max_documents stops inside the first of chat.parquet's two row groups and past it.
    for limit in [3, 7] {
        let c = cfg("chat.parquet", Format::Chat, &format!("max_documents = {limit}"));
        assert_eq!(docs(&c).unwrap(), docs(&cfg("chat.jsonl", Format::Chat, "")).unwrap()[..limit]);
    }
}

#[test]
fn bad_parquet_sources_name_the_file_and_row() {
    // A column the format needs is missing: the row is named.
    let e = docs(&cfg("text.parquet", Format::Qa, "")).unwrap_err();
    assert!(e.contains("text.parquet") && e.contains("row 0") && e.contains("`question`"), "{e}");
    // Parquet holds records, not text.
    let e = docs(&cfg("text.parquet", Format::Text, "")).unwrap_err();
    assert!(e.contains("format = \"jsonl\""), "{e}");
    // A truncated file: an error naming it, not a panic.
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.parquet");
    let bytes = std::fs::read(fixture("qa.parquet")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = docs(&toml::from_str(&format!("path = {cut:?}\nformat = \"qa\"\ncategory = \"x\"")).unwrap()).unwrap_err();
    assert!(e.contains("cut.parquet") && e.contains("Parquet"), "{e}");
    // A truncated zstd stream.
    let cut = dir.path().join("cut.jsonl.zst");
    let bytes = std::fs::read(fixture("qa.jsonl.zst")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = docs(&toml::from_str(&format!("path = {cut:?}\nformat = \"qa\"\ncategory = \"x\"")).unwrap()).unwrap_err();
    assert!(e.contains("cut.jsonl.zst"), "{e}");
}

/// The tokens through the real tokenization path (chat template, loss masks), with
/// stories260K's tokenizer (the committed test fixture of qat-cli) and a ChatML template.
#[test]
fn parquet_sources_give_their_twins_tokens() {
    let stories = qat_testing::stories_model();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(stories.join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    let template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}";
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        serde_json::json!({"bos_token": "<s>", "eos_token": "</s>", "chat_template": template}).to_string(),
    )
    .unwrap();
    let tok = qat_tokenizer::Tokenizer::from_dir(dir.path()).unwrap();
    let tokens = |c: &SourceConfig| {
        let t = tokenize_source(c, &tok, Some(2), None).unwrap();
        (0..t.n_tokens()).map(|j| (t.token(j), t.has_loss(j))).collect::<Vec<_>>()
    };
    for (twin, copies, _) in families() {
        let want = tokens(&twin);
        assert!(want.len() > 500, "{}: {} tokens", twin.path.display(), want.len());
        for c in copies {
            assert!(tokens(&c) == want, "{} tokenizes differently from {}", c.path.display(), twin.path.display());
        }
    }
}
