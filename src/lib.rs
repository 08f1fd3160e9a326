//! ai-infra-build: builds every Docker image of a multi-service repository reliably, even on
//! networks where registries fail.
//!
//! The library never prints: everything a user sees goes through [`ui`].
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod build;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod commands;
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
pub mod text;
pub mod ui;

pub use error::{Error, Exit};

use cli::{Cli, Command};

/// Runs one invocation of the command line and returns the exit status to use.
pub async fn run(cli: Cli) -> Exit {
    let ui = ui::Ui::from_cli(&cli.global);
    let outcome = dispatch(&cli, &ui).await;
    match outcome {
        Ok(exit) => exit,
        Err(err) => {
            ui.error(&err);
            err.exit()
        }
    }
}

async fn dispatch(cli: &Cli, ui: &ui::Ui) -> Result<Exit, Error> {
    match &cli.command {
        Command::Doctor(args) => doctor::run(&cli.global, args, ui).await,
        Command::Plan(args) => commands::run_plan(&cli.global, args, ui).await,
        Command::Prefetch(args) => commands::run_prefetch(&cli.global, args, ui).await,
        Command::Report(args) => report::command::run(args, ui).await,
        Command::BuildAll(args) => commands::run_build(&cli.global, args, &[], ui).await,
        Command::Build(args) => {
            commands::run_build(&cli.global, &args.build, &args.services, ui).await
        }
    }
}
