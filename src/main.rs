//! The `twincert` binary: installs the TLS crypto provider, parses the
//! command line and hands over to `cli::run`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Both aws-lc-rs and ring can end up compiled in; pick one explicitly so
    // rustls never has to guess (it panics if it cannot).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = twincert::cli::Cli::parse();
    match twincert::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<twincert::cli::ApiFailure>().is_none() {
                eprintln!("twincert: {e:#}");
            }
            std::process::ExitCode::from(twincert::cli::exit_code(&e))
        }
    }
}
