//! Policy resolution: overrides by glob, the per-module table, average bits, and errors.

use qat_quant::{Granularity, Policy, Scheme};

/// Module list of a 3-layer model with hidden 256, intermediate 512.
fn modules() -> Vec<(String, [usize; 2])> {
    let mut v = Vec::new();
    for i in 0..3 {
        for n in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            v.push((format!("layers.{i}.self_attn.{n}"), [256, 256]));
        }
        v.push((format!("layers.{i}.mlp.gate_proj"), [512, 256]));
        v.push((format!("layers.{i}.mlp.up_proj"), [512, 256]));
        v.push((format!("layers.{i}.mlp.down_proj"), [256, 512]));
    }
    v.push(("lm_head".into(), [1000, 256]));
    v
}

fn policy(toml_text: &str) -> Policy {
    toml::from_str(toml_text).unwrap()
}

#[test]
fn overrides_produce_the_expected_table_and_bits() {
    let p = policy(
        r#"
        scheme = "seq"
        bits = 2
        [[rules]]
        match = "layers.0.mlp.down_proj"
        scheme = "int"
        bits = 4
        [[rules]]
        match = "layers.*.self_attn.*"
        granularity = "group"
        group_size = 64
        [[rules]]
        match = "layers.[1-2].self_attn.v_proj"
        scheme = "none"
        "#,
    );
    let m = modules();
    let emb = 1000 * 256;
    let t = p.resolve(&m, m.iter().map(|(_, [o, i])| o * i).sum::<usize>() + emb).unwrap();
    let get = |name: &str| t.rows.iter().find(|r| r.0 == name).unwrap().2;
    let down0 = get("layers.0.mlp.down_proj").unwrap();
    assert_eq!((down0.scheme, down0.bits, down0.granularity), (Scheme::Int, 4, Granularity::Channel));
    let down1 = get("layers.1.mlp.down_proj").unwrap();
    assert_eq!((down1.scheme, down1.bits), (Scheme::Seq, 2));
    let q2 = get("layers.2.self_attn.q_proj").unwrap();
    assert_eq!((q2.granularity, q2.group_size), (Granularity::Group, 64));
    assert!(get("layers.0.self_attn.v_proj").is_some());
    assert!(get("layers.1.self_attn.v_proj").is_none() && get("layers.2.self_attn.v_proj").is_none());
    assert!(get("lm_head").is_none(), "lm_head stays in high precision by default");
    assert_eq!(t.n_quantized(), 3 * 7 - 2);

    // Average bits by hand: codes plus one 16-bit scale per group.
    let attn_group = 2.0 + 16.0 / 64.0; // 10 attention matrices quantized (12 minus two v_proj)
    let seq_chan_256 = 2.0 + 16.0 / 256.0; // gate/up: 256 columns
    let seq_chan_512 = 2.0 + 16.0 / 512.0; // down: 512 columns
    let int4_chan_512 = 4.0 + 16.0 / 512.0;
    let n_attn = 256.0 * 256.0;
    let n_mlp = 512.0 * 256.0;
    let q_bits = 10.0 * n_attn * attn_group + 6.0 * n_mlp * seq_chan_256 + 2.0 * n_mlp * seq_chan_512 + n_mlp * int4_chan_512;
    let q_n = 10.0 * n_attn + 9.0 * n_mlp;
    assert!((t.quantized_bits_per_weight() - q_bits / q_n).abs() < 1e-9);
    let all_bits = q_bits + 16.0 * (2.0 * n_attn + 2.0 * emb as f64);
    let all_n = q_n + 2.0 * n_attn + 2.0 * emb as f64;
    assert!((t.model_bits_per_weight() - all_bits / all_n).abs() < 1e-9, "{} vs {}", t.model_bits_per_weight(), all_bits / all_n);

    let shown = t.to_string();
    assert!(shown.contains("layers.0.mlp.down_proj") && shown.contains("INT4/channel"), "{shown}");
    assert!(shown.contains("layers.1-2.mlp.down_proj"), "{shown}");
    assert!(shown.contains("layers.1-2.self_attn.v_proj") && shown.contains("none (16-bit)"), "{shown}");
    assert!(shown.contains("19 of 22 linears quantized"), "{shown}");
}

