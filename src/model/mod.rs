//! Full-parameter models with hand-written f64 gradients, and their data samplers. Model modules
//! never import `experiment` or `report`.

pub mod gih_common;
pub mod gih_transformer;
pub mod markov;
