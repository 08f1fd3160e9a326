//! Building the services: the dependency graph, the scheduler, the backends, and why a build
//! failed.

pub mod backend;
pub mod failure;
pub mod graph;
pub mod inputs;
pub mod run;
