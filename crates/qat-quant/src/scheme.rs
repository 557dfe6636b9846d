//! What a quantized layer is: scheme, bits, granularity, gradient variant, scale init.
//! Checked when built, so a bad combination is an error naming the field.

use serde::{Deserialize, Serialize};

use crate::QuantError;

/// The quantization grid (`shared/docs/quantization.md` §1–3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Stretched elastic quantization: zero-free symmetric grid, 2 or 3 bits.
    Seq,
    /// SEQ-style ternary (ParetoQ 1.58-bit): `{-1, 0, 1}·2α/3`.
    Ternary,
    /// LSQ signed integers `[-2^(b-1), 2^(b-1)-1]`; 2 bits is the INT2 `{-2,-1,0,1}` baseline.
    Int,
    /// Asymmetric (affine) integers: `ŵ = s·q + m` with `q ∈ [0, 2^b − 1]` and a learned step
    /// `s` and minimum `m` per scale group (LSQ+), ggml's "type-1" formats (Q4_1, Q5_1).
    Asym,
    /// `α·sign(w)`.
    Binary,
    /// BitNet b1.58 absmean ternary with a per-tensor `β = mean|W|` (not learned).
    Bitnet,
}

/// Which weights share a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "lower"))]
pub enum Granularity {
    /// One scale per output row (the default).
    Channel,
    /// One scale per row per `group_size` consecutive input columns.
    Group,
    /// One scale for the whole matrix.
    Tensor,
}

/// How the scale gradient is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GradVariant {
    /// ParetoQ `StretchedElasticQuant`: masked STE for w, scale gradient scaled by γ.
    Paretoq,
    /// Tencent AngelSlim: clamp also straight-through, no γ (SEQ/ternary only; α init 1.0).
    Angelslim,
}

/// How scales are initialised from the weights, expressed on the step size `s` (distance
/// between adjacent levels) and the largest level magnitude `Lmax` of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "lower"))]
pub enum ScaleInit {
    /// quantization.md's rule per scheme: `α = max|w|` (SEQ, ternary), `max|w|/Qp` (int),
    /// `mean|w|` (binary).
    Max,
    /// `s = mean|w|` (BitNet's absmean).
    Absmean,
    /// The LSQ paper's `s = 2·mean|w| / sqrt(Lmax)` (binary: `mean|w|`).
    Lsq,
    /// Per scale group, the `s` among 64 fractions (0.2..1.0) of the `max` rule's step that
    /// minimises the squared quantization error.
    Mse,
}

/// A resolved, checked quantization of one weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantSpec {
    pub scheme: Scheme,
    pub bits: u32,
    pub granularity: Granularity,
    /// Columns per scale group when `granularity = group`.
    pub group_size: usize,
    pub grad: GradVariant,
    pub init: ScaleInit,
    /// `> 0`: ggml k-quant scales ([`KQuant`]). Groups form super-blocks of [`SUPER_BLOCK`]
    /// weights along a row; each group's scale is a small positive integer times one scale per
    /// super-block (and an asymmetric grid's minimum a small integer times another,
    /// [`crate::exact::snap_sub_scales`]), which is how Q2_K (4 bits, per 16), Q3_K (6 bits,
    /// per 16), Q4_K and Q5_K (6 bits, per 32) store them. `0`: one free scale per group.
    #[serde(default)]
    pub sub_scale_bits: u32,
}

/// Weights per k-quant super-block (`QK_K` in ggml).
pub const SUPER_BLOCK: usize = 256;

