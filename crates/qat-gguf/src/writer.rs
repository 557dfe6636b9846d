//! Writing GGUF v3 files. The file appears at its path only when complete: it is written to a
//! temporary file in the same directory and renamed.

use std::io::Write;
use std::path::Path;

use crate::blocks::GgmlType;
use crate::value::Value;
use crate::{GgufError, Result};

struct PendingTensor {
    name: String,
    /// ggml order: dims[0] is the row length.
    dims: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
}

/// Collects metadata and tensors, then writes them in declaration order.
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
    alignment: usize,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter { metadata: Vec::new(), tensors: Vec::new(), alignment: 32 }
    }

    /// Sets (or replaces) a metadata key.
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key, value)),
        }
    }

    /// Adds a tensor from its encoded bytes. `shape` is row-major (HF order).
    pub fn add_tensor(&mut self, name: impl Into<String>, shape: &[usize], ty: GgmlType, data: Vec<u8>) -> Result<()> {
        let name = name.into();
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let n: u64 = dims.iter().product();
        if dims.is_empty() || dims.len() > 4 {
            return Err(GgufError::Tensor { name, msg: format!("rank {} is not 1..=4", dims.len()) });
        }
        if !dims[0].is_multiple_of(ty.block_size() as u64) {
            return Err(GgufError::Tensor { name, msg: format!("row length {} is not a multiple of the {ty:?} block size {}", dims[0], ty.block_size()) });
        }
        if ty.row_bytes(n) != data.len() as u64 {
            return Err(GgufError::Tensor { name, msg: format!("{} bytes given, {:?} of {n} elements needs {}", data.len(), ty, ty.row_bytes(n)) });
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::Tensor { name, msg: "added twice".into() });
        }
        self.tensors.push(PendingTensor { name, dims, ty, data });
        Ok(())
    }

    /// The complete file as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        let has_alignment = self.metadata.iter().any(|(k, _)| k == "general.alignment");
        let kv_count = self.metadata.len() + usize::from(!has_alignment);
        out.extend_from_slice(&(kv_count as u64).to_le_bytes());
        if !has_alignment {
            write_kv(&mut out, "general.alignment", &Value::U32(self.alignment as u32));
        }
        for (k, v) in &self.metadata {
            write_kv(&mut out, k, v);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            t.dims.iter().for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += (t.data.len() as u64).div_ceil(self.alignment as u64) * self.alignment as u64;
        }
        pad(&mut out, self.alignment);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            pad(&mut out, self.alignment);
        }
        out
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes())
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// that an interrupted write leaves nothing at `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| GgufError::Io { path: path.display().to_string(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    set_public(tmp.path()).map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

fn pad(out: &mut Vec<u8>, alignment: usize) {
    out.resize(out.len().div_ceil(alignment) * alignment, 0);
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_kv(out: &mut Vec<u8>, key: &str, v: &Value) {
    write_string(out, key);
    out.extend_from_slice(&v.type_id().to_le_bytes());
    write_value(out, v);
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => write_string(out, s),
        Value::Array(ty, items) => {
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|i| write_value(out, i));
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

/// Temporary files are created private (0600); a finished output gets ordinary permissions.
fn set_public(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}
