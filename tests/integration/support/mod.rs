//! Shared test harness: a real `snapfs serve` process on a temporary data dir,
//! driven over its real socket. The process is killed on drop, so a failing test
//! never leaves a daemon behind.
#![allow(dead_code)]

pub mod moto;
pub mod qdrant_cluster;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};
use snapfs::client::Client;

pub const BIN: &str = env!("CARGO_BIN_EXE_snapfs");

pub struct Daemon {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    log: PathBuf,
    /// The `--mount` directory, detached on drop if the daemon left it mounted.
    mount: Option<PathBuf>,
    _temp: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Start on a fresh temporary data dir.
    pub fn start(extra: &[&str]) -> Daemon {
        let temp = tempfile::tempdir().unwrap();
        let mut daemon = Daemon::start_in(temp.path(), extra, &[]);
        daemon._temp = Some(temp);
        daemon
    }

    /// Start on a fresh temporary data dir with `env` set for the daemon.
    pub fn start_with_env(env: &[(&str, &str)]) -> Daemon {
        let temp = tempfile::tempdir().unwrap();
        let mut daemon = Daemon::start_in(temp.path(), &[], env);
        daemon._temp = Some(temp);
        daemon
    }

    /// Start on `data_dir` (kept by the caller, e.g. across a restart).
    pub fn start_in(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut daemon = Daemon::spawn(data_dir, extra, env);
        daemon.wait_ready();
        daemon
    }

    pub fn spawn(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn_with_soft_nofile(data_dir, extra, env, None)
    }

    /// Start on a fresh temporary data dir with the soft open-files limit lowered to
    /// `soft` (as a shell's `ulimit -Sn` would leave it).
    pub fn start_with_soft_nofile(extra: &[&str], env: &[(&str, &str)], soft: u64) -> Daemon {
        let temp = tempfile::tempdir().unwrap();
        let mut daemon = Daemon::spawn_with_soft_nofile(temp.path(), extra, env, Some(soft));
        daemon.wait_ready();
        daemon._temp = Some(temp);
        daemon
    }

    fn spawn_with_soft_nofile(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        soft_nofile: Option<u64>,
    ) -> Daemon {
        std::fs::create_dir_all(data_dir).unwrap();
        let socket = data_dir.join("snapfs.sock");
        let log = data_dir.join(format!("daemon-{}.log", std::process::id()));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("SNAPFS_LOG", "info,snapfs=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in env {
            command.env(k, v);
        }
        if let Some(soft) = soft_nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let mut limit = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    limit.rlim_cur = soft.min(limit.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().expect("spawn snapfs serve");
        let mount = extra
            .iter()
            .position(|a| *a == "--mount")
            .and_then(|i| extra.get(i + 1))
            .map(PathBuf::from);
        Daemon {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            socket,
            log,
            mount,
            _temp: None,
        }
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            f.read_to_string(&mut text).unwrap();
        }
        text
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "snapfs serve exited early with {status}; log:\n{}",
                    self.log()
                );
            }
            if answers_http(&self.socket) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not become ready; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Hidden entries among the collections and restores' staging directories in
    /// temp_path: none may outlive a restore.
    pub fn staging_leftovers(&self) -> Vec<String> {
        let hidden = |dir: &str, prefix: &str| -> Vec<String> {
            std::fs::read_dir(self.data_dir.join(dir))
                .map(|d| {
                    d.map(|e| format!("{dir}/{}", e.unwrap().file_name().to_string_lossy()))
                        .filter(|n| n.rsplit('/').next().unwrap().starts_with(prefix))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut all = hidden("storage/collections", ".");
        all.extend(hidden("tmp", ".restoring-"));
        all
    }

    /// Assert that no restore's staging is left (`staging_leftovers`).
    pub fn assert_no_staging_leftovers(&self) {
        let left = self.staging_leftovers();
        assert!(left.is_empty(), "staging left behind: {left:?}");
    }

    /// Wait (10 s at most) until no restore's staging is left: an abandoned one is
    /// removed once its unpacker has stopped, on a thread of its own.
    pub fn wait_no_staging_leftovers(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.staging_leftovers().is_empty() {
            assert!(
                Instant::now() < deadline,
                "staging left behind: {:?}",
                self.staging_leftovers()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        wait_with_timeout(&mut child, Duration::from_secs(60))
    }

    /// SIGKILL: a crash at an arbitrary moment.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        wait_with_timeout(&mut child, Duration::from_secs(60))
    }
}

/// Plain blocking probe (tests may run inside an async runtime): does `GET /` answer 200?
fn answers_http(socket: &Path) -> bool {
    use std::io::Write;
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    if stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("daemon did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mount) = &self.mount {
            detach_if_mounted(mount);
        }
    }
}

// ---- request helpers (status + body, envelope kept, so tests see errors too) ----

pub async fn call(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, value) = client
        .raw(method, path, body.as_ref())
        .await
        .expect("request reaches the daemon");
    (status.as_u16(), value)
}

/// A collection seeded with `points` points over `shards` shards, settled (its
/// background work done).
pub async fn settled_collection(client: &Client, name: &str, shards: u32, points: u64) {
    seeded_collection(client, name, shards, points).await;
    wait_settled(client, name).await;
}

/// The SHA-256 of `bytes`, as 64 lowercase hex characters (a checksum sidecar's text).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    snapfs::snapshot::digest::hex(&sha2::Sha256::digest(bytes))
}

