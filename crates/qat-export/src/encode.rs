//! Exact ggml encodings of quantized weights (`shared/docs/formats.md` §4, "Exact SEQ-2bit →
//! Q2_K" and "Other exact mappings").
//!
//! A weight is written in units `u` per scale group: every value is `u·L` with a small integer
//! `L`. The ggml type is chosen from the scheme and the row length; each encoding is checked
//! after the fact by dequantizing it with the reader and comparing bit for bit, so an inexact
//! export is an error, never a silent difference.

use half::f16;
use qat_gguf::{GgmlType, blocks};
use qat_quant::exact::unit_per_step;
use qat_quant::{QuantizedWeight, Scheme};

use crate::ExportError;

/// The ggml type an exact export of `qw` uses, and why when it is not the natural one.
pub fn choose_type(qw: &QuantizedWeight) -> Result<(GgmlType, Option<String>), ExportError> {
    exact_type(qw).map_err(ExportError::Encoding)
}

fn exact_type(qw: &QuantizedWeight) -> Result<(GgmlType, Option<String>), String> {
    let row = qw.dims[1];
    let spec = &qw.spec;
    // Elements sharing one scale along a row (a whole row unless grouped).
    let run = if spec.granularity == qat_quant::Granularity::Group { spec.group_size } else { row };
    let fits = |block: usize| row.is_multiple_of(block) && run % block == 0;
    let q4 = |why: Option<String>| {
        if fits(32) { Ok((GgmlType::Q4_0, why)) } else { Err(format!("rows of {row} (scale groups of {run}) cannot be stored in 32-element Q4_0 blocks")) }
    };
    if let Some(k) = spec.k_quant() {
        let ty = match k {
            qat_quant::KQuant::Q2K | qat_quant::KQuant::Q2KAsym => GgmlType::Q2_K,
            qat_quant::KQuant::Q3K => GgmlType::Q3_K,
            qat_quant::KQuant::Q4K => GgmlType::Q4_K,
            qat_quant::KQuant::Q5K => GgmlType::Q5_K,
        };
        return if row.is_multiple_of(256) { Ok((ty, None)) } else { Err(format!("k-quant scales need rows of a multiple of 256, not {row}")) };
    }
    match (spec.scheme, spec.bits) {
        (Scheme::Seq, 2) if fits(256) => Ok((GgmlType::Q2_K, None)),
        (Scheme::Seq, 2) => q4(Some(format!("SEQ-2 in Q4_0 (4.5 bits/weight): row length {row} or scale group {run} is not a multiple of Q2_K's 256"))),
        (Scheme::Ternary, _) if fits(256) => Ok((GgmlType::TQ2_0, None)),
        (Scheme::Ternary, _) => q4(Some(format!("ternary in Q4_0: row length {row} is not a multiple of TQ2_0's 256"))),
        (Scheme::Seq, 3) | (Scheme::Binary, _) => q4(None),
        (Scheme::Int, b) if b <= 4 => q4(None),
        (Scheme::Int, 5) if fits(32) => Ok((GgmlType::Q5_0, None)),
        (Scheme::Int, _) if fits(32) => Ok((GgmlType::Q8_0, None)),
        (Scheme::Asym, b) if b <= 4 && fits(32) => Ok((GgmlType::Q4_1, None)),
        (Scheme::Asym, 5) if fits(32) => Ok((GgmlType::Q5_1, None)),
        (Scheme::Bitnet, _) => {
            Err("BitNet's per-tensor β is recomputed from the weights each step and is not rounded to an f16 value; export it as ternary".into())
        }
        _ => Err(format!("no exact ggml type for {} with rows of {row}", spec.label())),
    }
}

/// Q2_K's 2-bit codes `q = L + shift` (SEQ-2 levels: shift 1.5; asymmetric INT2: 0), packed
/// as `dequantize_row_q2_K` reads them: element `e` at byte `32·(e/128) + e%32`, bits
/// `2·((e%128)/32)`.
fn pack_q2_k(levels: &[f32], shift: f32) -> Result<[u8; 64], String> {
    let mut qs = [0u8; 64];
    for (e, &l) in levels.iter().enumerate() {
        let q = l + shift;
        if !matches!(q, 0.0 | 1.0 | 2.0 | 3.0) {
            return Err(format!("Q2_K holds 2-bit codes only, got level {l}"));
        }
        qs[32 * (e / 128) + e % 32] |= (q as u8) << (2 * ((e % 128) / 32));
    }
    Ok(qs)
}

