//! Which linear layer gets which quantizer: a base spec for every decoder linear plus ordered
//! override rules matched by glob on module paths (`layers.*.mlp.down_proj`,
//! `layers.[0-2].*`, `lm_head`). Later rules override earlier ones field by field; a rule that
//! matches no module is an error, so a typo cannot silently leave a run in full precision.

use serde::{Deserialize, Serialize};

use crate::QuantError;
use crate::scheme::{GradVariant, Granularity, QuantSpec, ScaleInit, Scheme};

/// A scheme, or `none` for full precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "lower"))]
pub enum SchemeChoice {
    None,
    Seq,
    Ternary,
    Int,
    Asym,
    Binary,
    Bitnet,
}

impl SchemeChoice {
    fn scheme(self) -> Option<Scheme> {
        Some(match self {
            SchemeChoice::None => return None,
            SchemeChoice::Seq => Scheme::Seq,
            SchemeChoice::Ternary => Scheme::Ternary,
            SchemeChoice::Int => Scheme::Int,
            SchemeChoice::Asym => Scheme::Asym,
            SchemeChoice::Binary => Scheme::Binary,
            SchemeChoice::Bitnet => Scheme::Bitnet,
        })
    }
}

/// A deployment format the policy resolves per tensor into the exact spec its shape allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployFormat {
    /// llama.cpp's Q2_K: SEQ-2 per group of 16 with 4-bit sub-scales where rows are a multiple
    /// of 256 weights; elsewhere SEQ-2 per group of 32, which export stores exactly as Q4_0
    /// (2-bit levels in 4.5 bits per weight).
    Q2K,
    /// Q2_K as ggml's own quantizer fills it: asymmetric INT2 per group of 16 with 4-bit scales
    /// and mins where rows are a multiple of 256 weights; elsewhere asymmetric INT2 per group of
    /// 32, stored exactly as Q4_1.
    #[serde(rename = "q2_k_asym")]
    Q2KAsym,
    /// llama.cpp's Q3_K: INT3 per group of 16 with 6-bit sub-scales where rows are a multiple
    /// of 256 weights; elsewhere INT3 per group of 32, stored exactly as Q4_0.
    Q3K,
    /// llama.cpp's Q4_K and Q5_K: asymmetric INT4 / INT5 per group of 32 with 6-bit scales and
    /// mins where rows are a multiple of 256 weights; elsewhere the same grid per group of 32
    /// with f16 scales and minimums, stored exactly as Q4_1 / Q5_1.
    Q4K,
    Q5K,
    /// ggml's 32-weight blocks with one f16 scale: INT4 (`q4_0`), INT5 (`q5_0`), INT8 (`q8_0`)
    /// per group of 32.
    #[serde(rename = "q4_0")]
    Q4_0,
    #[serde(rename = "q5_0")]
    Q5_0,
    #[serde(rename = "q8_0")]
    Q8_0,
    /// ggml's 32-weight blocks with an f16 scale and minimum: asymmetric INT4 (`q4_1`) and INT5
    /// (`q5_1`) per group of 32.
    #[serde(rename = "q4_1")]
    Q4_1,
    #[serde(rename = "q5_1")]
    Q5_1,
    /// No deployment format: `scheme`, `bits`, `granularity`, … as written (lets a rule take a
    /// tensor, such as `embed_tokens`, out of a policy-wide format).
    None,
}

/// Fields a rule may override; all optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    pub scheme: Option<SchemeChoice>,
    pub bits: Option<u32>,
    pub granularity: Option<Granularity>,
    pub group_size: Option<usize>,
    pub grad: Option<GradVariant>,
    pub init: Option<ScaleInit>,
    pub sub_scale_bits: Option<u32>,
    pub format: Option<DeployFormat>,
}

/// One override rule: a glob over module paths and the fields it sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(rename = "match")]
    pub pattern: String,
    #[serde(flatten)]
    pub set: Overrides,
}

