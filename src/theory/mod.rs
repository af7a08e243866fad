//! Reduced systems, one module per paper. Each implements [`crate::flow::GradientFlow`].
//! Theory modules never import `experiment` or `report`.

pub mod gih;
pub mod gih_mi;
pub mod musat19;
pub mod musat3;
pub mod rich;