/// The environment that has a daemon keep stored snapshots in a restic repository
/// at `repo`, its password in `password_file`.
pub fn repository_env(repo: &Path, password_file: &Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE",
            "repository".to_string(),
        ),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__LOCATION",
            repo.display().to_string(),
        ),
        (
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__PASSWORD_FILE",
            password_file.display().to_string(),
        ),
    ]
}

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Poll `check` for up to 5 s (listings follow changes within their 1 s TTL).
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `curl` a multipart upload of `file` (field `snapshot`) to the daemon's socket.
pub fn upload(daemon: &Daemon, path: &str, file: &Path) -> (u16, Value) {
    let out = std::process::Command::new("curl")
        .arg("-s")
        .arg("--unix-socket")
        .arg(&daemon.socket)
        .arg("-w")
        .arg("\n%{http_code}")
        .args(["-m", "300"])
        .arg("-F")
        .arg(format!("snapshot=@{}", file.display()))
        .arg(format!("http://localhost{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// `PUT /collections/{collection}/snapshots/recover` with `body`.
pub async fn recover_collection(client: &Client, collection: &str, body: Value) -> (u16, Value) {
    call(
        client,
        Method::PUT,
        &format!("/collections/{collection}/snapshots/recover"),
        Some(body),
    )
    .await
}

pub async fn create_collection(client: &Client, name: &str, body: Value) {
    let (status, value) = call(
        client,
        Method::PUT,
        &format!("/collections/{name}"),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "create {name}: {value}");
}

/// A collection body: one unnamed dense vector of `size` dimensions and `distance`.
pub fn vectors(size: usize, distance: &str) -> Value {
    json!({"vectors": {"size": size, "distance": distance}})
}

/// [`vectors`] in `shards` shards.
pub fn sharded_vectors(size: usize, distance: &str, shards: u32) -> Value {
    json!({"vectors": {"size": size, "distance": distance}, "shard_number": shards})
}

/// Create `name` (8-dim Cosine vectors, `shards` shards) holding points `0..points`.
pub async fn seeded_collection(client: &Client, name: &str, shards: u32, points: u64) {
    create_collection(client, name, sharded_vectors(8, "Cosine", shards)).await;
    upsert_ids(client, name, 0..points, 8).await;
}

/// The value of the sample whose line starts with `series` (name and labels as
/// printed), if there is one.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// GET `path` whole (a streamed body: snapshots).
pub async fn fetch(client: &Client, path: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    client
        .download(
            path,
            |chunk| {
                bytes.extend_from_slice(chunk);
                Ok(())
            },
            |_| {},
        )
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    bytes
}

pub fn point(id: u64, dim: usize) -> Value {
    let vector: Vec<f32> = (0..dim)
        .map(|i| ((id as f32 + 1.0) * (i as f32 + 1.0)).sin())
        .collect();
    json!({"id": id, "vector": vector, "payload": {"n": id, "tag": format!("t{}", id % 7)}})
}

pub async fn upsert(client: &Client, name: &str, points: Vec<Value>, wait: bool) {
    let (status, value) = call(
        client,
        Method::PUT,
        &format!("/collections/{name}/points?wait={wait}"),
        Some(json!({"points": points})),
    )
    .await;
    assert_eq!(status, 200, "upsert into {name}: {value}");
}

/// Upsert the points `ids` (each `point(id, dim)`) into `name`, waiting for them.
pub async fn upsert_ids(client: &Client, name: &str, ids: std::ops::Range<u64>, dim: usize) {
    upsert(client, name, ids.map(|id| point(id, dim)).collect(), true).await;
}

/// `POST /collections/{name}/points/delete?wait=true` with `selector` (`points` or
/// `filter`).
pub async fn delete_points(client: &Client, name: &str, selector: Value) -> (u16, Value) {
    call(
        client,
        Method::POST,
        &format!("/collections/{name}/points/delete?wait=true"),
        Some(selector),
    )
    .await
}

/// `POST path` (a snapshots endpoint), which must answer 200: the created
/// snapshot's description.
pub async fn create_stored(client: &Client, path: &str) -> Value {
    let (status, body) = call(client, Method::POST, path, None).await;
    assert_eq!(status, 200, "POST {path}: {body}");
    body["result"].clone()
}

/// [`create_stored`]: the new snapshot's name.
pub async fn stored_name(client: &Client, path: &str) -> String {
    create_stored(client, path).await["name"]
        .as_str()
        .expect("a created snapshot has a name")
        .to_string()
}

/// GET `path` with a `Range` header through a raw request: (status, head, body).
pub async fn fetch_range(client: &Client, path: &str, range: &str) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(client.socket())
        .await
        .unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nrange: {range}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, response[split + 4..].to_vec())
}

pub async fn count(client: &Client, name: &str) -> u64 {
    let (status, value) = call(
        client,
        Method::POST,
        &format!("/collections/{name}/points/count"),
        Some(json!({"exact": true})),
    )
    .await;
    assert_eq!(status, 200, "count {name}: {value}");
    value["result"]["count"].as_u64().unwrap()
}

/// Every point's id and payload, through scroll pages.
pub async fn all_points(client: &Client, name: &str) -> Vec<Value> {
    let mut points = Vec::new();
    let mut offset = Value::Null;
    loop {
        let body =
            json!({"limit": 250, "offset": offset, "with_payload": true, "with_vector": true});
        let (status, value) = call(
            client,
            Method::POST,
            &format!("/collections/{name}/points/scroll"),
            Some(body),
        )
        .await;
        assert_eq!(status, 200, "scroll {name}: {value}");
        points.extend(
            value["result"]["points"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
        offset = value["result"]["next_page_offset"].clone();
        if offset.is_null() {
            return points;
        }
    }
}

/// Wait until background flush and optimization of `name` are done (status green,
/// three checks in a row), so that its files hold still.
pub async fn wait_settled(client: &Client, name: &str) {
    let mut green = 0;
    for _ in 0..600 {
        let (_, info) = call(client, Method::GET, &format!("/collections/{name}"), None).await;
        green = if info["result"]["status"] == "green" {
            green + 1
        } else {
            0
        };
        if green == 3 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("collection {name} did not settle");
}

// ---- a daemon with a real FUSE mount ----

/// A daemon serving a mount in its temp dir. On drop it is stopped with SIGTERM
/// (which unmounts), and a mount still present is lazily detached, so a failing
/// test never leaves a mount behind.
pub struct MountedDaemon {
    pub daemon: Daemon,
    pub mnt: PathBuf,
}

impl MountedDaemon {
    pub fn start(extra: &[&str]) -> MountedDaemon {
        Self::start_full(extra, &[])
    }

    pub fn start_with_env(env: &[(&str, &str)]) -> MountedDaemon {
        Self::start_full(&[], env)
    }

    /// As `start`, in a temp dir other users may pass through (mode 0755), so
    /// the mount and the socket are theirs to reach as the daemon allows.
    pub fn start_reachable(extra: &[&str]) -> MountedDaemon {
        Self::start_in_temp(extra, &[], 0o755)
    }

    fn start_full(extra: &[&str], env: &[(&str, &str)]) -> MountedDaemon {
        Self::start_in_temp(extra, env, 0o700)
    }

    fn start_in_temp(extra: &[&str], env: &[(&str, &str)], mode: u32) -> MountedDaemon {
        use std::os::unix::fs::PermissionsExt;
        let temp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let mnt = temp.path().join("mnt");
        let mut args = vec!["--mount", mnt.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut daemon = Daemon::start_in(&temp.path().join("data"), &args, env);
        daemon._temp = Some(temp);
        // The socket answers a moment before the mount is up ("snapfs ready"
        // follows both).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !daemon.log().contains("snapfs ready") {
            assert!(
                Instant::now() < deadline,
                "not ready; log:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(is_mounted(&mnt), "not mounted; log:\n{}", daemon.log());
        MountedDaemon { daemon, mnt }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.mnt.join(relative)
    }

    pub fn client(&self) -> Client {
        self.daemon.client()
    }
}

impl Drop for MountedDaemon {
    fn drop(&mut self) {
        if self.daemon.child.is_some() {
            self.daemon.stop();
        }
        detach_if_mounted(&self.mnt);
    }
}

pub fn is_mounted(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let wanted = path.to_string_lossy();
    table
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_ref()))
}

pub fn detach_if_mounted(path: &Path) {
    if is_mounted(path) {
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: umount2 with a valid NUL-terminated path.
        unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Run a command; panic with its output unless it succeeds. Returns stdout.
pub fn run_ok(command: &mut Command) -> String {
    let output = command.output().expect("command runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Put `file` into the daemon's snapshots directory as `name`; returns its file://
/// location.
pub fn stage(daemon: &Daemon, file: &Path, name: &str) -> String {
    let dir = daemon.data_dir.join("snapshots");
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join(name);
    std::fs::copy(file, &target).unwrap();
    format!("file://{}", target.display())
}

// ---- Qdrant's own snapshots (tests/fixtures/qdrant-1.18.3) ----

/// A file of the Qdrant 1.18.3 fixtures.
pub fn qdrant_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/qdrant-1.18.3")
        .join(name)
}

/// Points keyed by id, with what a restore must keep: payload and vectors.
pub fn by_id(points: &[Value]) -> std::collections::BTreeMap<String, Value> {
    points
        .iter()
        .map(|p| {
            (
                p["id"].to_string(),
                json!({"payload": p["payload"], "vector": p["vector"]}),
            )
        })
        .collect()
}

/// The points Qdrant returned for `collection` (expected.json).
pub fn qdrant_expected(collection: &str) -> std::collections::BTreeMap<String, Value> {
    let expected: Value =
        serde_json::from_slice(&std::fs::read(qdrant_fixture("expected.json")).unwrap()).unwrap();
    by_id(expected["collections"][collection].as_array().unwrap())
}

// ---- peers: daemons with a TCP listener ----

/// The API key every test peer uses.
pub const PEER_KEY: &str = "peer-key";

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon that also serves HTTP on a loopback port (key [`PEER_KEY`]); returns it
/// with its base URL.
pub fn peer_daemon() -> (Daemon, String) {
    let port = free_port();
    let temp = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in(
        temp.path(),
        &["--http", &format!("127.0.0.1:{port}")],
        &[("SNAPFS_API_KEY", PEER_KEY)],
    );
    daemon._temp = Some(temp);
    (daemon, format!("http://127.0.0.1:{port}"))
}

/// The error text of a failed answer.
pub fn error_of(body: &Value) -> String {
    body["status"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// An answer of `want` status whose error text contains `words`.
pub fn assert_http_error(status: u16, body: &Value, want: u16, words: &str) {
    assert_eq!(status, want, "{body}");
    assert!(error_of(body).contains(words), "{body}");
}

/// The daemon still answers: `GET /collections` is 200.
pub async fn assert_answers(client: &Client) {
    let (status, body) = call(client, Method::GET, "/collections", None).await;
    assert_eq!(status, 200, "the daemon no longer answers: {body}");
}

// ---- Python: the official clients from PyPI ----

/// The PyPI packages the Python checks use.
const PYTHON_PACKAGES: [&str; 3] = ["qdrant-client", "qdrant-edge-py", "prometheus-client"];

/// A virtualenv under target/ with the official Qdrant packages, made once and
/// reused by later runs (and by concurrent tests: made under a lock).
pub fn python_venv() -> PathBuf {
    venv(
        "py-venv",
        "import qdrant_client, qdrant_edge, prometheus_client",
        &PYTHON_PACKAGES,
    )
}

/// The virtualenv `target/<dir>` with `packages`, made unless `import_check` already
/// runs in it; made under a lock, so concurrent tests wait for one install.
pub fn venv(dir: &str, import_check: &str, packages: &[&str]) -> PathBuf {
    static MADE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(dir);
    let python = venv.join("bin/python");
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", import_check])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !ready {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is installed");
        assert!(status.success(), "python3 -m venv failed");
        let status = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(packages)
            .status()
            .unwrap();
        assert!(status.success(), "pip install {packages:?} failed");
    }
    python
}

/// Run `tests/python/<script>` with `python` and `env`; panic with its output and the
/// daemon's log unless it exits 0 and prints `passed`. Returns its stdout.
pub fn python_check(
    python: &Path,
    script: &str,
    env: &[(&str, &std::ffi::OsStr)],
    passed: &str,
    daemon: &Daemon,
) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let output = Command::new(python)
        .arg(&script)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.contains(passed),
        "{} failed:\n{stdout}\n{}\ndaemon log:\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr),
        daemon.log()
    );
    stdout
}

// ---- a slow link ----

/// A TCP proxy in front of a peer that can hold back a streamed archive midway
/// (after its first bytes), as a slow or stalled link would; everything else passes.
pub struct GateProxy {
    pub url: String,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    holding: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl GateProxy {
    /// Bytes of an archive that pass before the gate holds it.
    const PASS: usize = 16 << 10;

    pub fn start(upstream: &str) -> GateProxy {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicBool::new(true));
        let holding = Arc::new(AtomicBool::new(false));
        let (gate, held) = (open.clone(), holding.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let (gate, held) = (gate.clone(), held.clone());
                let (mut to_server, mut from_client) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_client, &mut to_server);
                });
                std::thread::spawn(move || relay_answer(server, client, &gate, &held));
            }
        });
        GateProxy { url, open, holding }
    }

    /// Hold archives from now on (after their first bytes).
    pub fn hold(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn release(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// An archive is being held right now.
    pub fn is_holding(&self) -> bool {
        self.holding.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn relay_answer(
    mut server: std::net::TcpStream,
    mut client: std::net::TcpStream,
    open: &std::sync::atomic::AtomicBool,
    holding: &std::sync::atomic::AtomicBool,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let mut buf = vec![0u8; 4096];
    let mut head = Vec::new();
    let mut sent = 0usize;
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if head.len() < 4096 {
            head.extend_from_slice(&buf[..n]);
        }
        let archive = String::from_utf8_lossy(&head).contains("application/octet-stream");
        while archive && sent > GateProxy::PASS && !open.load(Ordering::SeqCst) {
            holding.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(10));
        }
        holding.store(false, Ordering::SeqCst);
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let _ = client.shutdown(std::net::Shutdown::Both);
}

/// A tar archive written by Python's `tarfile` (GNU format): `body` calls
/// `add(name, data=b'x', **tarinfo_fields)` for each entry. For archives no honest
/// tool writes (`..` entries, links, devices, huge declared sizes).
pub fn python_tar(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let script = format!(
        "import tarfile, io\nt = tarfile.open({:?}, 'w', format=tarfile.GNU_FORMAT)\ndef add(n, data=b'x', **kw):\n    i = tarfile.TarInfo(n)\n    i.size = len(data)\n    for k, v in kw.items(): setattr(i, k, v)\n    t.addfile(i, io.BytesIO(data) if i.isreg() else None)\n{body}\nt.close()\n",
        path.to_str().unwrap()
    );
    run_ok(Command::new("python3").arg("-c").arg(script));
    path
}

// ---- a small file system ----

/// A size-limited tmpfs mounted for a test (root), unmounted on drop.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(path),
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

// ---- small HTTP servers (Python's http.server) ----

/// `python3 -m http.server` over a directory, on loopback.
pub fn file_server(dir: &Path) -> ServerProcess {
    ServerProcess::start(|port| {
        let mut command = std::process::Command::new("python3");
        command
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    })
}

/// A server process on a loopback port (Python's `http.server` in these tests);
/// killed and reaped on drop, also when it never started.
pub struct ServerProcess {
    child: Child,
    pub port: u16,
}

impl ServerProcess {
    /// Run the command `make` builds for a free port; wait until the port answers.
    pub fn start(make: impl FnOnce(u16) -> Command) -> ServerProcess {
        let port = free_port();
        let child = make(port).spawn().expect("start the server");
        let server = ServerProcess { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not start on port {port}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real HTTP server run by Python's `http.server`: `do_get` is the body of the
/// handler's `do_GET` (it sees `self`, `PORT`, and `FILE`, the bytes of `file`).
pub fn py_http(file: &Path, do_get: &str) -> ServerProcess {
    let indented: String = do_get.lines().map(|l| format!("        {l}\n")).collect();
    ServerProcess::start(|port| {
        let script = format!(
            "import http.server, time\n\
             PORT = {port}\n\
             FILE = open({file:?}, 'rb').read()\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   def log_message(self, *args): pass\n\
             \x20   def do_GET(self):\n{indented}\
             http.server.ThreadingHTTPServer(('127.0.0.1', PORT), H).serve_forever()\n",
            file = file.to_str().unwrap(),
        );
        let mut command = Command::new("python3");
        command.arg("-c").arg(script);
        command
    })
}

/// Resident memory of process `pid` (VmRSS), in bytes.
pub fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

/// Peak resident memory of process `pid` so far (VmHWM), in bytes.
pub fn peak_rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

/// Bytes allocated on disk under `dir` (`du`: holes are free).
pub fn disk_usage(dir: &Path) -> u64 {
    let out = run_ok(Command::new("du").arg("-s").arg("-B1").arg(dir));
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du prints a size")
}

// ---- Hand-made archives (what tar tools will not write: hostile headers) ----

/// A GNU sparse entry of `real_size` logical bytes holding only `data` at offset 0.
pub fn sparse_entry(path: &str, real_size: u64, data: &[u8]) -> Vec<u8> {
    use snapfs::snapshot::tar_header::{Kind, entry_headers, padded};
    let stored = data.len() as u64;
    let map = [(0, stored), (real_size, 0)];
    let kind = Kind::Sparse {
        real_size,
        stored,
        map: &map,
    };
    let mut out = entry_headers(path, &kind, 0);
    out.extend_from_slice(data);
    out.resize(out.len() + (padded(stored) - stored) as usize, 0);
    out
}

pub fn file_entry(path: &str, data: &[u8]) -> Vec<u8> {
    use snapfs::snapshot::tar_header::{Kind, entry_headers, padded};
    let size = data.len() as u64;
    let mut out = entry_headers(path, &Kind::File { size }, 0);
    out.extend_from_slice(data);
    out.resize(out.len() + (padded(size) - size) as usize, 0);
    out
}

/// Entries and the end-of-archive marker.
pub fn tar_bytes(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}
