//! The example systemd unit: it has what the README promises, and `systemd-analyze verify`
//! accepts it.
//!
//! Needs `systemd-analyze` (Debian package `systemd`; `scripts/test-all` installs it when it
//! is missing). Without it the verification test fails, it never skips.

#![forbid(unsafe_code)]

use std::process::Command;

const UNIT: &str = include_str!("../examples/onionbalance.service");

#[test]
fn unit_has_readiness_reload_user_state_and_sandboxing() {
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=onionbalance",
        "StateDirectory=onionbalance",
        "RuntimeDirectory=onionbalance",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "ExecStart=/usr/local/bin/onionbalance run -c /etc/onionbalance/config.yaml",
        // A usage or config error (exit 64 or 78) is not restarted every RestartSec forever.
        "Restart=on-failure",
        "RestartPreventExitStatus=64 78",
    ] {
        assert!(
            UNIT.lines().any(|l| l.trim() == line),
            "unit file lacks {line:?}"
        );
    }
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    // A missing tool is a failure, not a pass: the unit would go unverified.
    let out = match Command::new("systemd-analyze").arg("--version").output() {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run systemd-analyze ({e}), so the example unit cannot be verified: \
             install it (Debian package `systemd`: `apt-get install systemd`; \
             scripts/test-all installs it when it is missing)"
        ),
    };
    assert!(
        out.status.success(),
        "systemd-analyze --version failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "verifying with {}",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("systemd-analyze")
    );
    // Verify a copy whose ExecStart points at the binary just built (verify checks it exists).
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = UNIT.replace(
        "/usr/local/bin/onionbalance",
        env!("CARGO_BIN_EXE_onionbalance"),
    );
    let path = dir.path().join("onionbalance.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    // systemd accepts a unit with settings it does not know and only says so ("Unknown key
    // 'X' in section [Service], ignoring.", "Unknown section 'Y'. Ignoring.", older versions
    // "Unknown lvalue"): any setting it ignores is a setting the unit does not have.
    let ignored: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("Unknown") || l.to_ascii_lowercase().contains("ignoring"))
        .collect();
    assert!(
        ignored.is_empty(),
        "systemd-analyze verify ignores parts of the unit:\n{}",
        ignored.join("\n")
    );
}
