//! Module parameters by path (`layers.3.self_attn.q_proj.quant.scale`), to and from
//! safetensors files. Checkpoints store parameters this way, so weights, scales and
//! optimizer moments round-trip exactly (f32).

use std::collections::BTreeMap;
use std::path::Path;

use crate::TrainError;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData};

/// Tensors by parameter path: shape and f32 values.
pub type Named = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Every float parameter of `module` by path ([`qat_model::params::parameters`]).
pub fn collect<M: Module>(module: &M) -> Named {
    qat_model::params::parameters(module).into_iter().map(|(path, shape, data)| (path, (shape, data))).collect()
}

struct Load<'a> {
    path: Vec<String>,
    values: &'a Named,
    missing: Vec<String>,
}

impl ModuleMapper for Load<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        let Some((shape, data)) = self.values.get(&path) else {
            self.missing.push(path);
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
    let mut l = Load { path: Vec::new(), values, missing: Vec::new() };
    let m = module.map(&mut l);
    if l.missing.is_empty() { Ok(m) } else { Err(TrainError::Run(format!("parameters missing or mis-shaped in the checkpoint: {}", l.missing.join(", ")))) }
}

/// Writes named f32 tensors as safetensors (caller makes the write atomic).
pub fn write_safetensors(path: &Path, tensors: &Named) -> Result<(), TrainError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(n, (s, v))| (n.clone(), s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let views: Vec<_> =
        bytes.iter().map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).expect("sizes match"))).collect();
    safetensors::serialize_to_file(views, None, path).map_err(|e| TrainError::file(path, e))
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
