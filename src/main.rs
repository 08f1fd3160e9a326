//! The `ai-infra-build` binary: parse arguments, build the runtime once, hand over to the
//! library, and turn the outcome into a documented exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = ai_infra_build::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::from(ai_infra_build::Exit::Environment.code());
        }
    };
    let exit = runtime.block_on(ai_infra_build::run(cli));
    std::process::ExitCode::from(exit.code())
}
