//! qat's multiple-choice scores against lm-evaluation-harness's own, request by request.
//!
//! `scripts/make_mc_fixture.py` ran lm-eval 0.4.13 (its official task definitions, HFLM in
//! float32) on the first items of each benchmark file in `../shared/data/eval` with stories260K;
//! here qat reads the same files through `qat_eval::Task` and must give the same summed
//! log-likelihood and is-greedy flag for every (context, continuation) request — which checks
//! the prompts, the tokenization of the pair, the scoring positions — and the same `acc` /
//! `acc_norm`; and on LAMBADA-style items (TinyStories paragraphs, lm-eval's `lambada_openai`
//! definition) the same greedy accuracy and perplexity.

use std::path::PathBuf;

use burn::tensor::Device;
use qat_eval::{ScoreOptions, Task, choice::item_scores, score_items};
use qat_model::{CausalLm, Checkpoint};
use qat_tokenizer::Tokenizer;

fn shared() -> PathBuf {
    match std::env::var_os("QAT_SHARED").map(PathBuf::from).filter(|p| p.exists()) {
        Some(p) => p,
        None => panic!("QAT_SHARED must point at the shared reference directory; this test needs it (scripts/test.sh sets it)"),
    }
}

#[test]
#[ignore = "needs QAT_SHARED (stories260K and the benchmark files)"]
fn scores_match_lm_evaluation_harness() {
    let shared = shared();
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lm_eval_stories260k.json")).unwrap()).unwrap();
    let n = fixture["n"].as_u64().unwrap() as usize;
    let dir = shared.join("models/stories260k-hf");
    let model = CausalLm::from_checkpoint(&Checkpoint::open(&dir).unwrap(), &Device::flex()).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let eval = shared.join("data/eval");
    // MMLU reads a directory of subjects: one subject, cut to the fixture's rows.
    let mmlu = tempfile::tempdir().unwrap();
    std::fs::create_dir(mmlu.path().join("test")).unwrap();
    let csv = std::fs::read_to_string(eval.join("mmlu/test/abstract_algebra_test.csv")).unwrap();
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).from_reader(csv.as_bytes());
    let mut w = csv::Writer::from_path(mmlu.path().join("test/abstract_algebra_test.csv")).unwrap();
    for rec in rdr.records().take(n) {
        w.write_record(&rec.unwrap()).unwrap();
    }
    w.flush().unwrap();

    let tasks = [
        ("arc_easy", Task::Jsonl(eval.join("mc/arc_easy.jsonl"))),
        ("piqa", Task::Jsonl(eval.join("mc/piqa.jsonl"))),
        ("winogrande", Task::Jsonl(eval.join("mc/winogrande.jsonl"))),
        ("hellaswag", Task::HellaSwag(eval.join("hellaswag_val_1000.jsonl"))),
        ("mmlu_abstract_algebra", Task::Mmlu { dir: mmlu.path().to_path_buf(), split: "test".into() }),
        ("lambada_style_tinystories", Task::Jsonl(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lambada_style_tinystories.jsonl").into())),
    ];
    for (name, task) in tasks {
        let reference = &fixture["tasks"][name];
        let items = task.items(n).unwrap();
        let expected = reference["items"].as_array().unwrap();
        assert_eq!(items.len(), expected.len(), "{name}");
        let mut worst = 0f64;
        for (item, exp) in items.iter().zip(expected) {
            assert_eq!(item.gold as u64, exp["gold"].as_u64().unwrap(), "{name} line {}", item.line);
            let ours = item_scores(&model, &tok, item, ScoreOptions::default()).unwrap();
            let theirs: Vec<f64> = exp["lls"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            let greedy: Vec<bool> = exp["greedy"].as_array().unwrap().iter().map(|x| x.as_bool().unwrap()).collect();
            assert_eq!(ours.len(), theirs.len(), "{name} line {}", item.line);
            for ((o, t), g) in ours.iter().zip(&theirs).zip(&greedy) {
                let err = (o.logprob - t).abs() / (1.0 + t.abs());
                worst = worst.max(err);
                assert!(err < 1e-4, "{name} line {}: qat {} vs lm-eval {t}", item.line, o.logprob);
                assert_eq!(o.greedy, *g, "{name} line {}: is-greedy", item.line);
            }
        }
        let r = score_items(&model, &tok, name, &items, ScoreOptions::default()).unwrap();
        assert_eq!(r.acc, reference["acc"].as_f64().unwrap(), "{name} acc");
        assert!((r.acc_stderr - reference["acc_stderr"].as_f64().unwrap()).abs() < 1e-12, "{name} acc_stderr");
        assert_eq!(r.acc_norm, reference["acc_norm"].as_f64(), "{name} acc_norm");
        match (r.perplexity, reference["perplexity"].as_f64()) {
            (Some(ours), Some(theirs)) => assert!((ours / theirs - 1.0).abs() < 1e-5, "{name} perplexity {ours} vs {theirs}"),
            (ours, theirs) => assert_eq!(ours, theirs, "{name} perplexity"),
        }
        eprintln!("{name}: {} items, acc {:.3}, acc_norm {:?}, worst relative log-likelihood difference {worst:.2e}", r.n, r.acc, r.acc_norm);
    }
}
