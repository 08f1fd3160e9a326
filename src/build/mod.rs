//! Building the services: the dependency graph, the scheduler, the backends, and why a build
//! failed.

pub mod backend;
pub mod failure;
pub mod graph;
pub mod inputs;
pub mod run;

/// What a base image that cannot be had does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrefetchFailure {
    /// Go on (a build may still succeed from a local copy).
    #[default]
    Warn,
    /// Stop before building.
    Fail,
}
