//! `onionbalance-config`: the config wizard under its upstream name (same as `onionbalance
//! config`), in the library ([`onionbalance::config_main`]).

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    onionbalance::config_main()
}
