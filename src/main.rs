//! The `onionbalance` command: the daemon and its subcommands, all in the library
//! ([`onionbalance::main`]).

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    onionbalance::main()
}
