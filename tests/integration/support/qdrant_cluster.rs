//! A real Qdrant 1.18.3 cluster for tests: the upstream server binary (never a mock,
//! so tests see the real sharding, replication, forwarding and shard states), each node
//! a direct child process on its own loopback ports and temporary directory. Requests go
//! through `curl` (blocking, so they run unchanged inside a multi-thread tokio test).
//! Every node still running is SIGKILLed on drop, so a failing test never leaves a
//! `qdrant` process behind. Without the binary, [`QdrantCluster::start`] prints a notice
//! and gives `None` and the test skips.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The real Qdrant 1.18.3 server (`QDRANT_BIN`, else unpacked from
/// `../shared/bin/` into `target/`), or `None` with a printed notice.
pub fn qdrant_server_binary() -> Option<PathBuf> {
    if let Ok(bin) = std::env::var("QDRANT_BIN") {
        return Some(PathBuf::from(bin));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let unpacked = root.join("target/qdrant-1.18.3");
    if unpacked.exists() {
        return Some(unpacked);
    }
    let packed = root.join("../shared/bin/qdrant-1.18.3-linux-x86_64.xz");
    if !packed.exists() {
        eprintln!("skipped: no Qdrant server (set QDRANT_BIN or provide ../shared/bin/)");
        return None;
    }
    let partial = root.join(format!("target/qdrant-1.18.3.{}", std::process::id()));
    let out = std::fs::File::create(&partial).unwrap();
    let status = Command::new("xz")
        .arg("-dc")
        .arg(&packed)
        .stdout(out)
        .status()
        .unwrap();
    assert!(status.success(), "xz -dc {}", packed.display());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&partial, &unpacked).unwrap();
    Some(unpacked)
}

/// How long a node gets to answer HTTP after its start.
const HTTP_UP: Duration = Duration::from_secs(30);
/// How long the peers get to join node 0, and a collection's replicas to become Active.
const SETTLE: Duration = Duration::from_secs(60);

pub struct Node {
    pub http: u16,
    pub grpc: u16,
    pub p2p: u16,
    home: PathBuf,
    child: Option<Child>,
    pub peer_id: u64,
}

pub struct QdrantCluster {
    nodes: Vec<Node>,
    key: Option<String>,
    bin: PathBuf,
    // Last: removed after `Drop::drop` has killed the nodes.
    dir: tempfile::TempDir,
}

impl QdrantCluster {
    /// `n` nodes joined into one cluster, no API key; `None` when there is no binary.
    pub fn start(n: usize) -> Option<QdrantCluster> {
        QdrantCluster::start_with_key(n, None)
    }