/// The integers `value(group) / unit` of super-block `b`'s groups, each checked to be an
/// integer in `lo..=top` (what the forward pass's snap produced).
fn block_integers(per_group: &[f32], qw: &QuantizedWeight, b: usize, unit: f32, lo: u8, top: u8, what: &str) -> Result<Vec<u8>, String> {
    let groups = 256 / qw.group_len;
    (0..groups)
        .map(|j| {
            let x = per_group[b * groups + j] / unit;
            if x.fract() != 0.0 || !(lo as f32..=top as f32).contains(&x) {
                return Err(format!("{what} {x} of super-block {b} is not an integer in {lo}..={top}"));
            }
            Ok(x as u8)
        })
        .collect()
}

/// The sub-scale integers `step / unit` of super-block `b`.
fn sub_scales(qw: &QuantizedWeight, b: usize, unit: f32, top: u8) -> Result<Vec<u8>, String> {
    block_integers(&qw.steps, qw, b, unit, 1, top, "sub-scale")
}

/// The min integers `−m / dmin` of super-block `b` of an asymmetric grid.
fn sub_mins(qw: &QuantizedWeight, b: usize, dmin: f32, top: u8) -> Result<Vec<u8>, String> {
    let neg: Vec<f32> = qw.offsets.iter().map(|&m| -m).collect();
    block_integers(&neg, qw, b, dmin, 0, top, "min")
}

/// `x` as f16 bytes, or an error when it is not an f16 value.
fn exact_f16(x: f32, what: &str) -> Result<[u8; 2], String> {
    let h = f16::from_f32(x);
    if h.to_f32() != x {
        return Err(format!("{what} {x:e} is not an f16 value"));
    }
    Ok(h.to_le_bytes())
}

/// SEQ-2 with k-quant scales as Q2_K: per super-block `D = d/2` and `Dmin = 1.5·D` (f16), per
/// group of 16 the scale nibble `sc = step / D` and the min nibble `m = sc`, so that
/// `y = D·sc·q − Dmin·m = step·(q − 1.5)`.
fn encode_q2_k_sub_scales(qw: &QuantizedWeight) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(qw.super_scales.len() * 84);
    for (b, &d) in qw.super_scales.iter().enumerate() {
        let start = b * 256;
        let (unit, umin) = (d / 2.0, 1.5 * (d / 2.0));
        let (hu, hm) = (f16::from_f32(unit), f16::from_f32(umin));
        if hu.to_f32() != unit || hm.to_f32() != umin {
            return Err(format!("super-scale {d:e} does not give f16 values d/2 and 1.5·d/2"));
        }
        out.extend(sub_scales(qw, b, unit, 15)?.into_iter().map(|sc| sc | (sc << 4)));
        out.extend_from_slice(&pack_q2_k(&qw.levels[start..start + 256], 1.5)?);
        out.extend_from_slice(&hu.to_le_bytes());
        out.extend_from_slice(&hm.to_le_bytes());
    }
    Ok(out)
}

/// The `(d, dmin)` super-scale pairs of an asymmetric k-quant weight.
fn super_pairs(qw: &QuantizedWeight) -> impl Iterator<Item = (usize, f32, f32)> + '_ {
    qw.super_scales.chunks(2).enumerate().map(|(b, p)| (b, p[0], p[1]))
}

/// Asymmetric INT2 with k-quant scales as Q2_K, ggml's own use of it: per super-block `d` and
/// `dmin` (f16), per group of 16 the scale nibble `sc = step / d` and min nibble `mn = −m / dmin`,
/// per weight the code `q = L`, so that `y = d·sc·q − dmin·mn = step·L + m`.
fn encode_q2_k_asym(qw: &QuantizedWeight) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(qw.super_scales.len() / 2 * 84);
    for (b, d, dmin) in super_pairs(qw) {
        let (sc, mn) = (sub_scales(qw, b, d, 15)?, sub_mins(qw, b, dmin, 15)?);
        out.extend(sc.iter().zip(&mn).map(|(s, m)| s | (m << 4)));
        out.extend_from_slice(&pack_q2_k(&qw.levels[b * 256..(b + 1) * 256], 0.0)?);
        out.extend_from_slice(&exact_f16(d, "super-scale")?);
        out.extend_from_slice(&exact_f16(dmin, "min super-scale")?);
    }
    Ok(out)
}

