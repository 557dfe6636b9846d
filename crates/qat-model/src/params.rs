//! A module's parameters by path, as Burn's module traversal names them
//! (`layers.3.self_attn.q_proj.weight`, `layers.3.self_attn.q_proj.quant.scale`): the names
//! checkpoints of a run store, and, through [`crate::CausalLm::hf_name`], a Hugging Face
//! checkpoint's.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
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

/// A rewrite of parameters that is told each one's path ([`map_by_path`]).
pub trait MapByPath {
    fn map<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>>;
}

/// `module` with `f` applied to every float parameter, with its path.
pub fn map_by_path<M: Module>(module: M, f: &mut impl MapByPath) -> M {
    struct Tracked<'a, F> {
        path: Vec<String>,
        f: &'a mut F,
    }
    impl<F: MapByPath> ModuleMapper for Tracked<'_, F> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            self.f.map(&self.path.join("."), param)
        }
    }
    module.map(&mut Tracked { path: Vec::new(), f })
}

/// Every float parameter of `module` in traversal order (the order of the struct fields): path,
/// shape and f32 values.
pub fn parameters<M: Module>(module: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut c = Collect { path: Vec::new(), out: Vec::new() };
    module.visit(&mut c);
    c.out
}
