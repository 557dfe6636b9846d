//! Parsing GGUF files. Every count, length and offset read from the file is checked against
//! the bytes that are actually there before anything is allocated, so a corrupt or hostile
//! file gives a [`GgufError`] and never a panic or a huge allocation.

use std::collections::BTreeMap;
use std::path::Path;

use crate::blocks::{self, GgmlType};
use crate::value::Value;
use crate::{GgufError, Result};

/// ggml's limit on tensor rank.
const MAX_DIMS: u32 = 4;
/// Array nesting deeper than this is treated as corruption (real files nest at most once).
const MAX_ARRAY_DEPTH: usize = 2;

/// One tensor's entry in the header. `dims[0]` is the row length (HF `in`).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes the tensor occupies in its ggml type.
    pub fn n_bytes(&self) -> u64 {
        self.ggml_type.row_bytes(self.n_elements())
    }

    /// Shape in row-major (PyTorch / HF) order: the reverse of ggml's `ne`.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// Metadata and tensor directory of a GGUF file, parsed from bytes.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_offset: usize,
    pub alignment: usize,
    index: BTreeMap<String, usize>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.bytes.len() => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => Err(GgufError::Truncated { what: what.to_string(), offset: self.pos, needed: n, len: self.bytes.len() }),
        }
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    /// A count that must be satisfiable by the remaining bytes at `min_item_bytes` each.
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let limit = (self.remaining() / min_item_bytes.max(1)) as u64;
        if n > limit {
            return Err(GgufError::Corrupt(format!("{what} = {n} is impossible: only {} bytes remain at offset {}", self.remaining(), self.pos)));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.count(&format!("length of {what}"), 1)?;
        let at = self.pos;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::Corrupt(format!("{what} at offset {at} is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.u8(what)?),
            1 => Value::I8(self.u8(what)? as i8),
            2 => Value::U16(self.u16(what)?),
            3 => Value::I16(self.u16(what)? as i16),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(self.u32(what)? as i32),
            6 => Value::F32(f32::from_bits(self.u32(what)?)),
            7 => match self.u8(what)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(GgufError::Corrupt(format!("{what}: bool byte {b}"))),
            },
            8 => Value::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::Corrupt(format!("{what}: arrays nested too deep")));
                }
                let item_ty = self.u32(what)?;
                let min = min_value_bytes(item_ty).ok_or_else(|| GgufError::Corrupt(format!("{what}: unknown array item type {item_ty}")))?;
                let n = self.count(&format!("element count of {what}"), min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item_ty, what, depth + 1)?);
                }
                Value::Array(item_ty, items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(self.u64(what)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(what)?)),
            t => {
                return Err(GgufError::Corrupt(format!("{what}: unknown value type {t}")));
            }
        })
    }
}

