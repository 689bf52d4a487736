//! A SOCKS5 client (RFC 1928, username/password auth of RFC 1929) for reaching onion
//! services through a C tor client.
//!
//! Tor isolates streams by SOCKS credentials (`IsolateSOCKSAuth`, on by default), so a fresh
//! random username per request gives each request its own circuits: a retry after a stalled
//! rendezvous does not reuse the circuit that stalled.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// SOCKS protocol version 5.
const VERSION: u8 = 5;
/// Method: username/password (RFC 1929).
const METHOD_USERPASS: u8 = 2;
/// Command: CONNECT.
const CMD_CONNECT: u8 = 1;
/// Address type: domain name.
const ATYP_DOMAIN: u8 = 3;

/// Opens a stream to `host:port` through the SOCKS5 proxy at `127.0.0.1:socks_port`, with
/// `isolation` as the SOCKS username (and password), so that tor uses circuits of its own for it.
pub async fn connect(socks_port: u16, host: &str, port: u16, isolation: &str) -> Result<TcpStream> {
    let proxy = SocketAddr::from((Ipv4Addr::LOCALHOST, socks_port));
    let mut s = TcpStream::connect(proxy)
        .await
        .with_context(|| format!("connect to SOCKS port {socks_port}"))?;
    let host_len = u8::try_from(host.len()).context("host name too long for SOCKS")?;
    let cred_len = u8::try_from(isolation.len()).context("isolation token too long for SOCKS")?;

    s.write_all(&[VERSION, 1, METHOD_USERPASS]).await?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await.context("SOCKS greeting")?;
    if choice != [VERSION, METHOD_USERPASS] {
        bail!("SOCKS proxy refused username/password auth (answered {choice:?})");
    }

    let mut auth = vec![1, cred_len];
    auth.extend_from_slice(isolation.as_bytes());
    auth.push(cred_len);
    auth.extend_from_slice(isolation.as_bytes());
    s.write_all(&auth).await?;
    let mut auth_reply = [0u8; 2];
    s.read_exact(&mut auth_reply).await.context("SOCKS auth")?;
    if auth_reply[1] != 0 {
        bail!(
            "SOCKS proxy rejected credentials (status {})",
            auth_reply[1]
        );
    }

    let mut req = vec![VERSION, CMD_CONNECT, 0, ATYP_DOMAIN, host_len];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)
        .await
        .context("SOCKS connect reply")?;
    if head[1] != 0 {
        bail!(
            "SOCKS CONNECT to {host}:{port} failed: {}",
            reply_meaning(head[1])
        );
    }
    // Skip the bound address, whose length depends on its type.
    let skip = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => usize::from(s.read_u8().await?) + 2,
        other => bail!("SOCKS reply with unknown address type {other}"),
    };
    let mut bound = vec![0u8; skip];
    s.read_exact(&mut bound)
        .await
        .context("SOCKS bound address")?;
    Ok(s)
}

/// What a SOCKS5 reply code means, including tor's extended onion-service codes
/// (sent when the SocksPort has the `ExtendedErrors` flag; see tor's manual).
pub fn reply_meaning(code: u8) -> String {
    let text = match code {
        0x01 => "general failure",
        0x02 => "not allowed by ruleset",
        0x03 => "network unreachable",
        0x04 => "host unreachable",
        0x05 => "connection refused",
        0x06 => "TTL expired (tor: circuit or stream timed out)",
        0x07 => "command not supported",
        0x08 => "address type not supported",
        0xF0 => "onion service descriptor not found",
        0xF1 => "onion service descriptor invalid",
        0xF2 => "onion service introduction failed",
        0xF3 => "onion service rendezvous failed",
        0xF4 => "onion service needs client authorization",
        0xF5 => "onion service client authorization wrong",
        0xF6 => "invalid onion service address",
        0xF7 => "onion service introduction timed out",
        _ => "unknown error",
    };
    format!("{text} (0x{code:02X})")
}
