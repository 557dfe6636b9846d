//! A tokenizer built from a tiktoken ranks file encodes like the byte-level BPE it came from.
//! The ranks are made from SmolLM2's upstream tokenizer.json (rank = id, which is merge order);
//! the text is TinyStories with digits removed, because SmolLM2 splits digits before its regex
//! and a ranks file carries only one regex.

use base64::Engine;
use qat_tokenizer::{Tokenizer, tiktoken};

const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

#[test]
#[ignore = "needs QAT_SHARED (scripts/test.sh)"]
fn ranks_file_reproduces_the_original_bpe() {
    let shared = qat_testing::shared();
    let dir = shared.join("models/smollm2-135m-instruct-upstream-files");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap()).unwrap();
    let table = tiktoken::byte_to_unicode();
    let inverse: std::collections::HashMap<char, u8> = table.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
    let added: Vec<(u32, String, bool)> =
        json["added_tokens"].as_array().unwrap().iter().map(|t| (t["id"].as_u64().unwrap() as u32, t["content"].as_str().unwrap().to_string(), true)).collect();
    let mut lines = String::new();
    for (tok, id) in json["model"]["vocab"].as_object().unwrap() {
        if added.iter().any(|a| &a.1 == tok) {
            continue;
        }
        let bytes: Vec<u8> = tok.chars().map(|c| inverse[&c]).collect();
        lines.push_str(&format!("{} {}\n", base64::engine::general_purpose::STANDARD.encode(&bytes), id));
    }
    let tmp = tempfile::tempdir().unwrap();
    let ranks = tmp.path().join("test.tiktoken");
    std::fs::write(&ranks, lines).unwrap();
    let ours = Tokenizer::tiktoken_inner(&ranks, GPT2_PATTERN, &added).unwrap();
    let upstream = Tokenizer::from_dir(&dir).unwrap();
    let text: String =
        std::fs::read_to_string(shared.join("data/text/tinystories_val_subset.txt")).unwrap().chars().filter(|c| !c.is_ascii_digit()).take(200_000).collect();
    let a = ours.encode(text.as_str(), false).unwrap().get_ids().to_vec();
    let b = upstream.encode(&text, false).unwrap();
    let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
    assert_eq!(first_diff, None, "first difference at token {first_diff:?}");
    assert_eq!(a.len(), b.len());
    // Special tokens from the added list are recognised whole.
    assert_eq!(ours.encode("<|im_start|>user", false).unwrap().get_ids()[0], 1);

    // A checkpoint directory with only a ranks file loads through from_dir.
    let ckpt = tmp.path().join("ckpt");
    std::fs::create_dir(&ckpt).unwrap();
    std::fs::copy(&ranks, ckpt.join("hy.tiktoken")).unwrap();
    let t = Tokenizer::from_dir(&ckpt).unwrap();
    assert!(t.source().ends_with("hy.tiktoken"));
    assert!(!t.encode("hello world", false).unwrap().is_empty());
}