/// Asymmetric INT4 / INT5 with k-quant scales as Q4_K / Q5_K: per super-block `d`, `dmin`
/// (f16) and the packed 6-bit scales `step / d` and mins `−m / dmin` of its eight groups of 32;
/// element `e = 64c + 32h + l` as nibble `h` of `qs[32c + l]`, Q5_K's fifth bit as bit `2c + h`
/// of `qh[l]` (`dequantize_row_q4_K` / `_q5_K`).
fn encode_k4(qw: &QuantizedWeight, ty: GgmlType) -> Result<Vec<u8>, String> {
    let top_code = if ty == GgmlType::Q5_K { 31.0 } else { 15.0 };
    let mut out = Vec::with_capacity(qw.super_scales.len() / 2 * ty.type_size());
    for (b, d, dmin) in super_pairs(qw) {
        let sc: [u8; 8] = sub_scales(qw, b, d, 63)?.try_into().map_err(|_| "Q4_K/Q5_K need groups of 32".to_string())?;
        let mn: [u8; 8] = sub_mins(qw, b, dmin, 63)?.try_into().map_err(|_| "Q4_K/Q5_K need groups of 32".to_string())?;
        let (mut qh, mut qs) = ([0u8; 32], [0u8; 128]);
        for (e, &l) in qw.levels[b * 256..(b + 1) * 256].iter().enumerate() {
            if l.fract() != 0.0 || !(0.0..=top_code).contains(&l) {
                return Err(format!("{ty:?} holds codes 0..={top_code}, got {l}"));
            }
            let (q, c, h, i) = (l as u8, e / 64, (e % 64) / 32, e % 32);
            qs[32 * c + i] |= (q & 0xF) << (4 * h);
            qh[i] |= (q >> 4) << (2 * c + h);
        }
        out.extend_from_slice(&exact_f16(d, "super-scale")?);
        out.extend_from_slice(&exact_f16(dmin, "min super-scale")?);
        out.extend_from_slice(&blocks::pack_k4_scales_mins(&sc, &mn));
        if ty == GgmlType::Q5_K {
            out.extend_from_slice(&qh);
        }
        out.extend_from_slice(&qs);
    }
    Ok(out)
}

/// INT3 with k-quant scales as Q3_K: per super-block `d` (f16), per group of 16 the 6-bit
/// scale `32 + step/d`, per weight the code `L + 4` (low two bits in `qs`, the third in
/// `hmask`), so that `y = d·(scale − 32)·L`.
fn encode_q3_k_sub_scales(qw: &QuantizedWeight) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(qw.super_scales.len() * 110);
    for (b, &d) in qw.super_scales.iter().enumerate() {
        let start = b * 256;
        let hd = exact_f16(d, "super-scale")?;
        let scales: [u8; 16] =
            sub_scales(qw, b, d, 31)?.iter().map(|sc| sc + 32).collect::<Vec<_>>().try_into().map_err(|_| "Q3_K needs groups of 16".to_string())?;
        let (mut hmask, mut qs) = ([0u8; 32], [0u8; 64]);
        for (e, &l) in qw.levels[start..start + 256].iter().enumerate() {
            if l.fract() != 0.0 || !(-4.0..=3.0).contains(&l) {
                return Err(format!("Q3_K holds levels −4..3, got {l}"));
            }
            let q = (l + 4.0) as u8;
            let (h, j, s, i) = (e / 128, (e % 128) / 32, (e % 32) / 16, e % 16);
            qs[32 * h + 16 * s + i] |= (q & 3) << (2 * j);
            hmask[16 * s + i] |= (q >> 2) << (4 * h + j);
        }
        out.extend_from_slice(&hmask);
        out.extend_from_slice(&qs);
        out.extend_from_slice(&blocks::pack_q3_k_scales(&scales));
        out.extend_from_slice(&hd);
    }
    Ok(out)
}

