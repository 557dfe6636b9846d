//! ggml block layouts against gguf-py, on fixtures written by `scripts/make_block_fixtures.py`.

use qat_gguf::{GgmlType, blocks};

/// Q2_K blocks with every scale/min nibble and code pattern: qat's reader gives gguf-py's values
/// bit for bit (export checks each encoding against this reader).
#[test]
fn q2_k_blocks_match_gguf_py() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/q2_k_gguf_py.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let hex = v["bytes"].as_str().unwrap();
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let want: Vec<f32> = v["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert_eq!(bytes.len(), want.len() / 256 * 84);
    let got = blocks::dequantize(GgmlType::Q2_K, &bytes, want.len()).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "element {i}: qat {g}, gguf-py {w}");
    }
}
