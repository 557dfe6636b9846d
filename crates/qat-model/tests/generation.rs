//! Batched decoding on stories260K: rows decoded together are the rows decoded alone, and the
//! data-free distillation sampler builds its documents as documented.

use burn::tensor::Device;
use qat_model::generate::{Sampling, generate, generate_batch, sample_documents};
use qat_model::{CausalLm, Checkpoint};

fn model() -> CausalLm {
    CausalLm::from_checkpoint(&Checkpoint::open(&qat_testing::stories_model()).unwrap(), &Device::flex()).unwrap()
}

#[test]
fn batched_greedy_rows_equal_each_row_decoded_alone() {
    let model = model();
    let prompts: Vec<Vec<u32>> = [[1, 403], [1, 87], [1, 300]].iter().map(|p| p.to_vec()).collect();
    let batched = generate_batch(&model, &prompts, 40, &[], &Sampling::greedy(), |_| {});
    for (prompt, row) in prompts.iter().zip(&batched) {
        let alone = generate(&model, prompt, 40, &[], &Sampling::greedy(), |_| {});
        assert_eq!(row, &alone, "prompt {prompt:?}");
        assert_eq!(row.len(), 40);
    }
    assert_ne!(batched[0], batched[1], "different prompts should continue differently");
}

#[test]
fn a_row_stops_at_its_stop_token_while_the_others_go_on() {
    let model = model();
    let prompts: Vec<Vec<u32>> = vec![vec![1, 403], vec![1, 87]];
    let free = generate_batch(&model, &prompts, 30, &[], &Sampling::greedy(), |_| {});
    // Stop row 0 at its first token that row 1 does not produce in its first ten.
    let stop = *free[0][..10].iter().find(|t| !free[1][..10].contains(t)).unwrap_or_else(|| panic!("pick other prompts: {free:?}"));
    let stopped = generate_batch(&model, &prompts, 30, &[stop], &Sampling::greedy(), |_| {});
    assert_eq!(stopped[0], free[0][..=free[0].iter().position(|&t| t == stop).unwrap()].to_vec());
    let end = free[1].iter().position(|&t| t == stop).map_or(30, |i| i + 1);
    assert_eq!(stopped[1], free[1][..end].to_vec());
}

#[test]
fn sampled_documents_start_greedy_then_sample_reproducibly() {
    let model = model();
    let firsts = [403, 87, 300, 17];
    let sampling = |seed| Sampling { temperature: 1.0, top_k: 0, top_p: 1.0, seed };
    let docs = sample_documents(&model, &firsts, 3, 24, &[], &sampling(7));
    assert_eq!(docs.len(), firsts.len());
    for (doc, &first) in docs.iter().zip(&firsts) {
        assert_eq!(doc.len(), 24, "no stop token: every document has the full length");
        assert_eq!(doc[0], first);
        let greedy = generate(&model, &[first], 3, &[], &Sampling::greedy(), |_| {});
        assert_eq!(doc[1..4], greedy[..], "the prefix after the first token is the argmax continuation");
    }
    assert_eq!(docs, sample_documents(&model, &firsts, 3, 24, &[], &sampling(7)), "same seed, same documents");
    assert_ne!(docs, sample_documents(&model, &firsts, 3, 24, &[], &sampling(8)), "another seed samples other text");
    // Sampling differs from the argmax continuation somewhere after the prefix.
    let greedy = generate_batch(&model, &firsts.map(|t| vec![t]), 23, &[], &Sampling::greedy(), |_| {});
    assert!(docs.iter().zip(&greedy).any(|(d, g)| d[1..] != g[..]), "temperature 1 sampled only argmax tokens");
}

#[test]
fn a_stop_token_in_the_greedy_prefix_ends_the_document() {
    let model = model();
    let greedy = generate(&model, &[403], 3, &[], &Sampling::greedy(), |_| {});
    let stop = greedy[1];
    let docs = sample_documents(&model, &[403], 3, 24, &[stop], &Sampling { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 0 });
    let at = greedy.iter().position(|&t| t == stop).unwrap();
    assert_eq!(docs[0], [&[403][..], &greedy[..=at]].concat());
}
