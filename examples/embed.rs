//! An Arti application that runs an onion service of its own and balances another one, on one
//! shared `TorClient`.
//!
//! The application owns its Tor client (here from an Arti TOML, e.g. the one the `testnet`
//! example writes; the public network without one). It launches its own onion service (a
//! one-line HTTP greeting on port 80) and hands the same client to onionbalance, which
//! balances the frontend of `ONIONBALANCE_YAML`. It prints onionbalance's events as they come
//! and exits cleanly on Ctrl-C (or SIGTERM): the balancer stops, then the service.
//!
//! ```text
//! cargo run --example embed -- [--arti-config ARTI_TOML] ONIONBALANCE_YAML
//! ```

#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use arti_client::{TorClient, TorClientConfig};
use futures::{AsyncReadExt as _, AsyncWriteExt as _, Stream, StreamExt as _};
use onionbalance::arti_toml::load_arti_config;
use onionbalance::{Balancer, Config, Event};
use tokio::signal::unix::{signal, SignalKind};
use tor_cell::relaycell::msg::Connected;
use tor_hsservice::config::OnionServiceConfigBuilder;
use tor_hsservice::{HsNickname, RendRequest, StreamRequest};

/// The page the application's own onion service answers with.
const GREETING: &str = "hello from the embedding application's own onion service\n";

#[tokio::main]
async fn main() -> Result<()> {
    let (arti_toml, config_path) = parse_args()?;
    // The application's logs (Arti's and onionbalance's go through `tracing`), on stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    // The application's own Tor client: one for everything below.
    let arti_config = match &arti_toml {
        Some(path) => load_arti_config(path)?,
        None => TorClientConfig::default(),
    };
    let client = TorClient::create_bootstrapped(arti_config)
        .await
        .context("bootstrapping Tor")?;

    // Its own onion service, on that client.
    let nickname = HsNickname::new("embed-example".into()).context("nickname")?;
    let service_config = OnionServiceConfigBuilder::default()
        .nickname(nickname)
        .build()
        .context("onion service config")?;
    let (service, rend_requests) = client
        .launch_onion_service(service_config)
        .context("launching the application's onion service")?
        .context("the onion service is disabled in the Arti configuration")?;
    let own_address = service
        .onion_address()
        .context("the onion service has no address")?;
    println!(
        "own onion service: {}",
        safelog::DisplayRedacted::display_unredacted(&own_address)
    );
    let serving = tokio::spawn(serve_greeting(rend_requests));
    // Balancing, on the same client, from the same YAML the daemon reads.
    let config = Config::load(&config_path)?;
    let handle = Balancer::new(config).launch(&client)?;
    let mut events = handle.events();

    let mut sigterm = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            event = events.next() => match event {
                Some(event) => println!("{}", describe(&event)),
                None => break, // the balancer stopped
            },
        }
    }
    println!("stopping");
    handle.shutdown().await;
    serving.abort();
    drop(service);
    println!("stopped");
    Ok(())
}

/// `[--arti-config FILE] CONFIG_YAML`.
fn parse_args() -> Result<(Option<PathBuf>, PathBuf)> {
    let mut arti_toml = None;
    let mut config = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--arti-config" {
            arti_toml = Some(PathBuf::from(
                args.next().context("--arti-config needs a file")?,
            ));
        } else if config.is_none() {
            config = Some(PathBuf::from(arg));
        } else {
            anyhow::bail!("usage: embed [--arti-config ARTI_TOML] ONIONBALANCE_YAML");
        }
    }
    let config = config.context("usage: embed [--arti-config ARTI_TOML] ONIONBALANCE_YAML")?;
    Ok((arti_toml, config))
}

/// Answers every stream to port 80 of the application's own service with [`GREETING`];
/// others are refused.
async fn serve_greeting(rend_requests: impl Stream<Item = RendRequest> + Send + 'static) {
    let streams = tor_hsservice::handle_rend_requests(rend_requests);
    futures::pin_mut!(streams);
    while let Some(request) = streams.next().await {
        tokio::spawn(answer(request));
    }
}

/// Answers one stream request.
async fn answer(request: StreamRequest) {
    let port_80 = matches!(
        request.request(),
        tor_proto::stream::IncomingStreamRequest::Begin(begin) if begin.port() == 80
    );
    if !port_80 {
        let _ = request.shutdown_circuit();
        return;
    }
    let Ok(mut stream) = request.accept(Connected::new_empty()).await else {
        return;
    };
    // Read the request head (up to its blank line, 8 KiB at most): the greeting is the same
    // for every request, but answering before the request has arrived would make the client
    // see its connection reset.
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let response = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{GREETING}",
        GREETING.len()
    );
    // A failed write only means the client went away.
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.flush().await;
    let _ = stream.close().await;
}

/// One line for an event.
fn describe(event: &Event) -> String {
    match event {
        Event::Published {
            service,
            time_period,
            revision,
        } => format!("{service}: published revision {revision} for time period {time_period}"),
        Event::BackendJoined { service, name, .. } => format!("{service}: backend {name} joined"),
        Event::BackendLeft { service, name, .. } => format!("{service}: backend {name} left"),
        Event::UploadRejected {
            service,
            hsdir,
            in_a_row,
            ..
        } => format!("{service}: HSDir {hsdir} refused our descriptor ({in_a_row} in a row)"),
        Event::Missed { count } => format!("({count} events missed)"),
        other => format!("{other:?}"),
    }
}