/// The `[quant]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub scheme: SchemeChoice,
    pub bits: u32,
    pub granularity: Granularity,
    pub group_size: usize,
    pub grad: GradVariant,
    pub init: ScaleInit,
    /// k-quant sub-scale bits ([`QuantSpec::sub_scale_bits`]); 0: free scales.
    pub sub_scale_bits: u32,
    /// Resolve each tensor to the exact spec of this deployment format (overrides scheme, bits,
    /// granularity, group_size and sub_scale_bits).
    pub format: Option<DeployFormat>,
    /// Per-token int8 fake quantization of quantized layers' inputs.
    pub act_int8: bool,
    /// Keep scales on the grid an export in this dtype stores exactly, at every step
    /// ([`crate::exact`]); unset: only export rounds them.
    pub round_scales: Option<crate::exact::HfDtype>,
    pub rules: Vec<Rule>,
}

impl Default for Policy {
    /// quantization.md §4: SEQ 2-bit per channel on every decoder linear.
    fn default() -> Self {
        let s = QuantSpec::seq2();
        Policy {
            scheme: SchemeChoice::Seq,
            bits: s.bits,
            granularity: s.granularity,
            group_size: 0,
            grad: s.grad,
            init: s.init,
            sub_scale_bits: 0,
            format: None,
            act_int8: false,
            round_scales: None,
            rules: Vec::new(),
        }
    }
}

/// What a policy resolved to for one model.
#[derive(Debug, Clone)]
pub struct PolicyTable {
    /// `(module path, [out, in], spec)`.
    pub rows: Vec<(String, [usize; 2], Option<QuantSpec>)>,
    /// Parameters outside the listed linears (embeddings, norms, biases), kept in 16 bits.
    pub other_params: usize,
}

fn is_decoder_linear(path: &str) -> bool {
    path.starts_with("layers.")
}

impl Policy {
    /// A policy that quantizes everything with `spec`.
    pub fn uniform(spec: QuantSpec) -> Self {
        let mut p = Policy::default();
        p.set(&Overrides {
            scheme: Some(match spec.scheme {
                Scheme::Seq => SchemeChoice::Seq,
                Scheme::Ternary => SchemeChoice::Ternary,
                Scheme::Int => SchemeChoice::Int,
                Scheme::Asym => SchemeChoice::Asym,
                Scheme::Binary => SchemeChoice::Binary,
                Scheme::Bitnet => SchemeChoice::Bitnet,
            }),
            bits: Some(spec.bits),
            granularity: Some(spec.granularity),
            group_size: Some(spec.group_size),
            grad: Some(spec.grad),
            init: Some(spec.init),
            sub_scale_bits: Some(spec.sub_scale_bits),
            format: None,
        });
        p
    }

    /// Overrides the base fields that `o` sets.
    pub fn set(&mut self, o: &Overrides) {
        if let Some(v) = o.scheme {
            self.scheme = v;
            // Changing the scheme without bits picks that scheme's natural width.
            if o.bits.is_none() {
                self.bits = match v {
                    SchemeChoice::Binary => 1,
                    SchemeChoice::Int | SchemeChoice::Asym => 4,
                    _ => 2,
                };
            }
        }
        if let Some(v) = o.bits {
            self.bits = v;
        }
        if let Some(v) = o.granularity {
            self.granularity = v;
        }
        if let Some(v) = o.group_size {
            self.group_size = v;
        }
        if let Some(v) = o.grad {
            self.grad = v;
        }
        if let Some(v) = o.init {
            self.init = v;
        }
        if let Some(v) = o.sub_scale_bits {
            self.sub_scale_bits = v;
        }
        if let Some(v) = o.format {
            self.format = Some(v);
        }
    }