/// The fewest bytes one value of type `ty` can occupy (for bounding counts).
fn min_value_bytes(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

impl GgufHeader {
    /// Parses the header of a complete GGUF file held in `bytes` and checks that every
    /// tensor's data lies inside it.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut c = Cursor { bytes, pos: 0 };
        let magic: [u8; 4] = c.take(4, "magic")?.try_into().unwrap();
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic(magic));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version(version));
        }
        // A tensor entry is at least 8 (name len) + 4 + 4 + 8 bytes; a kv at least 8 + 4 + 1.
        let tensor_count = c.u64("tensor_count")?;
        let kv_count = c.count("kv_count", 13)?;
        let mut metadata = Vec::with_capacity(kv_count);
        let mut index = BTreeMap::new();
        for i in 0..kv_count {
            let key = c.string(&format!("key of metadata entry {i}"))?;
            let ty = c.u32(&format!("type of `{key}`"))?;
            let v = c.value(ty, &format!("value of `{key}`"), 0)?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::Corrupt(format!("duplicate metadata key `{key}`")));
            }
            metadata.push((key, v));
        }
        if tensor_count > (c.remaining() / 24) as u64 {
            return Err(GgufError::Corrupt(format!("tensor_count = {tensor_count} is impossible for a file of {} bytes", bytes.len())));
        }
        let mut tensors = Vec::with_capacity(tensor_count as usize);
        for i in 0..tensor_count as usize {
            let name = c.string(&format!("name of tensor {i}"))?;
            let n_dims = c.u32(&format!("n_dims of `{name}`"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::Corrupt(format!("tensor `{name}` has {n_dims} dimensions (1..=4 allowed)")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&format!("dims of `{name}`"))?);
            }
            let ty_id = c.u32(&format!("type of `{name}`"))?;
            let ggml_type = GgmlType::from_id(ty_id).ok_or_else(|| GgufError::Corrupt(format!("tensor `{name}` has unknown ggml type {ty_id}")))?;
            let offset = c.u64(&format!("offset of `{name}`"))?;
            tensors.push(TensorInfo { name, dims, ggml_type, offset });
        }
        let mut header = GgufHeader { version, metadata, tensors, data_offset: 0, alignment: 32, index };
        let alignment = match header.get("general.alignment") {
            None => 32,
            Some(v) => v
                .as_u64()
                .filter(|a| a.is_power_of_two() && *a <= 1 << 20)
                .ok_or_else(|| GgufError::Corrupt(format!("general.alignment {v:?} is not a power of two")))? as usize,
        };
        header.alignment = alignment;
        header.data_offset = c.pos.div_ceil(alignment) * alignment;
        let data_len = bytes.len().saturating_sub(header.data_offset) as u64;
        let mut names = std::collections::HashSet::new();
        for t in &header.tensors {
            if !names.insert(t.name.as_str()) {
                return Err(GgufError::Corrupt(format!("duplicate tensor name `{}`", t.name)));
            }
            let n = t
                .dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n < 1 << 40)
                .ok_or_else(|| GgufError::Corrupt(format!("tensor `{}` has absurd dims {:?}", t.name, t.dims)))?;
            if t.dims[0] % t.ggml_type.block_size() as u64 != 0 {
                return Err(GgufError::Corrupt(format!(
                    "tensor `{}`: row length {} is not a multiple of the {:?} block size {}",
                    t.name,
                    t.dims[0],
                    t.ggml_type,
                    t.ggml_type.block_size()
                )));
            }
            if t.offset % alignment as u64 != 0 {
                return Err(GgufError::Corrupt(format!("tensor `{}` offset {} is not aligned to {alignment}", t.name, t.offset)));
            }
            let size = t.ggml_type.row_bytes(n);
            if t.offset.checked_add(size).is_none_or(|end| end > data_len) {
                return Err(GgufError::Truncated {
                    what: format!("data of tensor `{}`", t.name),
                    offset: header.data_offset.saturating_add(t.offset as usize),
                    needed: size as usize,
                    len: bytes.len(),
                });
            }
        }
        Ok(header)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    fn typed<'a, T>(&'a self, key: &str, expected: &'static str, f: impl Fn(&'a Value) -> Option<T>) -> Result<T> {
        let v = self.require(key)?;
        f(v).ok_or(GgufError::KeyType { key: key.to_string(), found: v.type_name(), expected })
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.typed(key, "unsigned integer", Value::as_u64)
    }
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.typed(key, "number", Value::as_f64)
    }
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.typed(key, "string", Value::as_str)
    }
    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        self.typed(key, "array", Value::as_array)
    }

    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name).ok_or_else(|| GgufError::MissingTensor(name.to_string()))
    }
}

/// A memory-mapped GGUF file.
pub struct GgufFile {
    pub path: String,
    pub header: GgufHeader,
    map: memmap2::Mmap,
}

impl std::ops::Deref for GgufFile {
    type Target = GgufHeader;
    fn deref(&self) -> &GgufHeader {
        &self.header
    }
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path_str = path.as_ref().display().to_string();
        let io = |source| GgufError::Io { path: path_str.clone(), source };
        let file = std::fs::File::open(path.as_ref()).map_err(io)?;
        // SAFETY: the map is read-only; a file changed under us gives wrong values, not UB in
        // safe code that only reads bytes.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let header = GgufHeader::parse(&map).map_err(|e| match e {
            GgufError::Io { .. } => e,
            other => GgufError::Corrupt(format!("{path_str}: {other}")),
        })?;
        Ok(GgufFile { path: path_str, header, map })
    }

    /// The raw bytes of a tensor in its ggml type.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = self.header.data_offset + info.offset as usize;
        &self.map[start..start + info.n_bytes() as usize]
    }

    /// Dequantizes a tensor to f32 in row-major order.
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.header.tensor(name)?;
        blocks::dequantize(info.ggml_type, self.tensor_bytes(info), info.n_elements() as usize)
            .map_err(|e| GgufError::Tensor { name: name.to_string(), msg: e.to_string() })
    }
}