/// The ggml k-quant layouts whose double quantization qat trains (`QuantSpec::sub_scale_bits`).
/// Each super-block of 256 weights along a row stores one f16 super-scale `d` (type-1 layouts
/// also `dmin`) and per group a small integer scale (and min); a group's step is `d·sc` and its
/// minimum `−dmin·mn` ([`crate::exact::snap_sub_scales`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KQuant {
    /// Q2_K holding SEQ-2 per group of 16: 4-bit scales, the min nibble tied to the scale
    /// (`dmin·m = 1.5·d·sc`), f16 `d` and `dmin`.
    Q2K,
    /// Q2_K as ggml's own quantizer fills it: asymmetric INT2 (`q ∈ 0..=3`) per group of 16,
    /// 4-bit scales and 4-bit mins, f16 `d` and `dmin`.
    Q2KAsym,
    /// INT3 (levels −4..3) per group of 16, signed 6-bit scales (the positive half is used),
    /// one f16 `d`.
    Q3K,
    /// Asymmetric INT4 per group of 32, 6-bit scales and mins, f16 `d` and `dmin`.
    Q4K,
    /// Asymmetric INT5 per group of 32, 6-bit scales and mins, f16 `d` and `dmin`.
    Q5K,
}

impl KQuant {
    /// Largest sub-scale integer (and, for the asymmetric layouts, largest min integer).
    pub fn max_sub_scale(self) -> u32 {
        match self {
            KQuant::Q2K | KQuant::Q2KAsym => 15,
            KQuant::Q3K => 31,
            KQuant::Q4K | KQuant::Q5K => 63,
        }
    }

    /// Significant bits of the super-scales, so that every value stays exact where it is
    /// stored. Q2_K (SEQ): a value is `(d/4)·sc·{±1, ±3}` with `sc·3` of up to 6 significant
    /// bits, so 2 for bf16 (and `d/2`, `1.5·d/2` stay f16). Q3_K: `d·sc·L` with `sc ≤ 31`,
    /// `|L| ≤ 4`: `sc·L` has up to 7 significant bits, so 1 (`d` a power of two). Asymmetric
    /// layouts are exact in f32 only ([`crate::exact::round_scales`]): any f16 value, 11 bits —
    /// `d·sc·q` then has at most 11 + 6 + 5 bits and `dmin·mn` 17, both exact in f32, and
    /// `d·sc·q − dmin·mn` rounds once, as in ggml.
    pub fn super_scale_bits(self) -> u32 {
        match self {
            KQuant::Q2K => 2,
            KQuant::Q3K => 1,
            KQuant::Q2KAsym | KQuant::Q4K | KQuant::Q5K => 11,
        }
    }

    /// Storage per weight: codes, sub-scales (and mins) per group and the f16 super-scales per
    /// 256 (`d`, and `dmin` where the layout has it).
    pub fn bits_per_weight(self) -> f64 {
        let b = SUPER_BLOCK as f64;
        match self {
            KQuant::Q2K | KQuant::Q2KAsym => 2.0 + 8.0 / 16.0 + 32.0 / b,
            KQuant::Q3K => 3.0 + 6.0 / 16.0 + 16.0 / b,
            KQuant::Q4K => 4.0 + 12.0 / 32.0 + 32.0 / b,
            KQuant::Q5K => 5.0 + 12.0 / 32.0 + 32.0 / b,
        }
    }
}

impl QuantSpec {
    /// SEQ 2-bit per channel, ParetoQ gradients, max init: the HY-1.8B-2Bit default.
    pub fn seq2() -> Self {
        QuantSpec {
            scheme: Scheme::Seq,
            bits: 2,
            granularity: Granularity::Channel,
            group_size: 0,
            grad: GradVariant::Paretoq,
            init: ScaleInit::Max,
            sub_scale_bits: 0,
        }
    }

    /// llama.cpp's Q2_K layout: SEQ-2 per group of 16 with 4-bit sub-scales.
    pub fn q2_k() -> Self {
        QuantSpec { granularity: Granularity::Group, group_size: 16, sub_scale_bits: 4, ..Self::seq2() }
    }

    /// llama.cpp's Q3_K layout: INT3 per group of 16 with 6-bit sub-scales.
    pub fn q3_k() -> Self {
        QuantSpec { scheme: Scheme::Int, bits: 3, sub_scale_bits: 6, ..Self::q2_k() }
    }

