use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file.
    gguf: PathBuf,
    /// Output directory (must not exist).
    out: PathBuf,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let s = qat_gguf::import::import_gguf(&a.gguf, &a.out)?;
    let types: Vec<String> = s.types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    println!(
        "imported {} ({}, {} tensors, {:.1}M parameters; source types: {}) into {}",
        a.gguf.display(),
        s.model_type,
        s.n_tensors,
        s.n_params as f64 / 1e6,
        types.join(", "),
        a.out.display()
    );
    Ok(())
}
