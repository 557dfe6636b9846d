//! Quantizer scales that the export formats store exactly.
//!
//! Every quantized value is `u·L` with `L` an integer level in units of `u`
//! ([`unit_per_step`]). GGUF stores `u` as f16; the HF export stores `u·L` as bf16 (8
//! significant bits) or f32. Rounding `u` to `p` significant bits with `p + bits(max|L|) ≤ 8`
//! (bf16) or `p ≤ 11` (f32), and onto the f16 grid, makes both exact; `α` is then the value
//! whose step gives exactly that `u`. Export rounds the trained scales once; training can keep
//! them on this grid at every step (`[quant] round_scales`).

use crate::QuantError;
use crate::scheme::{QuantSpec, SUPER_BLOCK, Scheme};

/// Levels in units `u`, and `u = step · unit_per_step` for each scheme.
pub fn unit_per_step(scheme: Scheme) -> f32 {
    match scheme {
        // SEQ levels are half-integers of the step: in units of step/2 they are odd integers.
        Scheme::Seq => 0.5,
        _ => 1.0,
    }
}

/// Storage of the HF export, which decides how many bits a unit may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "lower"))]
pub enum HfDtype {
    Bf16,
    F32,
}

/// Significant bits of the largest level (in units) of a scheme.
fn level_bits(spec: &QuantSpec) -> u32 {
    let max_units: u32 = match (spec.scheme, spec.bits) {
        (Scheme::Seq, b) => (1 << b) - 1, // odd units up to 2k − 1
        (Scheme::Int, b) => (1 << (b - 1)) - 1,
        _ => 1,
    };
    (0..=max_units).map(|l| if l == 0 { 0 } else { 32 - l.leading_zeros() - l.trailing_zeros() }).max().unwrap_or(1).max(1)
}

/// Significant bits allowed for the unit.
pub fn unit_bits(spec: &QuantSpec, dtype: HfDtype) -> u32 {
    match dtype {
        HfDtype::F32 => 11,
        HfDtype::Bf16 if level_bits(spec) == 1 => 8,
        HfDtype::Bf16 => (8 - level_bits(spec)).min(11),
    }
}

/// `x > 0` rounded to `bits` significant bits (half to even) and onto the f16 grid.
pub fn round_unit(x: f32, bits: u32) -> Result<f32, QuantError> {
    if !(x.is_finite() && x > 0.0) {
        return Err(QuantError::Scale(format!("scale unit {x} is not a positive finite number")));
    }
    let shift = 24 - bits;
    let b = x.to_bits();
    let half = 1u32 << (shift - 1);
    let lsb = (b >> shift) & 1;
    let r = f32::from_bits((b + half - 1 + lsb) & !((1u32 << shift) - 1));
    // Below f16's normal range values must sit on its subnormal grid (multiples of 2^-24):
    // round x there directly, then keep at most `bits` significant bits of the multiple.
    let r = if r < 6.103_515_6e-5 {
        let mut k = ((x * 16_777_216.0).round() as u32).max(1);
        let sig = 32 - k.leading_zeros();
        if sig > bits {
            let drop = sig - bits;
            k = ((k + (1 << (drop - 1))) >> drop) << drop;
        }
        k as f32 / 16_777_216.0
    } else {
        r
    };
    if r > 65504.0 {
        return Err(QuantError::Scale(format!("scale unit {x} exceeds the f16 range")));
    }
    debug_assert_eq!(half::f16::from_f32(r).to_f32(), r);
    Ok(r)
}

/// α whose step gives exactly unit `u`: the step is α/k for SEQ (k = 2^(b−1)), α/1.5 for
/// ternary, α otherwise; and `u = step·unit_per_step`.
fn alpha_for_unit(spec: &QuantSpec, u: f32) -> f32 {
    let step = u / unit_per_step(spec.scheme);
    match spec.scheme {
        Scheme::Seq => step * (1u32 << (spec.bits - 1)) as f32,
        Scheme::Ternary => step * 1.5,
        _ => step,
    }
}

fn unit_of_alpha(spec: &QuantSpec, alpha: f32) -> f32 {
    let step = match spec.scheme {
        Scheme::Seq => alpha / (1u32 << (spec.bits - 1)) as f32,
        Scheme::Ternary => alpha / 1.5,
        _ => alpha,
    };
    step * unit_per_step(spec.scheme)
}

