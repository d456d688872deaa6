//! A real S3-compatible server for tests: moto's standalone server (PyPI
//! `moto[server]`) in a virtualenv under target/, started on a free loopback port,
//! killed on drop; and boto3 (installed with it) to look at the bucket from outside.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The credentials every test uses when the server does not check them.
pub const ACCESS: &str = "snapfs-test-access";
pub const SECRET: &str = "snapfs-test-secret";
pub const REGION: &str = "us-east-1";

/// target/moto-venv with `moto[server]` (pinned: the version the tests were written
/// against), made once and reused.
pub fn moto_venv() -> PathBuf {
    crate::support::venv(
        "moto-venv",
        "import moto.server, boto3",
        &["moto[server]==5.2.5"],
    )
}

/// A moto server on loopback. Its state is in memory: a restart starts empty.
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    python: PathBuf,
    /// The server's request log (stderr).
    log: tempfile::NamedTempFile,
}

impl Moto {
    /// Start on a free port; parts as small as 1 KiB are accepted (S3 needs 5 MiB),
    /// so tests can upload many parts quickly.
    pub fn start() -> Moto {
        let port = super::free_port();
        let mut moto = Moto {
            child: None,
            port,
            python: moto_venv(),
            log: tempfile::NamedTempFile::new().unwrap(),
        };
        moto.spawn();
        moto
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .env("S3_UPLOAD_PART_MIN_SIZE", "1024")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log.reopen().unwrap())
            .spawn()
            .expect("start moto");
        self.child = Some(child);
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("moto did not start on port {}", self.port);
    }

    /// SIGKILL the server (a crash of the S3 endpoint).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port (empty: moto keeps its state in memory).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Has the server logged a request line containing `text`?
    pub fn saw(&self, text: &str) -> bool {
        std::fs::read_to_string(self.log.path())
            .map(|log| log.contains(text))
            .unwrap_or(false)
    }

    /// Run Python with boto3's client `s3` (and `iam`) on this server; returns stdout.
    pub fn py(&self, body: &str) -> String {
        let script = format!(
            "import boto3, json, hashlib, urllib.request\n\
             kw = dict(endpoint_url={endpoint:?}, region_name={REGION:?}, aws_access_key_id={ACCESS:?}, aws_secret_access_key={SECRET:?})\n\
             s3 = boto3.client('s3', **kw)\n\
             iam = boto3.client('iam', **kw)\n\
             {body}\n",
            endpoint = self.endpoint(),
        );
        super::run_ok(Command::new(&self.python).arg("-c").arg(script))
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.py(&format!("s3.create_bucket(Bucket={bucket:?})"));
    }

    /// Every key in `bucket`, sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let out = self.py(&format!(
            "r = s3.list_objects_v2(Bucket={bucket:?})\nprint(json.dumps(sorted(o['Key'] for o in r.get('Contents', []))))"
        ));
        serde_json::from_str(out.trim()).unwrap()
    }

    /// Multipart uploads begun and neither completed nor aborted.
    pub fn open_uploads(&self, bucket: &str) -> Vec<String> {
        let out = self.py(&format!(
            "r = s3.list_multipart_uploads(Bucket={bucket:?})\nprint(json.dumps([u['Key'] for u in r.get('Uploads', [])]))"
        ));
        serde_json::from_str(out.trim()).unwrap()
    }

    /// The bytes of an object.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let out = self.py(&format!(
            "print(s3.get_object(Bucket={bucket:?}, Key={key:?})['Body'].read().hex())"
        ));
        (0..out.trim().len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&out.trim()[i..i + 2], 16).unwrap())
            .collect()
    }

    pub fn put(&self, bucket: &str, key: &str, path: &std::path::Path) {
        self.py(&format!(
            "s3.put_object(Bucket={bucket:?}, Key={key:?}, Body=open({:?}, 'rb').read())",
            path.to_str().unwrap()
        ));
    }

    /// Make an IAM user allowed everything in S3 and return its (access, secret);
    /// then turn authentication on: from now on requests must be signed by a key
    /// moto knows, with the right secret.
    pub fn enforce_auth(&self) -> (String, String) {
        let out = self.py(
            "iam.create_user(UserName='snapfs')\n\
             iam.put_user_policy(UserName='snapfs', PolicyName='all', PolicyDocument=json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': 's3:*', 'Resource': '*'}]}))\n\
             k = iam.create_access_key(UserName='snapfs')['AccessKey']\n\
             print(k['AccessKeyId'], k['SecretAccessKey'])\n\
             urllib.request.urlopen(urllib.request.Request(kw['endpoint_url'] + '/moto-api/reset-auth', data=b'0', headers={'Content-Type': 'text/plain'}, method='POST')).read()",
        );
        let mut words = out.split_whitespace();
        (
            words.next().unwrap().to_string(),
            words.next().unwrap().to_string(),
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP relay in front of an S3 server that, once armed, cuts every connection
/// that carries more than a few KiB towards the server (part uploads), while small
/// requests (abort, list) pass.
pub struct CuttingProxy {
    pub port: u16,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CuttingProxy {
    const LIMIT: usize = 16 << 10;

    pub fn start(upstream_port: u16) -> CuttingProxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let flag = armed.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                let flag = flag.clone();
                let (mut s_read, mut c_write) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let (mut from, mut to) = (client, server);
                    let mut buf = vec![0u8; 4096];
                    let mut since_armed = 0usize;
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if flag.load(Ordering::SeqCst) {
                            since_armed += n;
                            if since_armed > Self::LIMIT {
                                break;
                            }
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = from.shutdown(std::net::Shutdown::Both);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CuttingProxy { port, armed }
    }

    pub fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
