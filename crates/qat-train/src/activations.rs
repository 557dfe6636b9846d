//! The block-wise stage's activation sets — the calibration rows' hidden states entering a
//! block, quantized and full precision, and the full-precision block's outputs — kept in memory
//! or in files that are memory-mapped (`blockwise.activations = "disk"`). Three sets of
//! `[rows, T, hidden]` f32 values outgrow memory quickly (HY-1.8B: 2048 rows × 2048 tokens × 2048
//! channels is 32 GiB per set); on disk only the batch in use is resident, and the page cache
//! decides what else stays. Both placements hold the same f32 values, so a stage gives the same
//! results either way.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::TrainError;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Where a block-wise stage keeps its activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    #[default]
    Memory,
    /// Files in the stage's state directory, memory-mapped, deleted when no longer needed.
    Disk,
}

/// One activation set: a tensor per calibration batch.
pub enum Activations {
    Memory(Vec<Tensor<3>>),
    Disk(DiskSet),
}

/// A set stored as consecutive little-endian f32 tensors in one memory-mapped file.
pub struct DiskSet {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Byte offset and shape of each batch.
    spans: Vec<(usize, [usize; 3])>,
    device: Device,
}

impl Activations {
    /// The set of `batches`, kept as `placement` says; on disk as `dir/name.f32`.
    pub fn collect(placement: Placement, dir: &Path, name: &str, batches: impl Iterator<Item = Tensor<3>>) -> Result<Self, TrainError> {
        if placement == Placement::Memory {
            return Ok(Activations::Memory(batches.collect()));
        }
        std::fs::create_dir_all(dir).map_err(|e| TrainError::file(dir, e))?;
        let path = dir.join(format!("{name}.f32"));
        let (mut spans, mut offset, mut device) = (Vec::new(), 0usize, None);
        crate::write_atomically(&path, |tmp| {
            let err = |e: std::io::Error| TrainError::file(tmp, e);
            let mut out = std::io::BufWriter::new(std::fs::File::create(tmp).map_err(err)?);
            for t in batches {
                device.get_or_insert_with(|| t.device());
                let shape = t.dims();
                let values = t.into_data().convert::<f32>().try_into_vec::<f32>()?;
                for v in &values {
                    out.write_all(&v.to_le_bytes()).map_err(err)?;
                }
                spans.push((offset, shape));
                offset += values.len() * 4;
            }
            out.into_inner().map_err(|e| err(e.into_error()))?.sync_all().map_err(err)
        })?;
        let file = std::fs::File::open(&path).map_err(|e| TrainError::file(&path, e))?;
        // SAFETY: the file was written above and is private to this stage; nothing truncates it
        // while it is mapped (it is removed only when the set is dropped).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| TrainError::file(&path, e))?;
        Ok(Activations::Disk(DiskSet { path, map, spans, device: device.unwrap_or_default() }))
    }

    /// Batch `j`.
    pub fn get(&self, j: usize) -> Tensor<3> {
        match self {
            Activations::Memory(v) => v[j].clone(),
            Activations::Disk(d) => {
                let (offset, shape) = d.spans[j];
                let bytes = &d.map[offset..offset + shape.iter().product::<usize>() * 4];
                let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                Tensor::from_data(TensorData::new(values, shape), &d.device)
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Activations::Memory(v) => v.len(),
            Activations::Disk(d) => d.spans.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for DiskSet {
    fn drop(&mut self) {
        // Best effort: the stage's state directory is removed when the run finishes anyway.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Disk and memory sets give back the same tensors, bit for bit, and a dropped disk set
    /// removes its file.
    #[test]
    fn disk_and_memory_sets_hold_the_same_values() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        let batches: Vec<Tensor<3>> = (0..3)
            .map(|b| {
                Tensor::from_data(TensorData::new((0..2 * 5 * 4).map(|i| (i as f32 * 0.37 + b as f32).sin() * 1e3).collect::<Vec<f32>>(), [2, 5, 4]), &device)
            })
            .collect();
        let mem = Activations::collect(Placement::Memory, dir.path(), "m", batches.clone().into_iter()).unwrap();
        let disk = Activations::collect(Placement::Disk, dir.path(), "x", batches.into_iter()).unwrap();
        assert_eq!(disk.len(), 3);
        for j in 0..3 {
            let (a, b) = (mem.get(j).into_data().try_to_vec::<f32>().unwrap(), disk.get(j).into_data().try_to_vec::<f32>().unwrap());
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
            assert_eq!(disk.get(j).dims(), [2, 5, 4]);
        }
        assert!(dir.path().join("x.f32").is_file());
        drop(disk);
        assert!(!dir.path().join("x.f32").exists());
    }
}
