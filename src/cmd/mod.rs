//! One module per subcommand: each resolves its [`crate::settings`] first (nothing is done
//! with bad input), calls into the library, and hands what it found to [`Ui`] or the
//! [`crate::report::Publisher`]. [`run`] is the whole command line.

mod build;
mod cache;
mod doctor;
mod plan;
mod prefetch;
mod report;

use std::sync::Arc;

use crate::actions_env::ActionsEnv;
use crate::cli::{Cli, Command};
use crate::error::{Error, Exit};
use crate::ui::{Sink, Ui};

/// Runs one invocation of the command line, writing through `sink`, and returns the exit
/// status to use.
pub async fn run(cli: Cli, sink: Arc<dyn Sink>) -> Exit {
    let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let global = &cli.global;
    let actions = ActionsEnv::from_env();
    // In Actions, nothing we print may become a workflow command unless we mean it to.
    let sink: Arc<dyn Sink> = if actions.in_actions {
        Arc::new(crate::ui::InertSink(sink))
    } else {
        sink
    };
    let ui = Ui::new(
        sink,
        global.output,
        global.color,
        no_color_env,
        global.quiet,
        global.verbose,
    );
    match dispatch(&cli, &ui, actions).await {
        Ok(exit) => exit,
        Err(err) => {
            ui.error(&err, err.help().as_deref());
            err.exit()
        }
    }
}

async fn dispatch(cli: &Cli, ui: &Ui, actions: ActionsEnv) -> Result<Exit, Error> {
    let global = &cli.global;
    match &cli.command {
        Command::Doctor(args) => Box::pin(doctor::run(global, args, ui, actions)).await,
        Command::Plan(args) => Box::pin(plan::run(global, args, ui, actions)).await,
        Command::Prefetch(args) => Box::pin(prefetch::run(global, args, ui, actions)).await,
        Command::Report(args) => Box::pin(report::run(args, ui, actions)).await,
        Command::BuildAll(args) => Box::pin(build::run(global, args, &[], ui, actions)).await,
        Command::Build(args) => {
            Box::pin(build::run(global, &args.build, &args.services, ui, actions)).await
        }
    }
}

/// Waits for SIGINT or SIGTERM and returns the exit status it stands for.
async fn interrupted() -> Exit {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => Exit::Interrupted,
        _ = term.recv() => Exit::Terminated,
    }
}