#[test]
fn a_rule_that_matches_nothing_is_an_error() {
    let p = policy("[[rules]]\nmatch = \"layers.*.mlp.down_prj\"\nbits = 3\n");
    let e = p.resolve(&modules(), 0).unwrap_err().to_string();
    assert!(e.contains("quant.rules[0]") && e.contains("down_prj") && e.contains("matches no module"), "{e}");
}

/// A rule's `format` chooses how a quantized tensor is stored; a rule that sets one on a tensor
/// left unquantized (scheme `none`, or `lm_head` without a scheme) is an error, not a silent
/// full-precision tensor. A later rule that sets `scheme = "none"` still excludes a tensor.
#[test]
fn a_format_on_an_unquantized_tensor_is_an_error() {
    let down_q3_k = "scheme = \"none\"\n[[rules]]\nmatch = \"layers.*.mlp.down_proj\"\nformat = \"q4_0\"\n";
    let e = policy(down_q3_k).resolve(&modules(), 0).unwrap_err().to_string();
    assert!(e.contains("quant.rules[0]") && e.contains("layers.0.mlp.down_proj") && e.contains("set `scheme`"), "{e}");
    let e = policy("[[rules]]\nmatch = \"lm_head\"\nformat = \"q8_0\"\n").resolve(&modules(), 0).unwrap_err().to_string();
    assert!(e.contains("quant.rules[0]") && e.contains("`lm_head`"), "{e}");
    // With a scheme the same rule quantizes down_proj, and only it.
    let t = policy(&down_q3_k.replace("format", "scheme = \"int\"\nformat")).resolve(&modules(), 0).unwrap();
    assert_eq!(t.n_quantized(), 3);
    let down = t.rows.iter().find(|r| r.0 == "layers.1.mlp.down_proj").unwrap().2.unwrap();
    assert_eq!((down.scheme, down.bits, down.group_size), (Scheme::Int, 4, 32));
    // Excluding a tensor from a policy-wide format, in the rule or in a later one, stays valid.
    let excluded = "format = \"q4_0\"\n[[rules]]\nmatch = \"layers.0.*\"\nscheme = \"none\"\n";
    assert_eq!(policy(excluded).resolve(&modules(), 0).unwrap().n_quantized(), 14);
    let later = "[[rules]]\nmatch = \"layers.*.mlp.*\"\nformat = \"q4_0\"\n[[rules]]\nmatch = \"layers.0.mlp.*\"\nscheme = \"none\"\n";
    assert_eq!(policy(later).resolve(&modules(), 0).unwrap().n_quantized(), 3 * 7 - 3);
}

#[test]
fn invalid_combinations_and_unknown_keys_are_errors() {
    let e = policy("scheme = \"seq\"\nbits = 4\n").resolve(&modules(), 0).unwrap_err().to_string();
    assert!(e.contains("bits = 4") && e.contains("Seq"), "{e}");
    let e = policy("granularity = \"group\"\ngroup_size = 100\n").resolve(&modules(), 0).unwrap_err().to_string();
    assert!(e.contains("group_size 100 does not divide"), "{e}");
    let e = toml::from_str::<Policy>("scheme = \"seq\"\nbitz = 2\n").unwrap_err().to_string();
    assert!(e.contains("bitz"), "{e}");
    let e = toml::from_str::<Policy>("scheme = \"int3\"\n").unwrap_err().to_string();
    assert!(e.contains("int3"), "{e}");
}

#[test]
fn lm_head_can_be_quantized_by_a_rule() {
    let p = policy("[[rules]]\nmatch = \"lm_head\"\nscheme = \"int\"\nbits = 8\n");
    let t = p.resolve(&modules(), 0).unwrap();
    let head = t.rows.iter().find(|r| r.0 == "lm_head").unwrap().2.unwrap();
    assert_eq!((head.scheme, head.bits), (Scheme::Int, 8));
}

