//! The mixer: realised category shares match the weights, packing keeps documents apart,
//! sampling is deterministic and resumable, sources are parsed with clear errors.

use std::collections::BTreeMap;

use qat_data::{Mixer, TokenizedSource};

/// A synthetic tokenized source: `n_docs` documents of varying length, token ids encoding
/// (source, document) so tests can tell where each token came from.
fn source(name: &str, category: &str, weight: f64, id_base: u32, n_docs: usize, seed: usize) -> TokenizedSource {
    let docs = (0..n_docs).map(|d| {
        let len = 20 + (d * 37 + seed * 11) % 180;
        (vec![id_base + d as u32; len], vec![1u8; len])
    });
    TokenizedSource::from_docs(name, category, weight, docs).unwrap()
}

fn mixer(seed: u64) -> Mixer {
    let sources = vec![
        source("chat_a", "chat", 1.0, 0, 300, 1),
        source("chat_b", "chat", 3.0, 10_000, 200, 2),
        source("math", "math", 1.0, 20_000, 400, 3),
        source("prose", "text", 1.0, 30_000, 100, 4),
    ];
    let mix = BTreeMap::from([("chat".to_string(), 0.5), ("math".to_string(), 0.3), ("text".to_string(), 0.2)]);
    Mixer::new(sources, &mix, 128, 0.05, seed).unwrap()
}

#[test]
fn realised_shares_match_weights_within_two_percent() {
    let mut m = mixer(1);
    for _ in 0..100 {
        m.next_batch(8);
    }
    let total = m.state.total_tokens as f64;
    assert_eq!(total, 100.0 * 8.0 * 128.0, "every position holds a token");
    for (name, (&placed, want)) in m.category_names().iter().zip(m.state.category_tokens.iter().zip(m.category_weights())) {
        let share = placed as f64 / total;
        assert!((share - want).abs() < 0.02, "{name}: share {share:.4} vs weight {want:.4}");
    }
    // Within the chat category, chat_b (weight 3) gets three quarters.
    let chat: f64 = (m.state.source_tokens[0] + m.state.source_tokens[1]) as f64;
    assert!((m.state.source_tokens[1] as f64 / chat - 0.75).abs() < 0.02);
}

#[test]
fn packing_respects_documents_and_targets_stay_inside_them() {
    let mut m = mixer(2);
    let b = m.next_batch(4);
    for r in 0..b.rows {
        let row = &b.tokens[r * 128..(r + 1) * 128];
        let seg = &b.segments[r];
        for i in 0..128 {
            if i + 1 < 128 && seg[i + 1] == seg[i] {
                assert_eq!(row[i + 1], row[i], "one segment holds one document");
            }
            let target = b.targets[r * 128 + i];
            if target >= 0 {
                assert_eq!(target as u32, row[i], "targets are the next token of the same document");
            }
        }
    }
    // The last token of each document has no target (no next token inside it).
    assert!(b.targets.iter().any(|&t| t < 0));
}

#[test]
fn deterministic_and_resumable() {
    let (mut a, mut b) = (mixer(7), mixer(7));
    for _ in 0..5 {
        assert_eq!(a.next_batch(3), b.next_batch(3));
    }
    let saved = a.state.clone();
    let next_a = a.next_batch(3);
    let mut c = mixer(7);
    c.restore(saved).unwrap();
    assert_eq!(c.next_batch(3), next_a, "a restored state continues identically");
    let mut d = mixer(8);
    assert_ne!(d.next_batch(3), mixer(7).next_batch(3), "the seed changes the order");
}

#[test]
fn validation_documents_never_appear_in_training() {
    let mut m = mixer(3);
    for s in 0..4 {
        let b = m.validation_batch(s, 100).unwrap();
        assert_eq!((b.tokens.len(), b.targets.len(), b.segments.len()), (b.rows * 128, b.rows * 128, b.rows), "whole rows only");
    }
    let val: std::collections::HashSet<u32> = (0..4).flat_map(|s| m.validation_batch(s, 100).map(|b| b.tokens).unwrap_or_default()).collect();
    assert!(!val.is_empty());
    for _ in 0..200 {
        let b = m.next_batch(8);
        assert!(b.tokens.iter().all(|t| !val.contains(t)), "a validation document was used for training");
    }
}

#[test]
fn config_errors_name_the_problem() {
    let mix = BTreeMap::from([("chat".to_string(), 1.0)]);
    let e = Mixer::new(vec![source("m", "math", 1.0, 0, 50, 0)], &mix, 64, 0.05, 0).err().unwrap().to_string();
    assert!(e.contains("category `math` has no weight"), "{e}");
    let e = Mixer::new(vec![source("c", "chat", 1.0, 0, 3, 0)], &mix, 64, 0.05, 0).err().unwrap().to_string();
    assert!(e.contains("cannot be split"), "{e}");
    let e = Mixer::new(vec![source("c", "chat", 1.0, 0, 50, 0)], &mix, 1, 0.05, 0).err().unwrap().to_string();
    assert!(e.contains("seq_len"), "{e}");
}
