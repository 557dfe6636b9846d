//! ggml block layouts against gguf-py, on fixtures written by `scripts/make_block_fixtures.py`.

use qat_gguf::{GgmlType, blocks};

/// Q2_K blocks with every scale/min nibble and code pattern: qat's reader gives gguf-py's values
/// bit for bit (export checks each encoding against this reader).
#[test]
fn q2_k_blocks_match_gguf_py() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/q2_k_gguf_py.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_matches_gguf_py(GgmlType::Q2_K, &v);
}

/// Blocks of every other quantized type qat reads or writes, with arbitrary code bytes (the
/// fifth bits in `qh`, Q3_K's high-bit mask and packed 6-bit scales, Q6_K's signed scales
/// included).
#[test]
fn block_types_match_gguf_py() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/blocks_gguf_py.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (name, ty) in [
        ("Q4_0", GgmlType::Q4_0),
        ("Q4_1", GgmlType::Q4_1),
        ("Q5_0", GgmlType::Q5_0),
        ("Q5_1", GgmlType::Q5_1),
        ("Q8_0", GgmlType::Q8_0),
        ("Q3_K", GgmlType::Q3_K),
        ("Q4_K", GgmlType::Q4_K),
        ("Q5_K", GgmlType::Q5_K),
        ("Q6_K", GgmlType::Q6_K),
        ("TQ2_0", GgmlType::TQ2_0),
    ] {
        assert_matches_gguf_py(ty, &v["types"][name]);
    }
}

/// `case["bytes"]` (hex) dequantized by qat equals gguf-py's `case["values"]` bit for bit.
fn assert_matches_gguf_py(ty: GgmlType, case: &serde_json::Value) {
    let hex = case["bytes"].as_str().unwrap();
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let want: Vec<f32> = case["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert_eq!(bytes.len(), want.len() / ty.block_size() * ty.type_size(), "{ty:?}");
    let got = blocks::dequantize(ty, &bytes, want.len()).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{ty:?} element {i}: qat {g}, gguf-py {w}");
    }
}

/// Q4_K's / Q5_K's scale-and-min packing is a bijection on 6-bit values.
#[test]
fn k4_scale_min_packing_round_trips() {
    for base in 0..64u8 {
        let sc: [u8; 8] = std::array::from_fn(|i| (base + 7 * i as u8) % 64);
        let mn: [u8; 8] = std::array::from_fn(|i| ((base as usize * 3 + 11 * i) % 64) as u8);
        assert_eq!(blocks::k4_scales_mins(&blocks::pack_k4_scales_mins(&sc, &mn)), (sc, mn));
    }
}

/// Q3_K's scale packing is a bijection on 6-bit values.
#[test]
fn q3_k_scale_packing_round_trips() {
    for base in 0..64u8 {
        let s: [u8; 16] = std::array::from_fn(|i| (base + 7 * i as u8) % 64);
        assert_eq!(blocks::q3_k_scales(&blocks::pack_q3_k_scales(&s)), s);
    }
}
