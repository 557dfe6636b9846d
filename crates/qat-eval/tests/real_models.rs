//! Checks against real pretrained models and references produced outside this project.

use std::path::Path;

use burn::tensor::Device;
use qat_model::generate::{Sampling, generate};
use qat_model::{CausalLm, Checkpoint};
use qat_tokenizer::{Message, Tokenizer};

fn load(dir: &Path) -> CausalLm {
    CausalLm::from_checkpoint(&Checkpoint::open(dir).unwrap(), &Device::flex()).unwrap()
}

/// llama2.c's own greedy output for stories260K from BOS (200 tokens).
#[test]
fn stories260k_greedy_reproduces_llama2c() {
    let dir = qat_testing::stories_model();
    let model = load(&dir);
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let out = generate(&model, &[1], 200, &[], &Sampling::greedy(), |_| {});
    let text = tok.decode(&out, true).unwrap();
    let expected = std::fs::read_to_string(dir.join("expected_greedy_200.txt")).unwrap();
    assert_eq!(text, expected);
}

/// SmolLM2-135M-Instruct imported from the PyPI GGUF: chat answer, tokenizer identical to the
/// upstream tokenizer.json on wikitext-2, and NLL of the first 512 wikitext-2 tokens.
#[test]
#[ignore = "needs QAT_SHARED and QAT_SMOLLM2_GGUF (scripts/test.sh)"]
fn smollm2_imported_from_gguf_behaves_like_upstream() {
    let (shared, gguf) = (qat_testing::shared(), qat_testing::smollm2_gguf());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("smollm2");
    qat_gguf::import::import_gguf(&gguf, &dir).unwrap();
    let model = load(&dir);
    let tok = Tokenizer::from_dir(&dir).unwrap();

    let prompt = tok.render_chat(&[Message::new("user", "What is the capital of France? Answer in one sentence.")], true).unwrap();
    let ids = tok.encode(&prompt, false).unwrap();
    let stop = [tok.eos_id().unwrap()];
    let out = generate(&model, &ids, 40, &stop, &Sampling::greedy(), |_| {});
    assert_eq!(tok.decode(&out, true).unwrap(), "The capital of France is Paris.");

    let upstream = Tokenizer::from_dir(&shared.join("models/smollm2-135m-instruct-upstream-files")).unwrap();
    let text = std::fs::read_to_string(shared.join("data/text/wikitext2_test.raw")).unwrap();
    let ours = tok.encode(&text, false).unwrap();
    assert_eq!(ours, upstream.encode(&text, false).unwrap());
    assert!(ours.len() > 250_000, "{} tokens", ours.len());

    let nll = qat_eval::token_nll(&model, &ours[..512]);
    let mean = nll.iter().sum::<f32>() / nll.len() as f32;
    eprintln!("SmolLM2 mean NLL over the first 512 wikitext-2 test tokens: {mean:.4}");
    assert!((mean - 3.02).abs() < 0.02, "mean NLL {mean}");
}
