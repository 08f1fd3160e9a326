//! The `ai-infra-build` binary: parse arguments, build the runtime once, hand over to the
//! library with the one sink that writes to stdout and stderr, and turn the outcome into a
//! documented exit code.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use clap::Parser;

/// The process's stdout (results, workflow commands) and stderr (notes, progress).
struct StdSink;

fn write_line(mut to: impl Write, text: &str) {
    let _ = to.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = to.write_all(b"\n");
    }
    let _ = to.flush();
}

impl ai_infra_build::ui::Sink for StdSink {
    fn out(&self, text: &str) {
        write_line(std::io::stdout().lock(), text);
    }

    fn err(&self, text: &str) {
        write_line(std::io::stderr().lock(), text);
    }

    fn is_terminal(&self) -> bool {
        std::io::stderr().is_terminal()
    }

    fn progress_target(&self) -> Option<indicatif::ProgressDrawTarget> {
        self.is_terminal()
            .then(indicatif::ProgressDrawTarget::stderr)
    }
}

fn main() -> std::process::ExitCode {
    let cli = match ai_infra_build::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // In Actions, clap's messages quote flag values (and `INPUT_*` variables): keep them
        // from becoming workflow commands.
        Err(err) if ai_infra_build::actions_env::ActionsEnv::from_env().in_actions => {
            let text = ai_infra_build::ui::inert(&err.render().to_string());
            if err.use_stderr() {
                ai_infra_build::ui::Sink::err(&StdSink, &text);
            } else {
                ai_infra_build::ui::Sink::out(&StdSink, &text);
            }
            return std::process::ExitCode::from(err.exit_code().clamp(0, 255) as u8);
        }
        Err(err) => err.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            ai_infra_build::ui::Sink::err(
                &StdSink,
                &format!("error: cannot start the async runtime: {err}"),
            );
            return std::process::ExitCode::from(ai_infra_build::Exit::Environment.code());
        }
    };
    let exit = runtime.block_on(ai_infra_build::run(cli, Arc::new(StdSink)));
    std::process::ExitCode::from(exit.code())
}
