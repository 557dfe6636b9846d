//! Matrix-product throughput of the CPU backend at SmolLM2-135M's training shapes (one
//! micro-batch of 512 tokens: forward `x·Wᵀ`, and the backward's `g·W` and `gᵀ·x`), in GFLOP/s,
//! for comparison with `scripts/matmul_shapes.py` (PyTorch at the same thread count).
//!   cargo run --release -p qat-train --example matmul_shapes
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};

fn main() {
    let device = Device::flex();
    let tokens: usize = 512;
    println!("threads {}", rayon::current_num_threads());
    for (name, out, inp) in
        [("q/o_proj", 576usize, 576usize), ("k/v_proj", 192, 576), ("gate/up_proj", 1536, 576), ("down_proj", 576, 1536), ("lm_head", 49152, 576)]
    {
        let x = Tensor::<2>::random([tokens, inp], Distribution::Default, &device);
        let w = Tensor::<2>::random([out, inp], Distribution::Default, &device);
        let g = Tensor::<2>::random([tokens, out], Distribution::Default, &device);
        let mut line = format!("{name:<14} [{tokens}x{inp}]x[{inp}x{out}]");
        for (what, f) in [
            ("x·Wᵀ", &(|| x.clone().matmul(w.clone().transpose())) as &dyn Fn() -> Tensor<2>),
            ("g·W", &|| g.clone().matmul(w.clone())),
            ("gᵀ·x", &|| g.clone().transpose().matmul(x.clone())),
        ] {
            let _ = f().into_data();
            let reps = 5;
            let t = Instant::now();
            for _ in 0..reps {
                let _ = f().slice([0..1, 0..1]).into_data();
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            line += &format!("  {what} {:.1}", 2.0 * (tokens * inp * out) as f64 / s / 1e9);
        }
        println!("{line}  GFLOP/s");
    }
}
