//! The `onionbalance` command: parses arguments and hands over to [`cli`].

#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
