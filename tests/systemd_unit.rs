//! The example systemd unit: it has what the README promises, and `systemd-analyze verify`
//! accepts it where systemd is installed.

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
    ] {
        assert!(
            UNIT.lines().any(|l| l.trim() == line),
            "unit file lacks {line:?}"
        );
    }
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed here: unit not verified (see the other test)");
        return;
    };
    assert!(out.status.success());
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
    assert!(!said.contains("Unknown key"), "{said}");
}
