//! Reading a Hugging Face checkpoint directory: `config.json` plus one `model.safetensors` or
//! shards listed in `model.safetensors.index.json`. Files are memory-mapped; tensors are
//! converted to f32 one at a time when the model asks for them, so peak memory is the model in
//! f32 plus one tensor.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use crate::{ModelConfig, ModelError};

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range within the mapped file.
    start: usize,
    end: usize,
}

/// An opened checkpoint directory.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: ModelConfig,
    files: Vec<(PathBuf, memmap2::Mmap)>,
    entries: BTreeMap<String, Entry>,
}

impl Checkpoint {
    /// Opens `dir`, parses `config.json` and validates the safetensors headers.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "checkpoint directory not found")));
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let shards = shard_files(dir)?;
        let mut files = Vec::new();
        let mut entries = BTreeMap::new();
        for path in shards {
            let st_err = |msg: String| ModelError::Safetensors { path: path.display().to_string(), msg };
            let file = std::fs::File::open(&path).map_err(|e| ModelError::io(&path, e))?;
            // SAFETY: read-only map of a file we do not modify.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(&path, e))?;
            let (header_len, meta) =
                SafeTensors::read_metadata(&map).map_err(|e| st_err(format!("not a valid safetensors file (truncated or corrupt?): {e}")))?;
            let base = 8 + header_len;
            for (name, info) in meta.tensors() {
                let (s, e) = info.data_offsets;
                let entry = Entry { file: files.len(), dtype: info.dtype, shape: info.shape.clone(), start: base + s, end: base + e };
                if entries.insert(name.clone(), entry).is_some() {
                    return Err(st_err(format!("tensor `{name}` appears in more than one shard")));
                }
            }
            files.push((path, map));
        }
        Ok(Checkpoint { dir: dir.to_path_buf(), config, files, entries })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// The tensor converted to f32 (from f32, f16 or bf16).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>, ModelError> {
        self.tensor_f32(name).map_err(|msg| ModelError::Safetensors { path: self.dir.display().to_string(), msg })
    }

    /// [`Self::read_f32`] with the problem as one line (for [`Self::read_all`]'s list).
    fn tensor_f32(&self, name: &str) -> Result<Vec<f32>, String> {
        let e = self.entries.get(name).ok_or_else(|| format!("`{name}` is missing"))?;
        let bytes = &self.files[e.file].1[e.start..e.end];
        Ok(match e.dtype {
            Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => {
                return Err(format!("`{name}` has dtype {other:?}; only F32, F16 and BF16 are supported"));
            }
        })
    }

    /// Reads every name in `expected` (with its shape) and reports, in one error, every
    /// missing, mis-shaped and unexpected tensor. `optional` names may be absent or present.
    pub fn read_all(&self, expected: &[(String, Vec<usize>)], optional: &BTreeSet<String>) -> Result<BTreeMap<String, Vec<f32>>, ModelError> {
        let mut problems = Vec::new();
        let mut out = BTreeMap::new();
        for (name, shape) in expected {
            match self.entries.get(name) {
                None if optional.contains(name) => {}
                None => problems.push(format!("  missing tensor `{name}` (expected shape {shape:?})")),
                Some(e) if &e.shape != shape => problems.push(format!("  tensor `{name}` has shape {:?}, expected {shape:?}", e.shape)),
                Some(_) => match self.tensor_f32(name) {
                    Ok(v) => {
                        out.insert(name.clone(), v);
                    }
                    Err(msg) => problems.push(format!("  {msg}")),
                },
            }
        }
        let known: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        for name in self.entries.keys() {
            // Rotary caches some exporters include carry no weights.
            if !known.contains(name.as_str()) && !name.ends_with("rotary_emb.inv_freq") {
                problems.push(format!("  unexpected tensor `{name}`"));
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(ModelError::Mismatch { dir: self.dir.display().to_string(), arch: self.config.arch.model_type().to_string(), problems })
        }
    }
}

/// The safetensors files of a checkpoint: the shards named by the index, or `model.safetensors`.
fn shard_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
        let bad = |msg: &str| ModelError::Config { path: index.display().to_string(), field: "weight_map".into(), msg: msg.into() };
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&format!("malformed JSON: {e}")))?;
        let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("is required (an object)"))?;
        let mut names = BTreeSet::new();
        for v in map.values() {
            names.insert(v.as_str().ok_or_else(|| bad("values must be file names"))?.to_string());
        }
        if names.is_empty() {
            return Err(bad("is empty"));
        }
        return Ok(names.into_iter().map(|n| dir.join(n)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        Ok(vec![single])
    } else {
        Err(ModelError::io(&single, std::io::Error::new(std::io::ErrorKind::NotFound, "no model.safetensors or model.safetensors.index.json")))
    }
}