/// Smallest super-scale, so that Q2_K's `d/2` stays an f16 normal number.
const SUPER_SCALE_MIN: f32 = 1.0 / 8192.0;

/// `x > 0` rounded up to `bits` significant bits.
fn ceil_bits(x: f32, bits: u32) -> f32 {
    let mask = (1u32 << (24 - bits)) - 1;
    let b = x.to_bits();
    if b & mask == 0 { x } else { f32::from_bits((b | mask) + 1) }
}

/// k-quant scales ([`QuantSpec::sub_scale_bits`]): per super-block of `256 / group_size`
/// consecutive groups of a row, `d = ⌈max α / top⌉` (rounded up to
/// [`crate::KQuant::super_scale_bits`] significant bits, at least 2⁻¹³) and each group's
/// `α' = d · clamp(round(α / d), 1, top)`, `top` = [`crate::KQuant::max_sub_scale`].
/// Asymmetric layouts (Q2_K as ggml fills it, Q4_K, Q5_K) hold `(s, m)` pairs: the steps snap
/// as above, and the minimums, as in ggml's quantizers, are clamped to `≤ 0` and snapped to
/// `m' = −dmin · clamp(round(−m / dmin), 0, top)` with `dmin = ⌈max(−m) / top⌉` per super-block.
///
/// `alpha` is row-major `[rows, values]` ([`QuantSpec::scale_shape`]); returns the snapped
/// values (same layout) and the super-scales: `d` per super-block, or `(d, dmin)` pairs for the
/// asymmetric layouts. Fake quantization uses the snapped values in its forward pass and export
/// stores the super-scales and the integers, so both see the same values.
pub fn snap_sub_scales(alpha: &[f32], values: usize, spec: &QuantSpec) -> (Vec<f32>, Vec<f32>) {
    let k = spec.k_quant().expect("a k-quant spec (checked by QuantSpec::validate)");
    let top = k.max_sub_scale() as f32;
    let per = SUPER_BLOCK / spec.group_size * spec.values_per_group();
    let super_scale = |max: f32| ceil_bits((max / top).max(SUPER_SCALE_MIN), k.super_scale_bits());
    let mut snapped = Vec::with_capacity(alpha.len());
    let mut supers = Vec::with_capacity(alpha.len() / per * spec.values_per_group());
    for row in alpha.chunks(values) {
        for block in row.chunks(per) {
            if spec.scheme != Scheme::Asym {
                let d = super_scale(block.iter().fold(0.0f32, |m, &a| m.max(a)));
                supers.push(d);
                snapped.extend(block.iter().map(|&a| d * (a / d).round_ties_even().clamp(1.0, top)));
                continue;
            }
            let d = super_scale(block.iter().step_by(2).fold(0.0f32, |m, &s| m.max(s)));
            let dmin = super_scale(block.iter().skip(1).step_by(2).fold(0.0f32, |m, &x| m.max(-x)));
            supers.extend([d, dmin]);
            for pair in block.chunks(2) {
                snapped.push(d * (pair[0] / d).round_ties_even().clamp(1.0, top));
                snapped.push(-(dmin * (-pair[1] / dmin).round_ties_even().clamp(0.0, top)));
            }
        }
    }
    (snapped, supers)
}

/// Every value of a scale tensor (row-major, [`QuantSpec::scale_shape`]) rounded so that the
/// quantized weights are exact in GGUF and in an HF export stored as `dtype`: steps by
/// [`round_alpha`]; for [`Scheme::Asym`] the pairs `(s, m)` onto f16 (ggml's type-1 blocks store
/// both as f16, and `s·q` is then exact in f32, so `s·q + m` rounds once, the same in f32
/// safetensors, in ggml and in training). A bf16 export cannot hold `s·q + m` exactly: an error.
pub fn round_scales(spec: &QuantSpec, values: &[f32], dtype: HfDtype) -> Result<Vec<f32>, QuantError> {
    if spec.scheme != Scheme::Asym {
        return values.iter().map(|&a| round_alpha(spec, a, dtype)).collect();
    }
    if dtype != HfDtype::F32 {
        return Err(QuantError::Scale(format!("{} values s·q + m are exact in f32 only: export with --hf-dtype f32 (round_scales = \"f32\")", spec.label())));
    }
    if spec.sub_scale_bits > 0 {
        // Snapped onto the k-quant grid by the forward pass itself (snap_sub_scales).
        return match values.iter().find(|x| !x.is_finite()) {
            Some(x) => Err(QuantError::Scale(format!("scale value {x} is not finite"))),
            None => Ok(values.to_vec()),
        };
    }
    let to_f16 = |x: f32| {
        let r = half::f16::from_f32(x).to_f32();
        if r.is_finite() { Ok(r) } else { Err(QuantError::Scale(format!("scale value {x} is outside the f16 range"))) }
    };
    values.chunks(2).flat_map(|pair| [to_f16(pair[0].max(crate::quantizer::ALPHA_MIN as f32)), to_f16(pair[1])]).collect()
}

