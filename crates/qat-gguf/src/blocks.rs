//! ggml tensor types and their block layouts (`ggml-common.h`; table in
//! `shared/docs/formats.md` §4). Dequantization follows `ggml-quants.c`'s
//! `dequantize_row_*` exactly, in f32.

use half::{bf16, f16};

use crate::GgufError;

/// The ggml types qat reads or writes (named as in ggml).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    BF16,
    TQ2_0,
}

impl GgmlType {
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            10 => Self::Q2_K,
            11 => Self::Q3_K,
            12 => Self::Q4_K,
            13 => Self::Q5_K,
            14 => Self::Q6_K,
            30 => Self::BF16,
            35 => Self::TQ2_0,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2_K => 10,
            Self::Q3_K => 11,
            Self::Q4_K => 12,
            Self::Q5_K => 13,
            Self::Q6_K => 14,
            Self::BF16 => 30,
            Self::TQ2_0 => 35,
        }
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => 32,
            Self::Q2_K | Self::Q3_K | Self::Q4_K | Self::Q5_K | Self::Q6_K | Self::TQ2_0 => 256,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q2_K => 84,
            Self::Q3_K => 110,
            Self::Q4_K => 144,
            Self::Q5_K => 176,
            Self::Q6_K => 210,
            Self::TQ2_0 => 66,
        }
    }

    /// Bytes for `n` elements (`n` a multiple of the block size).
    pub fn row_bytes(self, n: u64) -> u64 {
        n / self.block_size() as u64 * self.type_size() as u64
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `n` elements of type `ty` from `bytes` into f32.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>, GgufError> {
    let bs = ty.block_size();
    if !n.is_multiple_of(bs) {
        return Err(GgufError::Blocks(format!("{n} elements is not a multiple of the {ty:?} block size {bs}")));
    }
    let need = (n / bs) * ty.type_size();
    if bytes.len() < need {
        return Err(GgufError::Blocks(format!("{ty:?} data has {} bytes, {need} needed for {n} elements", bytes.len())));
    }
    let mut out = Vec::with_capacity(n);
    for block in bytes[..need].chunks_exact(ty.type_size()) {
        dequantize_block(ty, block, &mut out);
    }
    Ok(out)
}

fn dequantize_block(ty: GgmlType, b: &[u8], out: &mut Vec<f32>) {
    match ty {
        GgmlType::F32 => out.push(f32::from_le_bytes(b.try_into().unwrap())),
        GgmlType::F16 => out.push(f16_at(b, 0)),
        GgmlType::BF16 => out.push(bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        GgmlType::Q8_0 => {
            let d = f16_at(b, 0);
            out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
        }
        GgmlType::Q4_0 => {
            let d = f16_at(b, 0);
            let qs = &b[2..18];
            out.extend(qs.iter().map(|&q| ((q & 0xF) as i32 - 8) as f32 * d));
            out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
        }
        GgmlType::Q4_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let qs = &b[4..20];
            out.extend(qs.iter().map(|&q| (q & 0xF) as f32 * d + m));
            out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            // d f16, [m f16,] qh u32 (bit j: the fifth bit of element j), qs[16] low nibbles.
            let (d, m, at) = if ty == GgmlType::Q5_0 { (f16_at(b, 0), 0.0, 2) } else { (f16_at(b, 0), f16_at(b, 2), 4) };
            let qh = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
            let qs = &b[at + 4..at + 20];
            let q = |e: usize| ((qs[e % 16] >> (4 * (e / 16))) & 0xF) as i32 | ((((qh >> e) & 1) as i32) << 4);
            if ty == GgmlType::Q5_0 {
                out.extend((0..32).map(|e| (q(e) - 16) as f32 * d));
            } else {
                out.extend((0..32).map(|e| q(e) as f32 * d + m));
            }
        }
        GgmlType::Q2_K => {
            let (scales, qs) = (&b[0..16], &b[16..80]);
            let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
            for e in 0..256 {
                let sc = scales[e / 16];
                let q = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
                out.push(d * (sc & 15) as f32 * q as f32 - dmin * (sc >> 4) as f32);
            }
        }
        GgmlType::Q3_K => {
            // hmask[32] @0, qs[64] @32, scales[12] @96, d f16 @108 (dequantize_row_q3_K).
            let (hmask, qs, d) = (&b[0..32], &b[32..96], f16_at(b, 108));
            let sc = q3_k_scales(b[96..108].try_into().unwrap());
            // Element e = 128h + 32j + 16s + l: low bits in qs[32h + 16s + l] at 2j, high bit in
            // hmask[16s + l] at 4h + j (clear: subtract 4).
            for e in 0..256 {
                let (h, j, s, l) = (e / 128, (e % 128) / 32, (e % 32) / 16, e % 16);
                let low = ((qs[32 * h + 16 * s + l] >> (2 * j)) & 3) as i32;
                let high = (hmask[16 * s + l] >> (4 * h + j)) & 1;
                let q = low - if high == 1 { 0 } else { 4 };
                out.push(d * (sc[e / 16] as i32 - 32) as f32 * q as f32);
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            // d f16 @0, dmin f16 @2, scales[12] @4, [qh[32] @16,] qs[128]
            // (dequantize_row_q4_K / _q5_K): element e = 64c + 32h + l is nibble h of
            // qs[32c + l] (plus 16 if bit 2c + h of qh[l] is set), in group 2c + h.
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let (sc, mn) = k4_scales_mins(b[4..16].try_into().unwrap());
            let (qh, qs) = if ty == GgmlType::Q5_K { (&b[16..48], &b[48..176]) } else { (&[0u8; 32][..], &b[16..144]) };
            for e in 0..256 {
                let (c, h, l) = (e / 64, (e % 64) / 32, e % 32);
                let q = ((qs[32 * c + l] >> (4 * h)) & 0xF) as u32 + 16 * ((qh[l] >> (2 * c + h)) & 1) as u32;
                let g = e / 32;
                out.push(d * sc[g] as f32 * q as f32 - dmin * mn[g] as f32);
            }
        }
        GgmlType::Q6_K => {
            // ql[128] @0, qh[64] @128, scales i8[16] @192, d f16 @208 (dequantize_row_q6_K).
            let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
            let d = f16_at(b, 208);
            let mut y = [0f32; 256];
            for half in 0..2 {
                let (ql, qh, sc) = (&ql[64 * half..], &qh[32 * half..], &sc[8 * half..]);
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    let base = 128 * half;
                    y[base + l] = d * (sc[is] as i8) as f32 * q1 as f32;
                    y[base + l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                    y[base + l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                    y[base + l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                }
            }
            out.extend_from_slice(&y);
        }
        GgmlType::TQ2_0 => {
            let (qs, d) = (&b[0..64], f16_at(b, 64));
            for c in 0..2 {
                for l in 0..4 {
                    for m in 0..32 {
                        let q = ((qs[c * 32 + m] >> (2 * l)) & 3) as i32 - 1;
                        out.push(q as f32 * d);
                    }
                }
            }
        }
    }
}

/// Q3_K's sixteen 6-bit scales (unsigned, `32` = zero) from their 12 packed bytes: the low
/// nibbles of scales 0–7 and, shifted, 8–15 in bytes 0–7, their top two bits in bytes 8–11.
pub fn q3_k_scales(b: &[u8; 12]) -> [u8; 16] {
    let mut s = [0u8; 16];
    for k in 0..4 {
        s[k] = (b[k] & 0xF) | ((b[8 + k] & 3) << 4);
        s[4 + k] = (b[4 + k] & 0xF) | (((b[8 + k] >> 2) & 3) << 4);
        s[8 + k] = (b[k] >> 4) | (((b[8 + k] >> 4) & 3) << 4);
        s[12 + k] = (b[4 + k] >> 4) | (((b[8 + k] >> 6) & 3) << 4);
    }
    s
}

/// The inverse of [`q3_k_scales`] (values `< 64`).
pub fn pack_q3_k_scales(s: &[u8; 16]) -> [u8; 12] {
    let mut b = [0u8; 12];
    for k in 0..4 {
        b[k] = (s[k] & 0xF) | ((s[8 + k] & 0xF) << 4);
        b[4 + k] = (s[4 + k] & 0xF) | ((s[12 + k] & 0xF) << 4);
        b[8 + k] = (s[k] >> 4) | ((s[4 + k] >> 4) << 2) | ((s[8 + k] >> 4) << 4) | ((s[12 + k] >> 4) << 6);
    }
    b
}

/// Q4_K's and Q5_K's eight 6-bit scales and eight 6-bit mins from their 12 packed bytes
/// (`get_scale_min_k4`): groups 0–3 in the low six bits of bytes 0–3 (scales) and 4–7 (mins);
/// groups 4–7 in the nibbles of bytes 8–11 (scale low, min high) with their top two bits in the
/// top bits of bytes 0–3 (scales) and 4–7 (mins).
pub fn k4_scales_mins(b: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = b[j] & 63;
        mn[j] = b[j + 4] & 63;
        sc[j + 4] = (b[j + 8] & 0xF) | ((b[j] >> 6) << 4);
        mn[j + 4] = (b[j + 8] >> 4) | ((b[j + 4] >> 6) << 4);
    }
    (sc, mn)
}

/// The inverse of [`k4_scales_mins`] (values `< 64`).
pub fn pack_k4_scales_mins(sc: &[u8; 8], mn: &[u8; 8]) -> [u8; 12] {
    let mut b = [0u8; 12];
    for j in 0..4 {
        b[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        b[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
        b[j + 8] = (sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4);
    }
    b
}

/// Encodes f32 values as F32, F16 or BF16 (round to nearest even), or as Q8_0 / Q4_0 with
/// ggml's reference quantizers (`quantize_row_q8_0_ref`, `quantize_row_q4_0_ref`).
pub fn quantize(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>, GgufError> {
    let bs = ty.block_size();
    if !values.len().is_multiple_of(bs) {
        return Err(GgufError::Blocks(format!("{} elements is not a multiple of the {ty:?} block size {bs}", values.len())));
    }
    let mut out = Vec::with_capacity(ty.row_bytes(values.len() as u64) as usize);
    match ty {
        GgmlType::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => values.iter().for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        GgmlType::BF16 => values.iter().for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        GgmlType::Q8_0 => {
            for x in values.chunks_exact(32) {
                let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
            }
        }
        GgmlType::Q4_0 => {
            for x in values.chunks_exact(32) {
                let max = x.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
                out.extend((0..16).map(|j| q(x[j]) | (q(x[j + 16]) << 4)));
            }
        }
        other => {
            return Err(GgufError::Blocks(format!("quantizing to {other:?} needs scheme-specific codes (qat-export)")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q2_k_block_follows_the_documented_formula() {
        // scales byte 0x32 (sc = 2, m = 3), d = dmin = h: y = 2h·q − 3h, the SEQ levels.
        let h = 0.25f32;
        let mut b = vec![0x32u8; 16];
        let codes: Vec<u8> = (0..256).map(|e| (e * 7 % 4) as u8).collect();
        let mut qs = [0u8; 64];
        for (e, &q) in codes.iter().enumerate() {
            qs[32 * (e / 128) + e % 32] |= q << (2 * ((e % 128) / 32));
        }
        b.extend_from_slice(&qs);
        b.extend_from_slice(&f16::from_f32(h).to_le_bytes());
        b.extend_from_slice(&f16::from_f32(h).to_le_bytes());
        let y = dequantize(GgmlType::Q2_K, &b, 256).unwrap();
        for (e, &q) in codes.iter().enumerate() {
            assert_eq!(y[e], 2.0 * h * (q as f32 - 1.5), "element {e}");
        }
    }

    #[test]
    fn tq2_0_block_follows_the_documented_formula() {
        let d = 0.5f32;
        let codes: Vec<u8> = (0..256).map(|e| (e * 5 % 3) as u8).collect();
        let mut qs = [0u8; 64];
        for c in 0..2 {
            for l in 0..4 {
                for m in 0..32 {
                    qs[c * 32 + m] |= codes[c * 128 + l * 32 + m] << (2 * l);
                }
            }
        }
        let mut b = qs.to_vec();
        b.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        let y = dequantize(GgmlType::TQ2_0, &b, 256).unwrap();
        for e in 0..256 {
            assert_eq!(y[e], (codes[e] as f32 - 1.0) * d);
        }
    }

    #[test]
    fn q4_1_and_q4_0_nibble_order() {
        let mut b = f16::from_f32(2.0).to_le_bytes().to_vec();
        b.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        assert_eq!(y[3], 3.0 * 2.0 - 1.0);
        assert_eq!(y[16 + 3], 12.0 * 2.0 - 1.0);
        let mut b = f16::from_f32(0.5).to_le_bytes().to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        assert_eq!(y[0], -4.0);
        assert_eq!(y[16], 3.5);
    }

    #[test]
    fn reference_quantizers_round_trip_within_their_step() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 64) as f32 - 31.5) / 10.0).collect();
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0] {
            let y = dequantize(ty, &quantize(ty, &x).unwrap(), 64).unwrap();
            // Q8_0 rounds to the nearest of ±127 steps; Q4_0's grid is −8..7 steps, so the side
            // opposite the block's extreme value can clip by up to one step.
            let (steps, tol) = if ty == GgmlType::Q8_0 { (127.0, 0.5) } else { (8.0, 1.0) };
            for blk in 0..2 {
                let amax = x[blk * 32..][..32].iter().fold(0f32, |m, v| m.max(v.abs()));
                for j in blk * 32..blk * 32 + 32 {
                    assert!((x[j] - y[j]).abs() <= amax / steps * tol + 1e-3, "{ty:?} {j}: {} vs {}", x[j], y[j]);
                }
            }
        }
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            let y = dequantize(ty, &quantize(ty, &x).unwrap(), 64).unwrap();
            for j in 0..64 {
                assert!((x[j] - y[j]).abs() <= x[j].abs() / 128.0, "{ty:?}");
            }
        }
    }

    #[test]
    fn short_or_misaligned_data_is_an_error() {
        assert!(dequantize(GgmlType::Q8_0, &[0u8; 33], 32).is_err());
        assert!(dequantize(GgmlType::Q8_0, &[0u8; 34], 31).is_err());
    }
}