    /// `n` nodes joined into one cluster, each checking `key` (`QDRANT__SERVICE__API_KEY`)
    /// when given; every request of this harness then sends it.
    pub fn start_with_key(n: usize, key: Option<&str>) -> Option<QdrantCluster> {
        assert!(n >= 1, "a cluster has at least one node");
        let bin = qdrant_server_binary()?;
        let dir = tempfile::tempdir().unwrap();
        // Distinct ports: free_port() binds and releases, so two calls may repeat one.
        let mut ports = Vec::new();
        while ports.len() < 3 * n {
            let port = super::free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let nodes = (0..n)
            .map(|i| {
                let home = dir.path().join(format!("n{i}"));
                std::fs::create_dir_all(&home).unwrap();
                Node {
                    http: ports[3 * i],
                    grpc: ports[3 * i + 1],
                    p2p: ports[3 * i + 2],
                    home,
                    child: None,
                    peer_id: 0,
                }
            })
            .collect();
        // Built before any spawn, so a panic below still kills what was started.
        let mut cluster = QdrantCluster {
            nodes,
            key: key.map(str::to_owned),
            bin,
            dir,
        };
        cluster.spawn(0, None);
        cluster.wait_http(0);
        let seed = format!("http://127.0.0.1:{}", cluster.nodes[0].p2p);
        for i in 1..n {
            cluster.spawn(i, Some(&seed));
        }
        cluster.wait_for(
            &format!("{n} peers in node 0's GET /cluster"),
            SETTLE,
            |c| {
                let (status, body) = c.request(0, "GET", "/cluster", None);
                status == 200 && body["result"]["peers"].as_object().map(|p| p.len()) == Some(n)
            },
        );
        for i in 0..n {
            let (status, body) = cluster.request(i, "GET", "/cluster", None);
            assert_eq!(status, 200, "GET /cluster on node {i}: {body}");
            cluster.nodes[i].peer_id = body["result"]["peer_id"]
                .as_u64()
                .unwrap_or_else(|| panic!("no peer_id in node {i}'s GET /cluster: {body}"));
        }
        Some(cluster)
    }

    fn spawn(&mut self, i: usize, bootstrap: Option<&str>) {
        let node = &self.nodes[i];
        assert!(node.child.is_none(), "node {i} is already running");
        // Qdrant logs to stdout: both streams go to the node's log, appended across restarts.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.home.join("log"))
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&node.home)
            .arg("--uri")
            .arg(format!("http://127.0.0.1:{}", node.p2p))
            .env("QDRANT__CLUSTER__ENABLED", "true")
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__HTTP_PORT", node.http.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", node.grpc.to_string())
            .env("QDRANT__CLUSTER__P2P__PORT", node.p2p.to_string())
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .env("QDRANT__STORAGE__STORAGE_PATH", node.home.join("storage"))
            .env(
                "QDRANT__STORAGE__SNAPSHOTS_PATH",
                node.home.join("snapshots"),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(seed) = bootstrap {
            cmd.arg("--bootstrap").arg(seed);
        }
        if let Some(key) = &self.key {
            cmd.env("QDRANT__SERVICE__API_KEY", key);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        self.nodes[i].child = Some(child);
    }

    fn wait_http(&mut self, i: usize) {
        self.wait_for(&format!("node {i} answering GET /"), HTTP_UP, |c| {
            c.request(i, "GET", "/", None).0 == 200
        });
    }

    /// Polls `check` until true; panics after `limit`, or as soon as a node exits on
    /// its own, with the tail of every node's log.
    fn wait_for(&mut self, what: &str, limit: Duration, mut check: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if check(self) {
                return;
            }
            for i in 0..self.nodes.len() {
                let child = self.nodes[i].child.as_mut();
                if let Some(status) = child.and_then(|c| c.try_wait().unwrap()) {
                    self.nodes[i].child = None;
                    panic!(
                        "waiting for {what}: node {i} exited ({status})\n{}",
                        self.logs()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {what}: not within {limit:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last 30 lines of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let log = std::fs::read_to_string(node.home.join("log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            out += &format!("---- node {i} log (tail) ----\n");
            for line in &lines[lines.len().saturating_sub(30)..] {
                out += line;
                out.push('\n');
            }
        }
        out
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].http)
    }

    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.url(i)).collect()
    }

    pub fn api_key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// SIGKILL node `i` (a crash) and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM node `i`, wait up to 10 s for it to exit, else SIGKILL it.
    pub fn stop(&mut self, i: usize) {
        let Some(mut child) = self.nodes[i].child.take() else {
            return;
        };
        // SAFETY: sending a signal to our own, not yet reaped, child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start node `i` again (stopped first if still running) on its storage, ports and
    /// `--uri`: it rejoins from its stored Raft state. Returns once it answers HTTP.
    pub fn restart(&mut self, i: usize) {
        self.stop(i);
        self.spawn(i, None);
        self.wait_http(i);
    }

    /// The first node still running: where cluster-wide requests go.
    fn coordinator(&self) -> usize {
        (0..self.nodes.len())
            .find(|&i| self.is_running(i))
            .expect("no node of the cluster is running")
    }

    /// `method path` on node `i` with an optional JSON body: the status (0 when nothing
    /// answered) and the body as JSON (`Value::String` of the raw text if not JSON,
    /// `Value::Null` if empty).
    pub fn request(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-m", "60", "-w", "\n%{http_code}", "-X", method])
            .arg(format!("{}{path}", self.url(i)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(key) = &self.key {
            cmd.arg("-H").arg(format!("api-key: {key}"));
        }
        if body.is_some() {
            // The body on stdin: no argument-length limit for large upserts.
            cmd.args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                "@-",
            ]);
        }
        let mut child = cmd.spawn().expect("run curl");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(body) = body {
            // curl reads the whole body before it sends, and writes only after.
            stdin.write_all(body.to_string().as_bytes()).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (text, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status = code.trim().parse().unwrap_or(0);
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
        };
        (status, value)
    }

    /// `request` that must answer 200; gives `result`.
    fn ok(&self, i: usize, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, answer) = self.request(i, method, path, body);
        assert_eq!(
            status,
            200,
            "{method} {path} on node {i}: {answer}\n{}",
            self.logs()
        );
        answer["result"].clone()
    }

    /// PUT /collections/{name}, then wait (on the first running node's view) until it has
    /// shard_number × replication_factor replicas, all Active.
    pub fn create_collection(&self, name: &str, body: Value) {
        let i = self.coordinator();
        self.ok(i, "PUT", &format!("/collections/{name}"), Some(&body));
        let shards = body["shard_number"]
            .as_u64()
            .unwrap_or(self.nodes.len() as u64);
        let rf = body["replication_factor"].as_u64().unwrap_or(1);
        let replicas = (shards * rf) as usize;
        self.wait_placement(name, SETTLE, |p| p.len() == replicas);
    }

    /// Wait until every replica of `name` is Active and no shard transfer is running
    /// (the first running node's view).
    pub fn wait_all_active(&self, name: &str, timeout: Duration) {
        self.wait_placement(name, timeout, |p| !p.is_empty());
    }

    fn wait_placement(
        &self,
        name: &str,
        timeout: Duration,
        enough: impl Fn(&[(u32, u64, String)]) -> bool,
    ) {
        let i = self.coordinator();
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) =
                self.request(i, "GET", &format!("/collections/{name}/cluster"), None);
            if status == 200 {
                let placement = self.placement_of(i, &body["result"]);
                let transfers = body["result"]["shard_transfers"]
                    .as_array()
                    .is_none_or(|t| t.is_empty());
                if transfers && enough(&placement) && placement.iter().all(|p| p.2 == "Active") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "collection {name}: replicas not all Active within {timeout:?}; last view of \
                 node {i}: {body}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// PUT the points (wait=true) through the first running node, retrying a 5xx up to
    /// three times.
    pub fn upsert(&self, name: &str, points: &[Value]) {
        let i = self.coordinator();
        let path = format!("/collections/{name}/points?wait=true");
        let body = json!({ "points": points });
        let mut attempt = 0;
        loop {
            let (status, answer) = self.request(i, "PUT", &path, Some(&body));
            if status == 200 {
                return;
            }
            attempt += 1;
            assert!(
                (500..600).contains(&status) && attempt <= 3,
                "upsert of {} points into {name} on node {i}: {status} {answer}\n{}",
                points.len(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Every point of `name` as node `i` scrolls it, keyed by id (as a string), each
    /// `{"id", "vector", "payload"}`.
    pub fn scroll_all(&self, i: usize, name: &str) -> BTreeMap<String, Value> {
        let path = format!("/collections/{name}/points/scroll");
        let mut all = BTreeMap::new();
        let mut offset = Value::Null;
        loop {
            let body = json!({
                "limit": 1000, "with_payload": true, "with_vector": true, "offset": offset,
            });
            let result = self.ok(i, "POST", &path, Some(&body));
            for point in result["points"].as_array().expect("points") {
                let id = match &point["id"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let kept = json!({
                    "id": point["id"], "vector": point["vector"], "payload": point["payload"],
                });
                all.insert(id, kept);
            }
            offset = result["next_page_offset"].clone();
            if offset.is_null() {
                return all;
            }
        }
    }

    /// The exact point count of `name` as node `i` sees it.
    pub fn count_exact(&self, i: usize, name: &str) -> u64 {
        let path = format!("/collections/{name}/points/count");
        let result = self.ok(i, "POST", &path, Some(&json!({ "exact": true })));
        result["count"].as_u64().expect("count")
    }

    /// (shard id, peer id, state) of every replica of `name` in node `i`'s view, sorted.
    pub fn placement(&self, i: usize, name: &str) -> Vec<(u32, u64, String)> {
        let result = self.ok(i, "GET", &format!("/collections/{name}/cluster"), None);
        self.placement_of(i, &result)
    }

    fn placement_of(&self, i: usize, result: &Value) -> Vec<(u32, u64, String)> {
        let entry = |shard: &Value, peer: u64| {
            (
                shard["shard_id"].as_u64().expect("shard_id") as u32,
                peer,
                shard["state"].as_str().unwrap_or_default().to_owned(),
            )
        };
        let shards = |key: &str| result[key].as_array().cloned().unwrap_or_default();
        let mut placement: Vec<_> = shards("local_shards")
            .iter()
            .map(|s| entry(s, self.nodes[i].peer_id))
            .chain(
                shards("remote_shards")
                    .iter()
                    .map(|s| entry(s, s["peer_id"].as_u64().expect("peer_id"))),
            )
            .collect();
        placement.sort();
        placement
    }

    pub fn create_alias(&self, collection: &str, alias: &str) {
        let body = json!({"actions": [{"create_alias": {
            "collection_name": collection, "alias_name": alias,
        }}]});
        self.ok(
            self.coordinator(),
            "POST",
            "/collections/aliases",
            Some(&body),
        );
    }

    /// (alias, collection) of every alias node `i` knows, sorted.
    pub fn aliases(&self, i: usize) -> Vec<(String, String)> {
        let result = self.ok(i, "GET", "/aliases", None);
        let mut aliases: Vec<_> = result["aliases"]
            .as_array()
            .expect("aliases")
            .iter()
            .map(|a| {
                let field = |k: &str| a[k].as_str().expect(k).to_owned();
                (field("alias_name"), field("collection_name"))
            })
            .collect();
        aliases.sort();
        aliases
    }

    pub fn create_payload_index(&self, name: &str, field: &str, schema: &str) {
        let body = json!({ "field_name": field, "field_schema": schema });
        let path = format!("/collections/{name}/index?wait=true");
        self.ok(self.coordinator(), "PUT", &path, Some(&body));
    }
}

impl Drop for QdrantCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// Points `{"id", "vector", "payload": {"n": id, "tag": "t<id % 7>"}}`, each vector a
/// function of (`seed`, id) alone. Components are thousandths in [-1, 1): Qdrant keeps
/// f32 and prints them shortest, so a scrolled vector (Dot or Euclid; Cosine normalizes)
/// is JSON-equal to the one sent.
pub fn random_points(ids: std::ops::Range<u64>, dim: usize, seed: u64) -> Vec<Value> {
    ids.map(|id| {
        // xorshift64*, seeded from (seed, id) through a splitmix-style mix; never 0.
        let mut state =
            (seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9) | 1;
        let vector: Vec<f64> = (0..dim)
            .map(|_| {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let r = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) % 2000;
                (r as f64 - 1000.0) / 1000.0
            })
            .collect();
        json!({ "id": id, "vector": vector, "payload": { "n": id, "tag": format!("t{}", id % 7) } })
    })
    .collect()
}