/// Encodes `qw` as `ty`. Row-major; every block lies within one scale group, except k-quant
/// super-blocks, which carry their groups' sub-scales.
pub fn encode(qw: &QuantizedWeight, ty: GgmlType) -> Result<Vec<u8>, ExportError> {
    encode_exact(qw, ty).map_err(ExportError::Encoding)
}

fn encode_exact(qw: &QuantizedWeight, ty: GgmlType) -> Result<Vec<u8>, String> {
    let n = qw.levels.len();
    let out = match (qw.super_scales.is_empty(), ty) {
        (true, _) => encode_blocks(qw, ty)?,
        (false, GgmlType::Q2_K) if qw.spec.scheme == Scheme::Asym => encode_q2_k_asym(qw)?,
        (false, GgmlType::Q2_K) => encode_q2_k_sub_scales(qw)?,
        (false, GgmlType::Q3_K) => encode_q3_k_sub_scales(qw)?,
        (false, GgmlType::Q4_K | GgmlType::Q5_K) => encode_k4(qw, ty)?,
        (false, _) => return Err(format!("k-quant scales can be stored as Q2_K, Q3_K, Q4_K or Q5_K only, not {ty:?}")),
    };
    // The check that makes the export trustworthy: ggml's dequantization gives our values.
    let back = blocks::dequantize(ty, &out, n).map_err(|e| e.to_string())?;
    let want = qw.dequantize();
    if let Some(i) = (0..n).find(|&i| back[i].to_bits() != want[i].to_bits()) {
        return Err(format!("{ty:?} encoding is not exact at element {i}: {} vs {}", back[i], want[i]));
    }
    Ok(out)
}