    /// Q2_K as ggml fills it: asymmetric INT2 per group of 16, 4-bit scales and mins.
    pub fn q2_k_asym() -> Self {
        QuantSpec { scheme: Scheme::Asym, init: ScaleInit::Mse, ..Self::q2_k() }
    }

    /// llama.cpp's Q4_K layout: asymmetric INT4 per group of 32, 6-bit scales and mins.
    pub fn q4_k() -> Self {
        QuantSpec { bits: 4, group_size: 32, sub_scale_bits: 6, ..Self::q2_k_asym() }
    }

    /// llama.cpp's Q5_K layout: asymmetric INT5 per group of 32, 6-bit scales and mins.
    pub fn q5_k() -> Self {
        QuantSpec { bits: 5, ..Self::q4_k() }
    }

    /// The k-quant layout of a spec with sub-scales (`None` without, or for an unsupported one).
    pub fn k_quant(&self) -> Option<KQuant> {
        match (self.scheme, self.bits, self.granularity, self.group_size, self.sub_scale_bits) {
            (Scheme::Seq, 2, Granularity::Group, 16, 4) => Some(KQuant::Q2K),
            (Scheme::Asym, 2, Granularity::Group, 16, 4) => Some(KQuant::Q2KAsym),
            (Scheme::Int, 3, Granularity::Group, 16, 6) => Some(KQuant::Q3K),
            (Scheme::Asym, 4, Granularity::Group, 32, 6) => Some(KQuant::Q4K),
            (Scheme::Asym, 5, Granularity::Group, 32, 6) => Some(KQuant::Q5K),
            _ => None,
        }
    }

    /// Checks the combination; `what` names the config location in errors.
    pub fn validate(&self, what: &str) -> Result<(), QuantError> {
        let bits_ok = match self.scheme {
            Scheme::Seq => matches!(self.bits, 2 | 3),
            Scheme::Int | Scheme::Asym => (2..=8).contains(&self.bits),
            Scheme::Ternary | Scheme::Bitnet => self.bits == 2,
            Scheme::Binary => self.bits == 1,
        };
        if !bits_ok {
            let allowed = match self.scheme {
                Scheme::Seq => "2 or 3",
                Scheme::Int | Scheme::Asym => "2..=8",
                Scheme::Ternary | Scheme::Bitnet => "2 (1.58-bit levels stored in 2 bits)",
                Scheme::Binary => "1",
            };
            return Err(QuantError::config(what, format!("bits = {} is not valid for scheme {:?} (allowed: {allowed})", self.bits, self.scheme)));
        }
        if self.granularity == Granularity::Group && self.group_size == 0 {
            return Err(QuantError::config(what, "granularity = \"group\" needs group_size > 0"));
        }
        if self.grad == GradVariant::Angelslim && !matches!(self.scheme, Scheme::Seq | Scheme::Ternary) {
            return Err(QuantError::config(what, "grad = \"angelslim\" is defined for seq and ternary only"));
        }
        if self.scheme == Scheme::Asym && !matches!(self.init, ScaleInit::Max | ScaleInit::Mse) {
            return Err(QuantError::config(what, "scheme = \"asym\" initialises from the weights' range: init = \"max\" or \"mse\""));
        }
        if self.sub_scale_bits != 0 && self.k_quant().is_none() {
            return Err(QuantError::config(
                what,
                format!(
                    "sub_scale_bits = {} is supported for ggml's k-quant layouts only (granularity = \"group\"): Q2_K (scheme = \"seq\" or \"asym\", bits = 2, group_size = 16, sub_scale_bits = 4), Q3_K (scheme = \"int\", bits = 3, group_size = 16, sub_scale_bits = 6), Q4_K and Q5_K (scheme = \"asym\", bits = 4 or 5, group_size = 32, sub_scale_bits = 6)",
                    self.sub_scale_bits
                ),
            ));
        }
        if self.scheme == Scheme::Bitnet && self.granularity != Granularity::Tensor {
            return Err(QuantError::config(what, "bitnet uses one per-tensor scale; set granularity = \"tensor\""));
        }
        Ok(())
    }

