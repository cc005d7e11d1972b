//! The built `recflow` binary and free local ports, for tests that run it as
//! separate processes (a timely cluster, `--help` of every subcommand).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Path of the `recflow` binary of this build profile, built on first use
/// (this crate only dev-depends on the library, so cargo does not build the
/// binary for its tests).
pub fn recflow_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // The test executable lives in target/<profile>/deps/.
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>").to_path_buf();
        // Cargo names the dev profile's directory `debug`; every other profile's is its name.
        let profile = profile_dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "recflow", "--bin", "recflow"]);
        // The variables cargo sets for this test would reach the build scripts and
        // rustc and make every dependency look changed: a full rebuild.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_BIN_")
                || ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH"]
                    .contains(&k.as_ref())
                || ["CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR", "OUT_DIR", "RUST_BACKTRACE"].contains(&k.as_ref())
            {
                cmd.env_remove(k.as_ref());
            }
        }
        if let Some(p) = profile.filter(|p| p != "debug") {
            cmd.args(["--profile", &p]);
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building the recflow binary failed");
        let bin = profile_dir.join("recflow");
        assert!(bin.exists(), "{} missing after cargo build", bin.display());
        bin
    })
    .clone()
}

/// A TCP port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("bound address").port()
}

/// `GET path` on `addr` over plain HTTP/1.0: (status code, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}