    /// The spec for a `[out, in]` weight (`None`: not quantized).
    fn spec(&self, [_, inp]: [usize; 2]) -> Option<QuantSpec> {
        let scheme = self.scheme.scheme()?;
        let base = QuantSpec {
            scheme,
            bits: self.bits,
            granularity: self.granularity,
            group_size: self.group_size,
            grad: self.grad,
            init: self.init,
            sub_scale_bits: self.sub_scale_bits,
        };
        Some(match self.format {
            None | Some(DeployFormat::None) => base,
            Some(kq @ (DeployFormat::Q2K | DeployFormat::Q2KAsym | DeployFormat::Q3K | DeployFormat::Q4K | DeployFormat::Q5K)) => {
                let k = inp.is_multiple_of(crate::scheme::SUPER_BLOCK);
                let layout = match kq {
                    DeployFormat::Q2K => QuantSpec::q2_k(),
                    DeployFormat::Q2KAsym => QuantSpec::q2_k_asym(),
                    DeployFormat::Q3K => QuantSpec::q3_k(),
                    DeployFormat::Q4K => QuantSpec::q4_k(),
                    _ => QuantSpec::q5_k(),
                };
                QuantSpec {
                    scheme: layout.scheme,
                    bits: layout.bits,
                    granularity: Granularity::Group,
                    group_size: if k { layout.group_size } else { 32 },
                    sub_scale_bits: if k { layout.sub_scale_bits } else { 0 },
                    ..base
                }
            }
            Some(block32) => {
                let (scheme, bits) = match block32 {
                    DeployFormat::Q4_0 => (Scheme::Int, 4),
                    DeployFormat::Q5_0 => (Scheme::Int, 5),
                    DeployFormat::Q8_0 => (Scheme::Int, 8),
                    DeployFormat::Q4_1 => (Scheme::Asym, 4),
                    DeployFormat::Q5_1 => (Scheme::Asym, 5),
                    _ => unreachable!("k-quant formats and none matched above"),
                };
                QuantSpec { scheme, bits, granularity: Granularity::Group, group_size: 32, sub_scale_bits: 0, ..base }
            }
        })
    }

    /// Resolves the policy for the model's linear layers (`(path, [out, in])`, e.g.
    /// `layers.3.mlp.down_proj`, `lm_head`). `total_params` counts every model parameter.
    pub fn resolve(&self, modules: &[(String, [usize; 2])], total_params: usize) -> Result<PolicyTable, QuantError> {
        let mut globs = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let g = globset::Glob::new(&r.pattern).map_err(|e| QuantError::config(&format!("quant.rules[{i}].match = {:?}", r.pattern), e.to_string()))?;
            globs.push(g.compile_matcher());
        }
        let mut used = vec![false; self.rules.len()];
        let mut rows = Vec::new();
        for (path, dims) in modules {
            // The base applies to decoder linears; anything else (lm_head) only by a rule.
            let mut p = self.clone();
            if !is_decoder_linear(path) {
                p.scheme = SchemeChoice::None;
            }
            // The last matching rule that set a deployment format, unless a later one set the
            // scheme: that rule asked for this tensor to be quantized.
            let mut format_rule = None;
            for (i, (rule, glob)) in self.rules.iter().zip(&globs).enumerate() {
                if glob.is_match(path) {
                    used[i] = true;
                    p.set(&rule.set);
                    if rule.set.format.is_some_and(|f| f != DeployFormat::None) {
                        format_rule = Some(i);
                    } else if rule.set.scheme.is_some() {
                        format_rule = None;
                    }
                }
            }
            let spec = p.spec(*dims);
            if let (None, Some(i)) = (spec, format_rule) {
                // A format only chooses how a quantized tensor is stored; without a scheme the
                // tensor would silently stay in full precision.
                return Err(QuantError::config(
                    &format!("quant.rules[{i}] (match = {:?})", self.rules[i].pattern),
                    format!("sets a format for `{path}`, which its scheme leaves unquantized (scheme = \"none\"); set `scheme` in the rule too"),
                ));
            }
            if let Some(s) = &spec {
                s.validate(&format!("quant policy for `{path}`"))?;
                s.validate_shape(&format!("quant policy for `{path}`"), *dims)?;
            }
            rows.push((path.clone(), *dims, spec));
        }
        if let Some(i) = used.iter().position(|u| !u) {
            return Err(QuantError::config(&format!("quant.rules[{i}].match = {:?}", self.rules[i].pattern), "matches no module"));
        }
        let in_linears: usize = modules.iter().map(|(_, [o, i])| o * i).sum();
        Ok(PolicyTable { rows, other_params: total_params.saturating_sub(in_linears) })
    }
}

