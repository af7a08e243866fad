//! The integration tests, as one test binary: one module per area and one shared `support`
//! module. One binary links the library once instead of once per file (as in
//! ripgrep's `tests/tests.rs`).

mod support;

mod architecture;
mod cli;
mod faults;
mod gih;
mod musat3_flow;
mod musat_full;
mod phase;
mod rich_cli;
mod rich_flow;
mod scenario_props;
mod standard;
mod sweep_control;
