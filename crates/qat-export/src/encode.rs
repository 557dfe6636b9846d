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

/// The ggml type an exact export of `qw` uses, and why when it is not the natural one.
pub fn choose_type(qw: &QuantizedWeight) -> Result<(GgmlType, Option<String>), String> {
    let row = qw.dims[1];
    let spec = &qw.spec;
    // Elements sharing one scale along a row (a whole row unless grouped).
    let run = if spec.granularity == qat_quant::Granularity::Group { spec.group_size } else { row };
    let fits = |block: usize| row.is_multiple_of(block) && run % block == 0;
    let q4 = |why: Option<String>| {
        if fits(32) { Ok((GgmlType::Q4_0, why)) } else { Err(format!("rows of {row} (scale groups of {run}) cannot be stored in 32-element Q4_0 blocks")) }
    };
    match (spec.scheme, spec.bits) {
        (Scheme::Seq, 2) if fits(256) => Ok((GgmlType::Q2_K, None)),
        (Scheme::Seq, 2) => q4(Some(format!("SEQ-2 in Q4_0 (4.5 bits/weight): row length {row} or scale group {run} is not a multiple of Q2_K's 256"))),
        (Scheme::Ternary, _) if fits(256) => Ok((GgmlType::TQ2_0, None)),
        (Scheme::Ternary, _) => q4(Some(format!("ternary in Q4_0: row length {row} is not a multiple of TQ2_0's 256"))),
        (Scheme::Seq, 3) | (Scheme::Binary, _) => q4(None),
        (Scheme::Int, b) if b <= 4 => q4(None),
        (Scheme::Int, _) if fits(32) => Ok((GgmlType::Q8_0, None)),
        (Scheme::Bitnet, _) => {
            Err("BitNet's per-tensor β is recomputed from the weights each step and is not rounded to an f16 value; export it as ternary".into())
        }
        _ => Err(format!("no exact ggml type for {} with rows of {row}", spec.label())),
    }
}

/// Encodes `qw` as `ty`. Row-major; every block lies within one scale group.
pub fn encode(qw: &QuantizedWeight, ty: GgmlType) -> Result<Vec<u8>, String> {
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
        match ty {
            GgmlType::Q2_K => {
                // y = d·sc·q − dmin·m with sc = 2, m = 3, d = dmin = u: y = u·(2q − 3).
                let mut qs = [0u8; 64];
                for (e, &x) in units.iter().enumerate() {
                    if !matches!(x, -3 | -1 | 1 | 3) {
                        return Err(format!("Q2_K holds the SEQ-2 grid only, got {x} units"));
                    }
                    let q = ((x + 3) / 2) as u8;
                    qs[32 * (e / 128) + e % 32] |= q << (2 * ((e % 128) / 32));
                }
                out.extend_from_slice(&[0x32; 16]);
                out.extend_from_slice(&qs);
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
            GgmlType::Q4_0 => {
                if let Some(x) = units.iter().find(|x| !(-8..=7).contains(*x)) {
                    return Err(format!("Q4_0 holds −8..7 units, got {x}"));
                }
                out.extend_from_slice(&d);
                out.extend((0..16).map(|j| ((units[j] + 8) as u8) | (((units[j + 16] + 8) as u8) << 4)));
            }
            GgmlType::Q8_0 => {
                if let Some(x) = units.iter().find(|x| !(-128..=127).contains(*x)) {
                    return Err(format!("Q8_0 holds −128..127 units, got {x}"));
                }
                out.extend_from_slice(&d);
                out.extend(units.iter().map(|&x| x as i8 as u8));
            }
            other => return Err(format!("{other:?} is not an exact quantized export type")),
        }
    }
    // The check that makes the export trustworthy: ggml's dequantization gives our values.
    let back = blocks::dequantize(ty, &out, n)?;
    let want = qw.dequantize();
    if let Some(i) = (0..n).find(|&i| back[i].to_bits() != want[i].to_bits()) {
        return Err(format!("{ty:?} encoding is not exact at element {i}: {} vs {}", back[i], want[i]));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qat_quant::{GradVariant, Granularity, QuantSpec, ScaleInit};

    fn qw(scheme: Scheme, bits: u32, levels: Vec<f32>, step: f32, cols: usize) -> QuantizedWeight {
        let spec = QuantSpec { scheme, bits, granularity: Granularity::Channel, group_size: 0, grad: GradVariant::Paretoq, init: ScaleInit::Max };
        let rows = levels.len() / cols;
        QuantizedWeight { spec, dims: [rows, cols], steps: vec![step; rows], levels, group_len: cols }
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

    #[test]
    fn inexact_units_are_refused() {
        let w = qw(Scheme::Int, 4, vec![1.0; 32], 0.1, 32);
        assert!(encode(&w, GgmlType::Q4_0).unwrap_err().contains("not an f16 value"));
        let w = qw(Scheme::Seq, 2, vec![0.5; 100], 0.25, 100);
        assert!(choose_type(&w).unwrap_err().contains("32-element"));
    }
}