    /// Checks the spec against a `[out, in]` weight.
    pub fn validate_shape(&self, what: &str, dims: [usize; 2]) -> Result<(), QuantError> {
        if self.granularity == Granularity::Group && !dims[1].is_multiple_of(self.group_size) {
            return Err(QuantError::config(what, format!("group_size {} does not divide in_features {}", self.group_size, dims[1])));
        }
        if self.sub_scale_bits > 0 && !dims[1].is_multiple_of(SUPER_BLOCK) {
            return Err(QuantError::config(what, format!("k-quant sub-scales need rows of a multiple of {SUPER_BLOCK} weights, not {}", dims[1])));
        }
        Ok(())
    }

    /// Learned values per scale group: the step, and for [`Scheme::Asym`] the minimum after it.
    pub fn values_per_group(&self) -> usize {
        if self.scheme == Scheme::Asym { 2 } else { 1 }
    }

    /// Shape of the scale tensor for a `[out, in]` weight: `[rows, groups · values_per_group]`,
    /// for [`Scheme::Asym`] the pairs `(s, m)` of each group side by side.
    pub fn scale_shape(&self, dims: [usize; 2]) -> [usize; 2] {
        let [rows, groups] = self.group_shape(dims);
        [rows, groups * self.values_per_group()]
    }

    /// `[rows, groups]`: how many scale groups a `[out, in]` weight has.
    pub fn group_shape(&self, [out, inp]: [usize; 2]) -> [usize; 2] {
        match self.granularity {
            Granularity::Channel => [out, 1],
            Granularity::Group => [out, inp / self.group_size],
            Granularity::Tensor => [1, 1],
        }
    }

    /// Number of grid levels.
    pub fn n_levels(&self) -> usize {
        match self.scheme {
            Scheme::Seq | Scheme::Int | Scheme::Asym => 1 << self.bits,
            Scheme::Ternary | Scheme::Bitnet => 3,
            Scheme::Binary => 2,
        }
    }

    /// Information content of one weight in bits (log2 of the level count).
    pub fn code_bits(&self) -> f64 {
        (self.n_levels() as f64).log2()
    }

    /// Bits per weight including a 16-bit scale (and for [`Scheme::Asym`] a 16-bit minimum) per
    /// group, or with k-quant sub-scales the k-quant's storage ([`KQuant::bits_per_weight`]).
    pub fn bits_per_weight(&self, dims: [usize; 2]) -> f64 {
        let [r, g] = self.scale_shape(dims);
        let numel = (dims[0] * dims[1]) as f64;
        if let Some(k) = self.k_quant() {
            return k.bits_per_weight();
        }
        self.code_bits() + 16.0 * (r * g) as f64 / numel
    }

    pub fn label(&self) -> String {
        let name = match self.scheme {
            Scheme::Seq => format!("SEQ-{}", self.bits),
            Scheme::Ternary => "ternary".into(),
            Scheme::Int => format!("INT{}", self.bits),
            Scheme::Asym => format!("INT{}-asym", self.bits),
            Scheme::Binary => "binary".into(),
            Scheme::Bitnet => "bitnet-1.58".into(),
        };
        let gran = match self.granularity {
            Granularity::Channel => "channel".to_string(),
            Granularity::Group if self.sub_scale_bits > 0 => format!("group{}x{}bit", self.group_size, self.sub_scale_bits),
            Granularity::Group => format!("group{}", self.group_size),
            Granularity::Tensor => "tensor".into(),
        };
        format!("{name}/{gran}")
    }
}
