//! A small client for tor's control protocol (control-spec.txt), enough for tests:
//! cookie authentication, commands with single-line and data replies, asynchronous events.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// How long one command may take before we call tor unresponsive.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// One line of a control-port reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine {
    /// The text after the status code and separator (for data lines: up to the data).
    pub text: String,
    /// For `NNN+` lines: the data block that followed, dot-unstuffed, lines joined by `\n`
    /// (with a final `\n`).
    pub data: Option<String>,
}

/// A complete control-port reply (or asynchronous event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code: 250 for success, 650 for asynchronous events, 5xx for errors.
    pub code: u16,
    /// Every line of the reply.
    pub lines: Vec<ReplyLine>,
}

impl Reply {
    /// Whether the command succeeded (code 250).
    pub fn is_ok(&self) -> bool {
        self.code == 250
    }

    /// The reply as tor sent it, for error messages.
    pub fn summary(&self) -> String {
        let texts: Vec<&str> = self.lines.iter().map(|l| l.text.as_str()).collect();
        format!("{} {}", self.code, texts.join(" | "))
    }
}

/// An authenticated control connection to one tor process.
pub struct ControlConnection {
    /// Buffered reader of the socket.
    reader: BufReader<OwnedReadHalf>,
    /// Writing half of the socket.
    writer: OwnedWriteHalf,
    /// Asynchronous events received while waiting for a command's reply.
    events: VecDeque<Reply>,
}

impl ControlConnection {
    /// Connects to `127.0.0.1:port` and authenticates with the cookie in `cookie_file`
    /// (`<DataDirectory>/control_auth_cookie`; tor needs `CookieAuthentication 1`).
    pub async fn connect(port: u16, cookie_file: &Path) -> Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect to control port {port}"))?;
        let cookie = std::fs::read(cookie_file)
            .with_context(|| format!("read control cookie {}", cookie_file.display()))?;
        let (read, writer) = stream.into_split();
        let mut conn = ControlConnection {
            reader: BufReader::new(read),
            writer,
            events: VecDeque::new(),
        };
        let reply = conn
            .command(&format!("AUTHENTICATE {}", hex::encode(cookie)))
            .await?;
        if !reply.is_ok() {
            bail!(
                "control port {port} refused our cookie: {}",
                reply.summary()
            );
        }
        Ok(conn)
    }

    /// Like [`connect`](Self::connect), retrying until `deadline` while tor is starting and
    /// has not opened its control port or written its cookie yet.
    pub async fn connect_when_ready(
        port: u16,
        cookie_file: &Path,
        deadline: Instant,
    ) -> Result<Self> {
        loop {
            match Self::connect(port, cookie_file).await {
                Ok(conn) => return Ok(conn),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Sends one command line and returns its reply (which may be an error reply: check
    /// [`Reply::is_ok`]). Events that arrive meanwhile are kept for [`next_event`](Self::next_event).
    pub async fn command(&mut self, line: &str) -> Result<Reply> {
        if line.contains(['\r', '\n']) {
            bail!("control command must be one line: {line:?}");
        }
        timeout(COMMAND_TIMEOUT, async {
            self.writer
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .context("write to control port")?;
            loop {
                let reply = self.read_reply().await?;
                if reply.code / 100 == 6 {
                    self.events.push_back(reply);
                } else {
                    return Ok(reply);
                }
            }
        })
        .await
        .map_err(|_| {
            anyhow!(
                "tor did not answer {:?} within {COMMAND_TIMEOUT:?}",
                verb(line)
            )
        })?
    }

    /// Sends a command and fails unless tor answers 250.
    pub async fn command_ok(&mut self, line: &str) -> Result<Reply> {
        let reply = self.command(line).await?;
        if !reply.is_ok() {
            bail!("tor refused {:?}: {}", verb(line), reply.summary());
        }
        Ok(reply)
    }

    /// `GETINFO key`: the value, whether tor sent it on one line or as a data block.
    pub async fn getinfo(&mut self, key: &str) -> Result<String> {
        let reply = self.command_ok(&format!("GETINFO {key}")).await?;
        let prefix = format!("{key}=");
        for line in reply.lines {
            if let Some(value) = line.text.strip_prefix(&prefix) {
                return Ok(line.data.unwrap_or_else(|| value.to_owned()));
            }
        }
        bail!("GETINFO {key}: no value in the reply")
    }

    /// The next asynchronous event (subscribe first with `SETEVENTS`).
    pub async fn next_event(&mut self) -> Result<Reply> {
        if let Some(event) = self.events.pop_front() {
            return Ok(event);
        }
        loop {
            let reply = self.read_reply().await?;
            if reply.code / 100 == 6 {
                return Ok(reply);
            }
            // A reply with no command outstanding cannot happen in this client's use; skip it
            // rather than misattribute it later.
        }
    }

    /// Reads one reply: `NNN-` and `NNN+` lines until the `NNN ` line that ends it.
    async fn read_reply(&mut self) -> Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await?;
            if line.len() < 4 || !line.is_char_boundary(3) {
                bail!("malformed control reply line {line:?}");
            }
            let code: u16 = line[..3]
                .parse()
                .with_context(|| format!("malformed control reply line {line:?}"))?;
            let text = line[4..].to_owned();
            match line.as_bytes()[3] {
                b' ' => {
                    lines.push(ReplyLine { text, data: None });
                    return Ok(Reply { code, lines });
                }
                b'-' => lines.push(ReplyLine { text, data: None }),
                b'+' => {
                    let data = self.read_data().await?;
                    lines.push(ReplyLine {
                        text,
                        data: Some(data),
                    });
                }
                _ => bail!("malformed control reply line {line:?}"),
            }
        }
    }

    /// Reads a data block up to the lone `.` line, undoing dot-stuffing.
    async fn read_data(&mut self) -> Result<String> {
        let mut data = String::new();
        loop {
            let line = self.read_line().await?;
            if line == "." {
                return Ok(data);
            }
            data.push_str(line.strip_prefix('.').unwrap_or(&line));
            data.push('\n');
        }
    }

    /// Reads one CRLF-terminated line, without the terminator.
    async fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .await
            .context("read from control port")?;
        if n == 0 {
            bail!("tor closed the control connection");
        }
        while line.ends_with(['\r', '\n']) {
            line.pop();
        }
        Ok(line)
    }
}

/// The first word of a command, so that errors never echo secrets (the cookie).
fn verb(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or_default()
}
