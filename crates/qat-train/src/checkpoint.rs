//! Training checkpoints: `checkpoints/step-NNNNNNNN/` holding `params.safetensors` (every
//! parameter by path, scales included), `optim.safetensors` (AdamW moments), `state.json`
//! (step, data cursor, counters) and `config.toml`. Each is written to a temporary directory
//! and renamed into place, so a crash never leaves a half-written checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qat_data::MixerState;
use qat_model::CausalLm;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::optim::AdamW;
use crate::params;
use crate::params::Named;

/// Progress and state carried in a checkpoint besides weights and moments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub step: usize,
    pub optimizer_step: u64,
    pub mixer: MixerState,
    pub skipped_steps: usize,
    pub consecutive_bad: usize,
    pub elapsed_seconds: f64,
    pub fp_eval: qat_eval::Report,
    pub first_eval: qat_eval::Report,
    pub losses: Vec<f64>,
}

/// The step a checkpoint directory (`step-N`) holds.
pub fn step_of(p: &Path) -> Option<usize> {
    p.file_name()?.to_str()?.strip_prefix("step-")?.parse().ok()
}

/// All complete checkpoints, oldest first.
pub fn list(root: &Path) -> Result<Vec<PathBuf>, TrainError> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| TrainError::file(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| step_of(p).is_some() && p.join("state.json").exists())
        .collect();
    v.sort_by_key(|p| step_of(p));
    Ok(v)
}

pub fn latest(root: &Path) -> Result<Option<PathBuf>, TrainError> {
    Ok(list(root)?.pop())
}

/// Writes a checkpoint for `state.step` and removes all but the newest `keep`.
pub fn save(root: &Path, model: &CausalLm, opt: &AdamW, state: &TrainState, config_text: &str, keep: usize) -> Result<PathBuf, TrainError> {
    let params = params::collect(model);
    // A diverged model must not replace the last good checkpoint.
    if let Some((name, _)) = params.iter().find(|(_, (_, v))| v.iter().any(|x| !x.is_finite())) {
        return Err(TrainError::Run(format!(
            "parameter {name} is not finite at step {}; checkpoint not written, the last good one in {} is intact",
            state.step,
            root.display()
        )));
    }
    std::fs::create_dir_all(root).map_err(|e| TrainError::file(root, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .tempdir_in(root)
        .map_err(|e| TrainError::file(root, e))?;
    params::write_safetensors(&tmp.path().join("params.safetensors"), &params)?;
    let mut moments: Named = BTreeMap::new();
    for (path, mv) in &opt.moments {
        let (m, v) = mv.to_host();
        moments.insert(format!("{path}/m"), (vec![m.len()], m));
        moments.insert(format!("{path}/v"), (vec![v.len()], v));
    }
    for (path, master) in &opt.masters {
        moments.insert(format!("{path}/master"), (vec![master.len()], master.clone()));
    }
    params::write_safetensors(&tmp.path().join("optim.safetensors"), &moments)?;
    let write = |name: &str, text: &str| std::fs::write(tmp.path().join(name), text).map_err(|e| TrainError::file(&tmp.path().join(name), e));
    write("config.toml", config_text)?;
    // state.json last: its presence marks the checkpoint complete.
    write("state.json", &serde_json::to_string(state).expect("JSON"))?;
    let dest = root.join(format!("step-{:08}", state.step));
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| TrainError::file(&dest, e))?;
    }
    std::fs::rename(tmp.keep(), &dest).map_err(|e| TrainError::file(&dest, e))?;
    let all = list(root)?;
    for old in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        std::fs::remove_dir_all(old).map_err(|e| TrainError::file(old, e))?;
    }
    Ok(dest)
}

/// Reads a checkpoint: parameters by path, optimizer moments by path, train state.
/// What a checkpoint holds.
pub struct Loaded {
    pub params: Named,
    pub moments: BTreeMap<String, crate::optim::Moments>,
    /// Unrounded scales (runs with `[quant] round_scales`).
    pub masters: BTreeMap<String, Vec<f32>>,
    pub train: TrainState,
}

pub fn load(dir: &Path) -> Result<Loaded, TrainError> {
    let p = params::read_safetensors(&dir.join("params.safetensors"))?;
    let raw = params::read_safetensors(&dir.join("optim.safetensors"))?;
    let mut moments = BTreeMap::new();
    let mut masters = BTreeMap::new();
    let t = |(_, v): &(Vec<usize>, Vec<f32>)| v.clone();
    for (k, val) in &raw {
        if let Some(path) = k.strip_suffix("/m") {
            let v = raw.get(&format!("{path}/v")).ok_or_else(|| TrainError::Run(format!("{}: moment {path}/v missing", dir.display())))?;
            moments.insert(path.to_string(), crate::optim::Moments::Host(t(val), t(v)));
        } else if let Some(path) = k.strip_suffix("/master") {
            masters.insert(path.to_string(), t(val));
        }
    }
    let text = std::fs::read_to_string(dir.join("state.json")).map_err(|e| TrainError::file(&dir.join("state.json"), e))?;
    let state = serde_json::from_str(&text).map_err(|e| TrainError::file(&dir.join("state.json"), e))?;
    Ok(Loaded { params: p, moments, masters, train: state })
}