impl PolicyTable {
    /// Average bits per weight over the quantized linears (codes plus 16-bit scales).
    pub fn quantized_bits_per_weight(&self) -> f64 {
        let (bits, n) = self
            .rows
            .iter()
            .filter_map(|(_, d, s)| s.map(|s| (s.bits_per_weight(*d) * (d[0] * d[1]) as f64, d[0] * d[1])))
            .fold((0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        bits / n.max(1) as f64
    }

    /// Average bits per weight over the whole model, unquantized parameters at 16 bits.
    pub fn model_bits_per_weight(&self) -> f64 {
        let mut bits = 16.0 * self.other_params as f64;
        let mut n = self.other_params;
        for (_, d, s) in &self.rows {
            let numel = d[0] * d[1];
            bits += numel as f64 * s.map_or(16.0, |s| s.bits_per_weight(*d));
            n += numel;
        }
        bits / n.max(1) as f64
    }

    pub fn n_quantized(&self) -> usize {
        self.rows.iter().filter(|r| r.2.is_some()).count()
    }
}

impl std::fmt::Display for PolicyTable {
    /// One line per distinct layer role (layer indices folded into ranges), then the averages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Group consecutive layers that got the same thing: `layers.0-29.mlp.down_proj`.
        // (role, layer indices, shape, quantizer)
        type Group = (String, Vec<usize>, [usize; 2], Option<QuantSpec>);
        let mut groups: Vec<Group> = Vec::new();
        for (path, dims, spec) in &self.rows {
            let (key, idx) = match path.strip_prefix("layers.").and_then(|r| r.split_once('.')) {
                Some((n, rest)) if n.parse::<usize>().is_ok() => (rest.to_string(), Some(n.parse().unwrap())),
                _ => (path.clone(), None),
            };
            match groups.iter_mut().find(|g| g.0 == key && g.2 == *dims && g.3 == *spec && idx.is_some()) {
                Some(g) => g.1.extend(idx),
                None => groups.push((key, idx.into_iter().collect(), *dims, *spec)),
            }
        }
        writeln!(f, "{:<40} {:>12} {:>22} {:>8}", "module", "shape", "quantizer", "bits/w")?;
        for (key, idx, dims, spec) in &groups {
            let name = match (idx.first(), idx.last()) {
                (Some(a), Some(b)) if a == b => format!("layers.{a}.{key}"),
                (Some(a), Some(b)) if idx.len() == b - a + 1 => format!("layers.{a}-{b}.{key}"),
                (Some(_), Some(_)) => format!("layers.{{{}}}.{key}", idx.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")),
                _ => key.clone(),
            };
            let (label, bpw) = match spec {
                Some(s) => (s.label(), format!("{:.3}", s.bits_per_weight(*dims))),
                None => ("none (16-bit)".to_string(), "16".to_string()),
            };
            writeln!(f, "{:<40} {:>12} {:>22} {:>8}", name, format!("{}x{}", dims[0], dims[1]), label, bpw)?;
        }
        writeln!(
            f,
            "{} of {} linears quantized; {:.3} bits/weight over quantized linears, {:.3} over all {} parameters (others at 16 bits)",
            self.n_quantized(),
            self.rows.len(),
            self.quantized_bits_per_weight(),
            self.model_bits_per_weight(),
            self.rows.iter().map(|(_, d, _)| d[0] * d[1]).sum::<usize>() + self.other_params
        )
    }
}
