//! The `p11jwt` binary: parse arguments, call the library, print, exit with a documented code.

#![forbid(unsafe_code)]

mod cli;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};

/// Logs go to stderr, prefixed like every other message, and only at the chosen verbosity.
struct StderrLogger {
    level: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level && metadata.target().starts_with("p11jwt")
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug | log::Level::Trace => "debug",
        };
        let _ = writeln!(
            std::io::stderr().lock(),
            "p11jwt: {level}: {}",
            record.args()
        );
    }

    fn flush(&self) {}
}

fn main() -> ExitCode {
    // The matches are kept: they say whether each value came from a flag, the environment or a
    // default, which decides whether a profile may fill it.
    let matches = cli::Cli::command().get_matches();
    let cli = match cli::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let level = match cli::verbosity(&cli) {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    let logger = Box::leak(Box::new(StderrLogger { level }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }

    match cli::run(cli, &matches) {
        Ok(()) => ExitCode::from(p11jwt::exit::OK),
        Err(err) => {
            let text = err.to_string();
            let mut lines = text.lines();
            let mut stderr = std::io::stderr().lock();
            if let Some(first) = lines.next() {
                let _ = writeln!(stderr, "p11jwt: error: {first}");
            }
            for line in lines {
                let _ = writeln!(stderr, "p11jwt: {line}");
            }
            ExitCode::from(err.exit_code())
        }
    }
}
