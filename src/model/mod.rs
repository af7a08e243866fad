//! Full-parameter models with hand-written f64 backprop, stochastic trainers, and data
//! samplers. `model` never imports `experiment` or `report`.

pub mod gaussian;
pub mod rich_full;
pub mod rich_sgd;
