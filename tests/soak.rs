//! The soak test: `scripts/soak.sh 120` against the binary under test — one daemon
//! with a mount and a TCP listener, two minutes of writers, live snapshot readers
//! (mount and HTTP), stored snapshots, restores and partial snapshots at once, then
//! every acknowledged update present, no torn archive, temp_path empty, RssAnon
//! bounded and a clean SIGTERM (scripts/soak.py says what each part checks). Needs
//! root and /dev/fuse like the mount tests, and python3. Longer runs:
//! `scripts/soak.sh SECONDS` (docs/TESTING.md, "Soak").

use std::process::Command;

#[test]
fn two_minutes_of_everything_at_once() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/soak.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg("120")
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
        "scripts/soak.sh 120 failed ({}):\n{text}",
        output.status
    );
}