/// `α` rounded so that its quantized values are exact in GGUF and in an HF export stored as
/// `dtype` (symmetric schemes; [`round_scales`] for any). A scale that training pushed below the quantizer's floor is rounded from that floor,
/// the value the quantizer uses. k-quant scales are left as they are: the forward pass snaps
/// them onto the exact grid itself ([`snap_sub_scales`]).
pub fn round_alpha(spec: &QuantSpec, alpha: f32, dtype: HfDtype) -> Result<f32, QuantError> {
    if spec.sub_scale_bits > 0 {
        return if alpha.is_finite() { Ok(alpha) } else { Err(QuantError::Scale(format!("scale {alpha} is not finite"))) };
    }
    let bits = unit_bits(spec, dtype);
    if bits < 4 {
        return Err(QuantError::Scale(format!("{} values need a {bits}-bit scale to be exact in bf16; use f32", spec.label())));
    }
    let alpha = if alpha.is_nan() { alpha } else { alpha.max(crate::quantizer::ALPHA_MIN as f32) };
    let u = round_unit(unit_of_alpha(spec, alpha), bits)?;
    let r = alpha_for_unit(spec, u);
    debug_assert_eq!(unit_of_alpha(spec, r), u);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_below_the_floor_round_from_the_floor() {
        let spec = QuantSpec::seq2();
        let floor = round_alpha(&spec, crate::quantizer::ALPHA_MIN as f32, HfDtype::Bf16).unwrap();
        assert_eq!(round_alpha(&spec, -0.3, HfDtype::Bf16).unwrap(), floor);
        assert_eq!(round_alpha(&spec, 0.0, HfDtype::Bf16).unwrap(), floor);
        assert!(round_alpha(&spec, f32::NAN, HfDtype::Bf16).is_err());
    }

    #[test]
    fn rounding_gives_few_bit_f16_values() {
        for x in [0.013_7f32, 1.0, 3.999, 7.3e-6, 123.456] {
            for bits in [5, 6, 8, 11] {
                let r = round_unit(x, bits).unwrap();
                assert_eq!(half::f16::from_f32(r).to_f32(), r);
                let m = r.to_bits() & 0x7f_ffff;
                if r >= 6.2e-5 {
                    assert_eq!(m & ((1 << (24 - bits)) - 1), 0, "{x} → {r} has more than {bits} bits");
                }
                // Half a unit in the last kept bit; in f16's subnormal range, its spacing 2^-24.
                let bound = (2f32.powi(-(bits as i32)) * x * 1.0001).max(2f32.powi(-24));
                assert!((r - x).abs() <= bound, "{x} → {r}");
            }
        }
        assert_eq!(round_unit(0.75, 6).unwrap(), 0.75);
        assert!(round_unit(1e6, 6).is_err());
    }

    #[test]
    fn level_bits_per_scheme() {
        let s = |scheme, bits| QuantSpec { scheme, bits, ..QuantSpec::seq2() };
        assert_eq!(unit_bits(&s(Scheme::Seq, 2), HfDtype::Bf16), 6); // levels ±1, ±3 units
        assert_eq!(unit_bits(&s(Scheme::Seq, 3), HfDtype::Bf16), 5); // up to ±7
        assert_eq!(unit_bits(&s(Scheme::Ternary, 2), HfDtype::Bf16), 8);
        assert_eq!(unit_bits(&s(Scheme::Int, 4), HfDtype::Bf16), 5); // 7 = 111b, and −8
    }
}
