//! The soak test, a binary of its own: `scripts/soak.sh` against the binary under
//! test — one daemon with a mount and a TCP listener, writers, live snapshot readers
//! (mount and HTTP), stored snapshots, restores and partial snapshots at once, then
//! every acknowledged update present, no torn archive, temp_path empty, RssAnon
//! bounded and a clean SIGTERM (scripts/soak.py says what each part checks). Needs
//! root and /dev/fuse like the mount tests, and python3.
//!
//! In the suite it runs for 40 seconds (`SOAK_SECS` sets another length); the long
//! runs are `scripts/soak.sh SECONDS` (docs/TESTING.md, "Soak").

use std::process::Command;

/// How long the suite's soak runs unless `SOAK_SECS` says otherwise: long enough for
/// every part of the workload to run several times, short enough for CI.
const DEFAULT_SECS: u64 = 40;

#[test]
fn everything_at_once() {
    let secs = match std::env::var("SOAK_SECS") {
        Ok(text) => text
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("SOAK_SECS={text:?} is not a number of seconds")),
        Err(_) => DEFAULT_SECS,
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/soak.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg(secs.to_string())
        .env("SNAPFS_BIN", env!("CARGO_BIN_EXE_snapfs"))
        // The full workload: views of different scopes overlap.
        .env_remove("SOAK_SERIALIZE_SCOPES")
        .output()
        .expect("bash runs scripts/soak.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{text}");
    assert!(
        output.status.success(),
        "scripts/soak.sh {secs} failed ({}):\n{text}",
        output.status
    );
    assert!(
        text.contains(&format!("SOAK PASSED ({secs} s)")),
        "scripts/soak.sh {secs} exited 0 without saying it passed:\n{text}"
    );
}
