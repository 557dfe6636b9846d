//! Module parameters by path (`layers.3.self_attn.q_proj.quant.scale`), to and from
//! safetensors files. Checkpoints store parameters this way, so weights, scales and
//! optimizer moments round-trip exactly (f32).

use std::collections::BTreeMap;
use std::path::Path;

use crate::TrainError;
use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData};
use qat_model::params::{MapByPath, map_by_path};

/// Tensors by parameter path: shape and f32 values.
pub type Named = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Every float parameter of `module` by path ([`qat_model::params::parameters`]).
pub fn collect<M: Module>(module: &M) -> Named {
    qat_model::params::parameters(module).into_iter().map(|(path, shape, data)| (path, (shape, data))).collect()
}

struct Load<'a> {
    values: &'a Named,
    missing: Vec<String>,
}

impl MapByPath for Load<'_> {
    fn map<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some((shape, data)) = self.values.get(path) else {
            self.missing.push(path.to_string());
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        if tensor.dims().as_slice() != shape.as_slice() {
            self.missing.push(format!("{path} (shape {:?} in file, {:?} in model)", shape, tensor.dims()));
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let require_grad = tensor.is_require_grad();
        let mut t = Tensor::<D>::from_data(TensorData::new(data.clone(), shape.clone()), &tensor.device());
        if require_grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}

/// Replaces every parameter of `module` with the value stored under its path.
pub fn load<M: Module>(module: M, values: &Named) -> Result<M, TrainError> {
    let mut l = Load { values, missing: Vec::new() };
    let m = map_by_path(module, &mut l);
    if l.missing.is_empty() { Ok(m) } else { Err(TrainError::Run(format!("parameters missing or mis-shaped in the checkpoint: {}", l.missing.join(", ")))) }
}

/// Writes named f32 tensors as safetensors (caller makes the write atomic).
pub fn write_safetensors(path: &Path, tensors: &Named) -> Result<(), TrainError> {
    let tensors = tensors.iter().map(|(n, (s, v))| (n.clone(), s.clone(), v.as_slice()));
    Ok(qat_model::save::write_safetensors(path, tensors, qat_model::SaveDtype::F32, None)?)
}

/// Reads an f32 safetensors file written by [`write_safetensors`].
pub fn read_safetensors(path: &Path) -> Result<Named, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::file(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| TrainError::file(path, e))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(TrainError::Run(format!("{}: tensor {name} is not f32", path.display())));
        }
        let v = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        out.insert(name, (view.shape().to_vec(), v));
    }
    Ok(out)
}
