use std::path::PathBuf;

/// Compare a GGUF export with the HF export tensor by tensor, bit for bit.
#[derive(clap::Args)]
pub struct Args {
    hf_dir: PathBuf,
    gguf: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let r = qat_export::verify_export(&a.hf_dir, &a.gguf)?;
    let mut by_type = std::collections::BTreeMap::new();
    for t in &r.tensors {
        let e = by_type.entry(t.ggml_type.clone()).or_insert((0usize, 0usize));
        e.0 += 1;
        e.1 += usize::from(t.mismatches > 0);
    }
    for (ty, (n, bad)) in &by_type {
        println!("{ty:>6}: {n} tensors, {bad} with mismatches");
    }
    for t in r.tensors.iter().filter(|t| t.mismatches > 0).take(10) {
        println!("MISMATCH {} ({}): {} values differ, max |Δ| {:e}", t.name, t.ggml_type, t.mismatches, t.max_abs_diff);
    }
    for n in &r.missing_in_gguf {
        println!("MISSING in GGUF: {n}");
    }
    for n in &r.extra_in_gguf {
        println!("EXTRA in GGUF: {n}");
    }
    anyhow::ensure!(r.ok(), "the GGUF does not match {}", a.hf_dir.display());
    println!("OK: all {} tensors identical", r.tensors.len());
    Ok(())
}