/// Blocks with one scale each.
fn encode_blocks(qw: &QuantizedWeight, ty: GgmlType) -> Result<Vec<u8>, String> {
    let ups = unit_per_step(qw.spec.scheme);
    let n = qw.levels.len();
    let bs = ty.block_size();
    let mut out = Vec::with_capacity(ty.row_bytes(n as u64) as usize);
    for start in (0..n).step_by(bs) {
        let step = qw.steps[start / qw.group_len];
        if (start + bs - 1) / qw.group_len != start / qw.group_len {
            return Err(format!("a {ty:?} block would span two scale groups"));
        }
        let u = step * ups;
        let d = f16::from_f32(u);
        if d.to_f32() != u {
            return Err(format!("unit {u:e} is not an f16 value: round the scales for export first"));
        }
        let units: Vec<i32> = qw.levels[start..start + bs]
            .iter()
            .map(|&l| {
                let x = l / ups;
                if x.fract() != 0.0 { Err(format!("level {l} is not an integer number of units")) } else { Ok(x as i32) }
            })
            .collect::<Result<_, _>>()?;
        let d = d.to_le_bytes();
        // The minimum of asymmetric grids (ggml's type-1 blocks), stored as f16.
        let min = || -> Result<[u8; 2], String> {
            let m = qw.offsets.get(start / qw.group_len).copied().ok_or_else(|| format!("{ty:?} needs the minimums of an asymmetric grid"))?;
            let h = f16::from_f32(m);
            if h.to_f32() != m {
                return Err(format!("minimum {m:e} is not an f16 value: round the scales for export first"));
            }
            Ok(h.to_le_bytes())
        };
        let in_range = |lo: i32, hi: i32| match units.iter().find(|x| !(lo..=hi).contains(*x)) {
            Some(x) => Err(format!("{ty:?} holds {lo}..={hi} units, got {x}")),
            None => Ok(()),
        };
        match ty {
            GgmlType::Q2_K => {
                // y = d·sc·q − dmin·m with sc = 2, m = 3, d = dmin = u: y = u·(2q − 3).
                out.extend_from_slice(&[0x32; 16]);
                out.extend_from_slice(&pack_q2_k(&qw.levels[start..start + bs], 1.5)?);
                out.extend_from_slice(&d);
                out.extend_from_slice(&d);
            }
            GgmlType::TQ2_0 => {
                let mut qs = [0u8; 64];
                for c in 0..2 {
                    for l in 0..4 {
                        for m in 0..32 {
                            let x = units[c * 128 + l * 32 + m];
                            if !(-1..=1).contains(&x) {
                                return Err(format!("TQ2_0 holds ternary levels only, got {x}"));
                            }
                            qs[c * 32 + m] |= ((x + 1) as u8) << (2 * l);
                        }
                    }
                }
                out.extend_from_slice(&qs);
                out.extend_from_slice(&d);
            }
            GgmlType::Q4_0 | GgmlType::Q4_1 => {
                let bias = if ty == GgmlType::Q4_0 { 8 } else { 0 };
                in_range(-bias, 15 - bias)?;
                out.extend_from_slice(&d);
                if ty == GgmlType::Q4_1 {
                    out.extend_from_slice(&min()?);
                }
                out.extend((0..16).map(|j| ((units[j] + bias) as u8) | (((units[j + 16] + bias) as u8) << 4)));
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let bias = if ty == GgmlType::Q5_0 { 16 } else { 0 };
                in_range(-bias, 31 - bias)?;
                out.extend_from_slice(&d);
                if ty == GgmlType::Q5_1 {
                    out.extend_from_slice(&min()?);
                }
                // Fifth bits in `qh` (bit e for element e), low nibbles as Q4's.
                let q: Vec<u32> = units.iter().map(|&x| (x + bias) as u32).collect();
                let qh = q.iter().enumerate().fold(0u32, |h, (e, &x)| h | ((x >> 4) << e));
                out.extend_from_slice(&qh.to_le_bytes());
                out.extend((0..16).map(|j| ((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4)) as u8));
            }
            GgmlType::Q8_0 => {
                in_range(-128, 127)?;
                out.extend_from_slice(&d);
                out.extend(units.iter().map(|&x| x as i8 as u8));
            }
            other => return Err(format!("{other:?} is not an exact quantized export type")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qat_quant::{GradVariant, Granularity, QuantSpec, ScaleInit};

    fn qw(scheme: Scheme, bits: u32, levels: Vec<f32>, step: f32, cols: usize) -> QuantizedWeight {
        let spec =
            QuantSpec { scheme, bits, granularity: Granularity::Channel, group_size: 0, grad: GradVariant::Paretoq, init: ScaleInit::Max, sub_scale_bits: 0 };
        let rows = levels.len() / cols;
        QuantizedWeight { spec, dims: [rows, cols], steps: vec![step; rows], offsets: Vec::new(), levels, group_len: cols, super_scales: Vec::new() }
    }

    #[test]
    fn every_type_round_trips_exactly() {
        let seq2: Vec<f32> = (0..512).map(|i| [-1.5f32, -0.5, 0.5, 1.5][i * 7 % 4]).collect();
        let tern: Vec<f32> = (0..512).map(|i| (i * 5 % 3) as f32 - 1.0).collect();
        let int4: Vec<f32> = (0..512).map(|i| (i * 7 % 16) as f32 - 8.0).collect();
        let int8: Vec<f32> = (0..512).map(|i| (i * 37 % 256) as f32 - 128.0).collect();
        let seq3: Vec<f32> = (0..512).map(|i| (i * 3 % 8) as f32 - 3.5).collect();
        for (w, ty) in [
            (qw(Scheme::Seq, 2, seq2.clone(), 0.0625, 256), GgmlType::Q2_K),
            (qw(Scheme::Seq, 2, seq2, 0.0625, 64), GgmlType::Q4_0),
            (qw(Scheme::Ternary, 2, tern, 0.03125, 256), GgmlType::TQ2_0),
            (qw(Scheme::Int, 4, int4, 0.0078125, 128), GgmlType::Q4_0),
            (qw(Scheme::Int, 8, int8, 0.001953125, 128), GgmlType::Q8_0),
            (qw(Scheme::Seq, 3, seq3, 0.125, 64), GgmlType::Q4_0),
        ] {
            assert_eq!(choose_type(&w).unwrap().0, ty, "{}", w.spec.label());
            let bytes = encode(&w, ty).unwrap();
            assert_eq!(bytes.len() as u64, ty.row_bytes(512));
        }
    }

    /// SEQ-2 with Q2_K sub-scales: per-group scale nibbles, encoded exactly (`encode` checks
    /// every value against the reader, which is checked against gguf-py).
    #[test]
    fn k_quant_scales_export_as_q2_k() {
        use burn::tensor::{Device, Tensor, TensorData};
        let spec = QuantSpec::q2_k();
        let w: Vec<f32> = (0..4 * 512).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.02 * (1 + (i % 512) / 16) as f32).collect();
        let t = Tensor::<2>::from_data(TensorData::new(w, [4, 512]), &Device::flex());
        let qw = qat_quant::quantize(t.clone(), qat_quant::init_scale(t, &spec), &spec);
        assert_eq!(choose_type(&qw).unwrap(), (GgmlType::Q2_K, None));
        let bytes = encode(&qw, GgmlType::Q2_K).unwrap();
        assert_eq!(bytes.len(), 8 * 84);
        assert!(bytes.chunks(84).all(|b| b[..16].iter().any(|&s| s != b[0])), "sub-scales should differ within a block");
        let mut other = qw.clone();
        other.super_scales[0] *= 1.5;
        assert!(encode(&other, GgmlType::Q2_K).is_err(), "a wrong super-scale must not encode");
    }

    /// INT3 with Q3_K sub-scales: 6-bit per-group scales and the split 2+1-bit codes, encoded
    /// exactly (checked against the reader, which is checked against gguf-py).
    #[test]
    fn k_quant_scales_export_as_q3_k() {
        use burn::tensor::{Device, Tensor, TensorData};
        let spec = QuantSpec::q3_k();
        let w: Vec<f32> = (0..4 * 512).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.02 * (1 + (i % 512) / 16) as f32).collect();
        let t = Tensor::<2>::from_data(TensorData::new(w, [4, 512]), &Device::flex());
        // Scales below the max rule's, so that both ends of the grid (−4 and 3) occur.
        let alpha = qat_quant::init_scale(t.clone(), &spec).map(|a| a * 0.6);
        let qw = qat_quant::quantize(t, alpha, &spec);
        assert_eq!(choose_type(&qw).unwrap(), (GgmlType::Q3_K, None));
        assert!(qw.levels.contains(&-4.0) && qw.levels.contains(&3.0), "both ends of the grid are used");
        let bytes = encode(&qw, GgmlType::Q3_K).unwrap();
        assert_eq!(bytes.len(), 8 * 110);
        let mut other = qw.clone();
        other.super_scales[1] *= 3.0;
        assert!(encode(&other, GgmlType::Q3_K).is_err(), "a wrong super-scale must not encode");
    }

    /// Asymmetric k-quants as Q2_K (ggml's own use: scale and min nibbles), Q4_K and Q5_K
    /// (packed 6-bit scales and mins): encoded exactly (`encode` checks every value against the
    /// reader, which is checked against gguf-py), every code and min integer used somewhere.
    #[test]
    fn asymmetric_k_quants_export_exactly() {
        use burn::tensor::{Device, Tensor, TensorData};
        for (spec, ty) in [(QuantSpec::q2_k_asym(), GgmlType::Q2_K), (QuantSpec::q4_k(), GgmlType::Q4_K), (QuantSpec::q5_k(), GgmlType::Q5_K)] {
            let w: Vec<f32> = (0..4 * 512).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.3) * 0.02 * (1 + (i % 512) / 16) as f32).collect();
            let t = Tensor::<2>::from_data(TensorData::new(w, [4, 512]), &Device::flex());
            let qw = qat_quant::quantize(t.clone(), qat_quant::init_scale(t, &spec), &spec);
            assert_eq!(choose_type(&qw).unwrap(), (ty, None), "{}", spec.label());
            let qmax = ((1u32 << spec.bits) - 1) as f32;
            assert!(qw.levels.contains(&0.0) && qw.levels.contains(&qmax), "{}: both ends of the grid are used", spec.label());
            let bytes = encode(&qw, ty).unwrap();
            assert_eq!(bytes.len(), 8 * ty.type_size());
            let mut other = qw.clone();
            other.super_scales[1] *= 1.5;
            assert!(encode(&other, ty).is_err(), "{}: a wrong dmin must not encode", spec.label());
        }
    }

    #[test]
    fn inexact_units_are_refused() {
        let w = qw(Scheme::Int, 4, vec![1.0; 32], 0.1, 32);
        assert!(encode(&w, GgmlType::Q4_0).unwrap_err().to_string().contains("not an f16 value"));
        let w = qw(Scheme::Seq, 2, vec![0.5; 100], 0.25, 100);
        assert!(choose_type(&w).unwrap_err().to_string().contains("32-element"));
    }
}
