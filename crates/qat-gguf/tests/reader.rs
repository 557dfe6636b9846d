//! The reader against files made by the writer, and against corrupt files: every corruption
//! must give an error, never a panic.

use qat_gguf::{GgmlType, GgufError, GgufFile, GgufHeader, GgufWriter, Value, blocks};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn sample_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("llama.block_count", Value::U32(2));
    w.set("llama.rope.freq_base", Value::F32(10000.0));
    w.set("tokenizer.ggml.tokens", Value::strings(["<s>", "a", "b"]));
    w.set("tokenizer.ggml.token_type", Value::Array(5, vec![Value::I32(3), Value::I32(1), Value::I32(1)]));
    let x: Vec<f32> = (0..64).map(|i| i as f32 / 8.0 - 4.0).collect();
    w.add_tensor("a", &[2, 32], GgmlType::Q8_0, blocks::quantize(GgmlType::Q8_0, &x).unwrap()).unwrap();
    w.add_tensor("b", &[64], GgmlType::F32, blocks::quantize(GgmlType::F32, &x).unwrap()).unwrap();
    w.add_tensor("c", &[2, 32], GgmlType::Q4_0, blocks::quantize(GgmlType::Q4_0, &x).unwrap()).unwrap();
    w.to_bytes()
}

#[test]
fn written_file_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    std::fs::write(&path, sample_file()).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u64("llama.block_count").unwrap(), 2);
    assert_eq!(f.get_f64("llama.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(f.get_array("tokenizer.ggml.tokens").unwrap().len(), 3);
    assert_eq!(f.tensor("a").unwrap().shape(), vec![2, 32]);
    let b = f.dequantize("b").unwrap();
    assert_eq!(b[0], -4.0);
    assert_eq!(b[63], 63.0 / 8.0 - 4.0);
    assert!(matches!(f.dequantize("zz"), Err(GgufError::MissingTensor(_))));
    assert!(matches!(f.get_str("llama.block_count"), Err(GgufError::KeyType { .. })));
    assert!(matches!(f.get_u64("nope"), Err(GgufError::MissingKey(_))));
}

#[test]
fn bad_magic_truncation_and_absurd_counts_are_errors() {
    let good = sample_file();
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(GgufHeader::parse(&bad), Err(GgufError::BadMagic(_))));
    // The last 28 bytes are alignment padding after tensor `c`; cutting 40 cuts its data.
    for cut in [3, 10, 30, good.len() / 2, good.len() - 40] {
        assert!(GgufHeader::parse(&good[..cut]).is_err(), "truncated at {cut}");
    }
    // tensor_count (bytes 8..16) and kv_count (16..24) set to absurd values.
    for at in [8, 16] {
        let mut bad = good.clone();
        bad[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = GgufHeader::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("impossible"), "{err}");
    }
    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&99u32.to_le_bytes());
    assert!(matches!(GgufHeader::parse(&bad), Err(GgufError::Version(99))));
}

#[test]
fn open_names_the_file_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    std::fs::write(&path, &sample_file()[..100]).unwrap();
    let err = GgufFile::open(&path).err().unwrap().to_string();
    assert!(err.contains("broken.gguf"), "{err}");
    let err = GgufFile::open(dir.path().join("missing.gguf")).err().unwrap().to_string();
    assert!(err.contains("missing.gguf"), "{err}");
}

/// A seeded mutation fuzzer over the sample file: byte flips, overwritten u64 fields,
/// truncations and splices. The reader must return Ok or Err, never panic, and whatever it
/// accepts must dequantize without panicking. (`fuzz/` has the libFuzzer target for longer runs.)
#[test]
fn mutation_fuzz_never_panics() {
    let good = sample_file();
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..100_000 {
        let mut b = good.clone();
        for _ in 0..rng.random_range(1..4) {
            match rng.random_range(0..4) {
                0 => {
                    let i = rng.random_range(0..b.len());
                    b[i] ^= 1 << rng.random_range(0..8);
                }
                1 => {
                    let i = rng.random_range(0..b.len().saturating_sub(8).max(1));
                    let v: u64 = [0, 1, 255, 1 << 32, u64::MAX, rng.random()][rng.random_range(0..6)];
                    let end = (i + 8).min(b.len());
                    b[i..end].copy_from_slice(&v.to_le_bytes()[..end - i]);
                }
                2 => b.truncate(rng.random_range(0..b.len())),
                _ => {
                    let i = rng.random_range(0..b.len());
                    let j = rng.random_range(0..b.len());
                    let n = rng.random_range(0..32).min(b.len() - i.max(j));
                    b.copy_within(i..i + n, j);
                }
            }
            if b.is_empty() {
                break;
            }
        }
        if let Ok(h) = GgufHeader::parse(&b) {
            for t in &h.tensors {
                let start = h.data_offset + t.offset as usize;
                let bytes = &b[start..start + t.n_bytes() as usize];
                blocks::dequantize(t.ggml_type, bytes, t.n_elements() as usize).unwrap();
            }
        }
    }
}
