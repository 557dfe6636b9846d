//! A module's parameters by path, as Burn's module traversal names them
//! (`layers.3.self_attn.q_proj.weight`, `layers.3.self_attn.q_proj.quant.scale`): the names
//! checkpoints of a run store, and, through [`crate::CausalLm::hf_name`], a Hugging Face
//! checkpoint's.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

struct Collect {
    path: Vec<String>,
    out: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        let data = t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 parameter");
        self.out.push((self.path.join("."), shape, data));
    }
}

/// Every float parameter of `module` in traversal order (the order of the struct fields): path,
/// shape and f32 values.
pub fn parameters<M: Module>(module: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut c = Collect { path: Vec::new(), out: Vec::new() };
    module.visit(&mut c);
    c.out
}
