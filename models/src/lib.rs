//! The SCNet model family (and torchvision's ResNet) in calib's IR.
//!
//! A [`ModelSpec`] is the fixtures' machine-readable `spec` object (see
//! `shared/fixtures/README.md`): one SCConv, one SCBottleneck, a generalized SCNet, or a
//! ResNet. [`build`] turns a spec and an input shape into a [`Model`]: a typed graph whose
//! parameters carry PyTorch `state_dict` names, and the state list in `state_dict` order,
//! so the authors' checkpoints load by name.
//!
//! ```
//! use calib_ir::{DType, Mode};
//! let spec = calib_models::presets::scnet50();
//! let model = calib_models::build(&spec, &spec.default_input_shape(), Mode::Eval, DType::F32).unwrap();
//! assert_eq!(model.parameter_count(), 25_564_584);
//! ```

mod bottleneck;
mod error;
mod layers;
mod load;
mod model;
mod network;
pub mod presets;
mod resnet;
mod scconv;
mod scnet;
pub mod spec;
mod summary;

pub use error::ModelError;
pub use load::{load_spec_file, parse_spec_file, SpecFile};
pub use model::{build, build_with, check_input_shape, Model, StateEntry, StateKind};
pub use scnet::SCNET_POOLING_R;
pub use spec::ModelSpec;
pub use summary::{node_macs, summarize, LayerRow, Summary};
