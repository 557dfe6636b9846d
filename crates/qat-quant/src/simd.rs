//! `exp` as straight-line arithmetic, and loops compiled for the widest vector instructions the
//! CPU has, chosen at run time.
//!
//! The binary is built for the baseline x86-64 (so that it runs on any such CPU), where the
//! compiler vectorizes loops only with 4-wide SSE2, and `f32::exp` is a call into libm per
//! element that no loop around it can vectorize: the softmax of attention, the sigmoid of
//! SwiGLU and the log-softmax over SmolLM2's 49,152-word vocabulary spent most of their time in
//! it. [`exp`] is branch-free (clamp, a rounding by the 1.5·2²³ trick, a polynomial, an
//! exponent written into the float's bits), so loops of it vectorize; [`vectorized`] runs a
//! closure compiled with AVX-512 (or AVX2 + FMA) where the CPU has it (`pulp`'s run-time
//! dispatch, as the `gemm` kernels use).

/// `eˣ` within 2 ulp over the whole f32 range: `0` below −87.3 (where `eˣ` leaves the normal
/// floats), `+∞` above 88.7 (where it leaves the finite ones).
///
/// Cephes' `expf`: `n = round(x·log₂e)`, `r = x − n·ln2` (ln2 in two parts, so `r` is exact),
/// `eʳ ≈ 1 + r + r²·P(r)` with P of degree 5 on `|r| ≤ ½ln2`, `eˣ = 2ⁿ·eʳ`.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    /// 1.5·2²³: adding and subtracting it rounds an f32 of magnitude < 2²² to an integer
    /// (nearest, ties to even).
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.7);
    let n = (xc * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    // 2ⁿ for n ≤ 127 from its exponent bits; n = 128 (x within 0.4 of the overflow) as 2¹²⁷·2.
    // The biased exponent `low + 127` (1..=254) is read from the bits of `ROUND + low + 127`,
    // whose last mantissa bits hold it: `as i32` would saturate (NaN, ±∞), which LLVM does
    // not vectorize, and that alone made loops of `exp` 2.6× slower.
    let low = n.min(127.0);
    let biased = (low + (127.0 + ROUND)).to_bits() - ROUND.to_bits();
    let e = (p * r * r + r + 1.0) * f32::from_bits(biased << 23) * (1.0 + (n - low));
    if x < -87.3 {
        0.0
    } else if x > 88.7 {
        f32::INFINITY
    } else {
        e
    }
}

/// `xᵢ ← exp(xᵢ − shift)`, and their sum (in 16 interleaved partial sums, so that the loop
/// vectorizes).
#[inline(always)]
pub fn exp_shifted_sum(xs: &mut [f32], shift: f32) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (a, x) in acc.iter_mut().zip(chunk) {
            *x = exp(*x - shift);
            *a += *x;
        }
    }
    let mut tail = 0.0;
    for x in chunks.into_remainder() {
        *x = exp(*x - shift);
        tail += *x;
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ exp(xᵢ − shift)` without storing the terms (see [`exp_shifted_sum`]).
#[inline(always)]
pub fn sum_exp_shifted(xs: &[f32], shift: f32) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&x| exp(x - shift)).sum();
    for chunk in chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a += exp(x - shift);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `max xᵢ` (−∞ for an empty slice; NaN elements are skipped), in partial maxima so that the
/// loop vectorizes.
#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    for chunk in chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a = if x > *a { x } else { *a };
        }
    }
    acc.iter().fold(tail, |m, &x| if x > m { x } else { m })
}

/// `f()` compiled for the widest vector instruction set this CPU has (AVX-512, AVX2 + FMA, or
/// the baseline); `f` must be inlinable for that to reach its loops (a closure is).
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value() {
        let mut worst = 0.0f64;
        let mut x = -87.3f32;
        while x < 88.7 {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
            x += 0.000_37;
        }
        assert!(worst < 2.0 * f32::EPSILON as f64, "largest relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn reductions_match_their_sequential_forms() {
        let xs: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let m = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(vectorized(|| max(&xs)), m);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        let want: f64 = xs.iter().map(|&x| ((x - m) as f64).exp()).sum();
        let sum = vectorized(|| sum_exp_shifted(&xs, m)) as f64;
        assert!((sum - want).abs() < 1e-5 * want, "{sum} vs {want}");
        let mut stored = xs.clone();
        assert_eq!(vectorized(|| exp_shifted_sum(&mut stored, m)) as f64, sum);
        for (e, &x) in stored.iter().zip(&xs) {
            assert_eq!(*e, exp(x - m));
        }
    }
}
