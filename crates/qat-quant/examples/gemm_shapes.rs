//! GFLOP/s of the `gemm` products a SmolLM2-135M training step makes at batch 8×256 (2,048
//! rows), each way of `y = x·Wᵀ`, through [`qat_quant::matmul::product`] on every thread: how
//! close the step's products run to what this machine's `gemm` can do (docs/benchmarks.md).
//!
//! `cargo run --release -p qat-quant --example gemm_shapes`

use std::time::Instant;

use qat_quant::matmul::product;

/// Best-of-5 GFLOP/s of an `m × n` result from `m × k` and `k × n` operands, each either
/// row-major or its transpose (`lhs_t`, `rhs_t`: stored as `k × m`, `n × k`).
fn gflops([m, n, k]: [usize; 3], lhs_t: bool, rhs_t: bool) -> f64 {
    let lhs: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let rhs: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut dst = vec![0.0f32; m * n];
    let lhs_op = if lhs_t { (lhs.as_ptr(), 1, m as isize) } else { (lhs.as_ptr(), k as isize, 1) };
    let rhs_op = if rhs_t { (rhs.as_ptr(), 1, k as isize) } else { (rhs.as_ptr(), n as isize, 1) };
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        // SAFETY: the operands and the destination are live buffers of the sizes and strides
        // given, and the destination overlaps neither.
        unsafe { product([m, n, k], (dst.as_mut_ptr(), n), false, lhs_op, rhs_op, true) };
        best = best.min(start.elapsed().as_secs_f64());
    }
    2.0 * (m * n * k) as f64 / best / 1e9
}

fn main() {
    let rows = 2048;
    println!("| projection | out × in | forward x·Wᵀ | ∂X = ∂Y·W | ∂W = ∂Yᵀ·X |");
    println!("|---|---|---|---|---|");
    for (name, out, inp) in [
        ("q, o", 576, 576),
        ("k, v", 192, 576),
        ("q+k+v merged", 960, 576),
        ("gate, up", 1536, 576),
        ("gate+up merged", 3072, 576),
        ("down", 576, 1536),
        ("tied head", 49152, 576),
    ] {
        let forward = gflops([rows, out, inp], false, true);
        let dx = gflops([rows, inp, out], false, false);
        let dw = gflops([out, inp, rows], true, false);
        println!("| {name} | {out} × {inp} | {forward:.0} | {dx:.0} | {dw:.0} |");
    }
    println!("\nGFLOP/s, best of 5, {} threads, {rows} rows.", rayon::current_num_threads());
}
