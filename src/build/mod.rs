//! Building the services: the scheduler, the backends, the build inputs, and why a build
//! failed. (The dependency graph of services is the plan's: [`crate::graph`].)

pub mod backend;
pub mod failure;
pub mod inputs;
pub mod run;

// The graph is the plan's; kept under `build` for callers that name it so.
pub use crate::graph;
