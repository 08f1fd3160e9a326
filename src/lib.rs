//! ai-infra-build: builds every Docker image of a multi-service repository reliably, even on
//! networks where registries fail.
//!
//! The library never prints: everything a user sees goes through the [`ui::Sink`] that the
//! binary hands to [`run`]. docs/ARCHITECTURE.md maps the modules.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod actions_env;
pub mod auth;
pub mod build;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod compose;
pub mod context;
pub mod dockerfile;
pub mod doctor;
pub mod endpoint;
pub mod engine;
pub mod error;
pub mod graph;
pub mod health;
pub mod matrix;
pub mod plan;
pub mod prefetch;
pub mod probe;
pub mod project;
pub mod reference;
pub mod registry;
pub mod relay;
pub mod report;
pub mod retry;
pub mod reuse;
pub mod settings;
pub mod text;
pub mod ui;

pub use cmd::run;
pub use error::{Error, Exit};
