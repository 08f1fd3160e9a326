//! Building the services: the scheduler, the backends, the build inputs, and why a build
//! failed. (The dependency graph of services is the plan's: [`crate::graph`].)

pub mod backend;
pub mod changed;
pub mod failure;
pub mod inputs;
pub mod parallelism;
pub mod reuse;
pub mod run;
pub mod secrets;

/// What a base image that cannot be had does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrefetchFailure {
    /// Go on (a build may still succeed from a local copy).
    #[default]
    Warn,
    /// Stop before building.
    Fail,
}

// The graph is the plan's; kept under `build` for callers that name it so.
pub use crate::graph;
