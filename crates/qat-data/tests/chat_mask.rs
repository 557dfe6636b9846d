//! Only assistant tokens carry loss: a conversation rendered with SmolLM2's ChatML template
//! (`qat-testing`'s `fixtures/smollm2_tokenizer_config.json`, from the model's GGUF) and its upstream
//! tokenizer.json, checked against the rendered text and then through the data pipeline.

use qat_tokenizer::{Message, Tokenizer};

fn smollm2_tokenizer(shared: &std::path::Path) -> (tempfile::TempDir, Tokenizer) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(shared.join("models/smollm2-135m-instruct-upstream-files/tokenizer.json"), tmp.path().join("tokenizer.json")).unwrap();
    std::fs::copy(qat_testing::fixtures().join("smollm2_tokenizer_config.json"), tmp.path().join("tokenizer_config.json")).unwrap();
    let tok = Tokenizer::from_dir(tmp.path()).unwrap();
    (tmp, tok)
}

#[test]
#[ignore = "needs QAT_SHARED (scripts/test.sh)"]
fn only_assistant_turns_carry_loss() {
    let shared = qat_testing::shared();
    let (_tmp, tok) = smollm2_tokenizer(&shared);
    let msgs = vec![
        Message::new("system", "Be brief."),
        Message::new("user", "Capital of France?"),
        Message::new("assistant", "Paris."),
        Message::new("user", "And of Italy?"),
        Message::new("assistant", "Rome, since 1871."),
    ];
    let text = tok.render_chat(&msgs, false).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\nRome, since 1871.<|im_end|>\n"
    );
    let enc = tok.encode_chat(&msgs).unwrap();
    assert_eq!(enc.ids, tok.encode(&text, false).unwrap());
    // Decode the runs of masked tokens: exactly the two replies with their end-of-turn markers.
    let mut runs = Vec::new();
    let mut cur = Vec::new();
    for (id, on) in enc.ids.iter().zip(&enc.assistant) {
        if *on {
            cur.push(*id);
        } else if !cur.is_empty() {
            runs.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    let runs: Vec<String> = runs.iter().map(|r| tok.decode(r, false).unwrap()).collect();
    assert_eq!(runs, vec!["Paris.<|im_end|>\n".to_string(), "Rome, since 1871.<|im_end|>\n".to_string()]);
}

#[test]
#[ignore = "needs QAT_SHARED (scripts/test.sh)"]
fn chat_sources_train_only_on_replies() {
    let shared = qat_testing::shared();
    let (tmp, tok) = smollm2_tokenizer(&shared);
    let path = tmp.path().join("chat.jsonl");
    std::fs::write(&path, "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello there\"}]}\n").unwrap();
    let cfg: qat_data::SourceConfig = toml::from_str(&format!("path = {:?}\nformat = \"chat\"\ncategory = \"chat\"", path)).unwrap();
    let t = qat_data::tokenize_source(&cfg, &tok, None, None).unwrap();
    let with_loss: Vec<u32> = (0..t.n_tokens()).filter(|&j| t.has_loss(j)).map(|j| t.token(j)).collect();
    assert_eq!(tok.decode(&with_loss, false).unwrap(), "Hello there<|im_end|>\n");
}