/// `format = "q2_k"` resolves each tensor to the exact spec its shape allows: Q2_K sub-scales
/// where rows are a multiple of 256, SEQ-2 per group of 32 (Q4_0-exact) elsewhere.
#[test]
fn q2_k_format_resolves_per_tensor() {
    let p = policy("format = \"q2_k\"");
    let modules = vec![("layers.0.self_attn.q_proj".to_string(), [576, 576]), ("layers.0.mlp.down_proj".to_string(), [576, 1536])];
    let t = p.resolve(&modules, 2_000_000).unwrap();
    let (q, down) = (t.rows[0].2.unwrap(), t.rows[1].2.unwrap());
    assert_eq!((q.scheme, q.bits, q.group_size, q.sub_scale_bits), (qat_quant::Scheme::Seq, 2, 32, 0));
    assert_eq!((down.scheme, down.bits, down.group_size, down.sub_scale_bits), (qat_quant::Scheme::Seq, 2, 16, 4));
    assert!((down.bits_per_weight([576, 1536]) - 2.625).abs() < 1e-12);
    assert!(t.to_string().contains("group16x4bit"), "{t}");
    let t = policy("format = \"q3_k\"").resolve(&modules, 2_000_000).unwrap();
    let (q, down) = (t.rows[0].2.unwrap(), t.rows[1].2.unwrap());
    assert_eq!((q.scheme, q.bits, q.group_size, q.sub_scale_bits), (qat_quant::Scheme::Int, 3, 32, 0));
    assert_eq!(down, qat_quant::QuantSpec { init: down.init, ..qat_quant::QuantSpec::q3_k() });
    assert!((down.bits_per_weight([576, 1536]) - 3.4375).abs() < 1e-12);
    // The asymmetric k-quants: the k-quant layout where it fits, the same grid per group of 32
    // with f16 scale and minimum (Q4_1 / Q5_1-exact) elsewhere.
    for (format, layout, bpw) in
        [("q2_k_asym", qat_quant::QuantSpec::q2_k_asym(), 2.625), ("q4_k", qat_quant::QuantSpec::q4_k(), 4.5), ("q5_k", qat_quant::QuantSpec::q5_k(), 5.5)]
    {
        let t = policy(&format!("format = \"{format}\"\ninit = \"mse\"")).resolve(&modules, 2_000_000).unwrap();
        let (q, down) = (t.rows[0].2.unwrap(), t.rows[1].2.unwrap());
        assert_eq!(down, layout, "{format}");
        assert_eq!((q.scheme, q.bits, q.group_size, q.sub_scale_bits), (qat_quant::Scheme::Asym, layout.bits, 32, 0), "{format}");
        assert!((down.bits_per_weight([576, 1536]) - bpw).abs() < 1e-12, "{format}");
    }
}

/// The 32-weight block formats resolve to the grid each stores; `q4_1`/`q5_1` are asymmetric
/// (an f16 step and minimum per block: 5 and 6 bits per weight), and rows that are not a
/// multiple of 32 are an error naming the module.
#[test]
fn block_formats_resolve_to_their_grids() {
    let modules = vec![("layers.0.self_attn.q_proj".to_string(), [576, 576])];
    for (format, scheme, bits, bpw) in [
        ("q4_0", Scheme::Int, 4, 4.5),
        ("q4_1", Scheme::Asym, 4, 5.0),
        ("q5_0", Scheme::Int, 5, 5.5),
        ("q5_1", Scheme::Asym, 5, 6.0),
        ("q8_0", Scheme::Int, 8, 8.5),
    ] {
        let t = policy(&format!("format = \"{format}\"")).resolve(&modules, 1_000_000).unwrap();
        let s = t.rows[0].2.unwrap();
        assert_eq!((s.scheme, s.bits, s.granularity, s.group_size), (scheme, bits, Granularity::Group, 32), "{format}");
        assert!((s.bits_per_weight([576, 576]) - bpw).abs() < 1e-12, "{format}: {}", s.bits_per_weight([576, 576]));
    }
    let err = policy("format = \"q4_1\"").resolve(&[("layers.0.mlp.up_proj".to_string(), [64, 40])], 10_000).unwrap_err().to_string();
    assert!(err.contains("layers.0.mlp.up_proj") && err.contains("group_size 32"), "{err}");
    let err = policy("scheme = \"asym\"\ninit = \"lsq\"").resolve(&modules, 1_000_000).unwrap_err().to_string();
    assert!(err.contains("init = \"max\" or \"mse\""), "{err}");
}
