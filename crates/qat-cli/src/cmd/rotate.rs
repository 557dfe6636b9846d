use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory or Hub id.
    model: PathBuf,
    /// Output directory (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// The orthogonal matrices: random-signed Hadamard (orders 2^a·12^b) or Haar-random.
    #[arg(long, value_enum, default_value = "hadamard")]
    rotation: qat_model::Rotation,
    /// Seed of the random signs or matrices.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let dir = super::model_dir(&a.model)?;
    let ckpt = qat_model::Checkpoint::open(&dir).with_context(|| format!("opening checkpoint {}", dir.display()))?;
    let r = qat_model::rotate::rotate_checkpoint(&ckpt, a.rotation, a.seed, &a.out)?;
    println!(
        "rotated {} ({:?}, seed {}: residual stream {}×{}, value heads {}×{}; norms folded, head untied) into {} ({} tensors, f32)",
        dir.display(),
        a.rotation,
        a.seed,
        r.hidden,
        r.hidden,
        r.head_dim,
        r.head_dim,
        a.out.display(),
        r.n_tensors
    );
    Ok(())
}
