//! A harness for Concord DB tests: real `concord db serve` processes on loopback ports, each
//! with its own data directory, killed when the harness is dropped.
#![allow(dead_code)]
// Real processes on a real clock: waiting for them needs wall-clock deadlines.
#![allow(clippy::disallowed_methods)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One node's addresses and process.
#[derive(Debug)]
pub struct DbNode {
    /// Its id (1-based).
    pub id: u64,
    /// `127.0.0.1:port` for clients.
    pub client: String,
    /// `127.0.0.1:port` for peers.
    pub peer: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    /// The running process, if any.
    pub child: Option<Child>,
    /// Extra `db serve` flags.
    pub extra: Vec<String>,
}

/// A cluster of node processes.
#[derive(Debug)]
pub struct DbCluster {
    /// The nodes, `nodes[i].id == i + 1`.
    pub nodes: Vec<DbNode>,
    /// Holds every data directory.
    pub dir: tempfile::TempDir,
    /// `--initial-cluster`.
    pub initial_cluster: String,
    /// When the client port speaks TLS: the flags `concord db status` needs (`--cacert`,
    /// `--cert`, `--key`); the harness then asks over `https://`.
    pub client_tls: Option<Vec<String>>,
}

/// A port nobody listens on now, below the kernel's ephemeral range (32768 and up), so that
/// no outgoing connection of a concurrently running test can take it before the node binds it;
/// never handed out twice in one test process (tests of a binary run side by side, and each
/// may pick a port before another's node has bound it); picked at random so that test
/// binaries running side by side rarely pick the same.
pub fn free_port() -> u16 {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::UNIX_EPOCH
            .elapsed()
            .map_or(0, |d| d.as_nanos() as u64)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut state = seed | 1;
    for _ in 0..1000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = 20_000 + (state % 12_000) as u16;
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port in 20000..32000")
}

/// The `concord` binary under test.
pub fn concord() -> Command {
    Command::new(env!("CARGO_BIN_EXE_concord"))
}

impl DbCluster {
    /// Starts `n` nodes with short timeouts (fast tests) plus `extra` flags, and waits for a
    /// leader.
    pub fn start(n: u64, extra: &[&str]) -> DbCluster {
        let mut cluster = DbCluster::prepare(n, extra);
        for id in 1..=n {
            cluster.spawn(id);
        }
        cluster.wait_for_leader(Duration::from_secs(20));
        cluster.wait_all_serving(Duration::from_secs(20));
        cluster
    }

    /// `n` nodes' ports, data directories and flags, none started yet.
    pub fn prepare(n: u64, extra: &[&str]) -> DbCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut nodes = Vec::new();
        for id in 1..=n {
            nodes.push(DbNode {
                id,
                client: format!("127.0.0.1:{}", free_port()),
                peer: format!("127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(format!("node{id}")),
                log: dir.path().join(format!("node{id}.log")),
                child: None,
                extra: extra.iter().map(|s| s.to_string()).collect(),
            });
        }
        let initial_cluster = nodes
            .iter()
            .map(|node| format!("{}={}", node.id, node.peer))
            .collect::<Vec<_>>()
            .join(",");
        DbCluster {
            nodes,
            dir,
            initial_cluster,
            client_tls: None,
        }
    }

    /// `concord db status --json` for one node, over TLS when the cluster's client port has it.
    fn status_command(&self, node: &DbNode) -> Command {
        let mut command = concord();
        command.args(["db", "status", "--json", "--endpoints"]);
        match &self.client_tls {
            Some(flags) => command.arg(format!("https://{}", node.client)).args(flags),
            None => command.arg(format!("http://{}", node.client)),
        };
        command
    }

    /// Waits until every running node answers a status request, or panics with the logs.
    pub fn wait_all_serving(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for node in &self.nodes {
            if node.child.is_none() {
                continue;
            }
            loop {
                let output = self
                    .status_command(node)
                    .output()
                    .expect("concord db status runs");
                let text = String::from_utf8_lossy(&output.stdout);
                let answered = serde_json::from_str::<serde_json::Value>(&text)
                    .is_ok_and(|rows| rows[0]["status"].is_object());
                if answered {
                    break;
                }
                if Instant::now() >= deadline {
                    panic!("node {} does not answer\n{}", node.id, self.logs());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Starts (or restarts) node `id` from its data directory.
    pub fn spawn(&mut self, id: u64) {
        let initial_cluster = self.initial_cluster.clone();
        let node = &mut self.nodes[(id - 1) as usize];
        assert!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("the node's log file");
        let child = concord()
            .args(["db", "serve", "--id", &id.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--listen-client", &node.client])
            .args(["--listen-peer", &node.peer])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--heartbeat", "50ms", "--election-timeout", "300ms"])
            .args(&node.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("concord db serve starts");
        node.child = Some(child);
    }

    /// Kills node `id` with SIGKILL (no graceful shutdown) and waits for it to exit.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes[(id - 1) as usize].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops node `id` with SIGTERM (graceful) and waits for it to exit.
    pub fn stop(&mut self, id: u64) {
        if let Some(mut child) = self.nodes[(id - 1) as usize].child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Comma-separated client addresses of every node.
    pub fn endpoints(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.client.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `http://` client URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://{}", n.client))
            .collect()
    }

    /// The id of the node that reports itself leader, if one does.
    pub fn leader(&self) -> Option<u64> {
        for node in &self.nodes {
            if node.child.is_none() {
                continue;
            }
            let output = self.status_command(node).output().ok()?;
            let text = String::from_utf8_lossy(&output.stdout);
            let Ok(rows) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if rows[0]["status"]["role"] == "leader" {
                return Some(node.id);
            }
        }
        None
    }

    /// Waits until some node leads, or panics with the nodes' logs.
    pub fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(leader) = self.leader() {
                return leader;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no leader within {timeout:?}\n{}", self.logs());
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "--- node {} ---\n{}",
                    n.id,
                    std::fs::read_to_string(&n.log).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs `concord db restore` of `backup` into node `id`'s data directory, for this
    /// cluster's `--initial-cluster`.
    pub fn restore(&self, backup: &Path, id: u64) -> Output {
        concord()
            .args(["db", "restore"])
            .arg(backup)
            .args(["--id", &id.to_string(), "--data-dir"])
            .arg(self.data_dir(id))
            .args(["--initial-cluster", &self.initial_cluster])
            .output()
            .expect("concord db restore runs")
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: u64) -> &Path {
        &self.nodes[(id - 1) as usize].data_dir
    }
}

impl Drop for DbCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Runs `etcdctl` (API v3) against `endpoints` and returns its output. Panics with a clear
/// message when etcdctl is not installed (`.ci/run` installs Debian's `etcd-client`).
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    etcdctl_with_input(endpoints, args, None)
}

/// [`etcdctl`] with `input` on its standard input.
pub fn etcdctl_with_input(endpoints: &str, args: &[&str], input: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--command-timeout", "10s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl is installed (Debian package etcd-client; .ci/run installs it)");
    if let Some(input) = input {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write etcdctl input");
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().expect("etcdctl runs")
}

/// The standard output of a successful etcdctl run; panics with its stderr otherwise.
pub fn etcdctl_ok(endpoints: &str, args: &[&str]) -> String {
    let output = etcdctl(endpoints, args);
    assert!(
        output.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

// Additions for the crash, corruption and membership tests (functions only; the ones above keep
// their signatures).
impl DbCluster {
    /// Adds node `nodes.len() + 1` with fresh ports and its own data directory, without starting
    /// it (for `member add`), and returns its id.
    pub fn add_node(&mut self, extra: &[&str]) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        self.nodes.push(DbNode {
            id,
            client: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            data_dir: self.dir.path().join(format!("node{id}")),
            log: self.dir.path().join(format!("node{id}.log")),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        });
        id
    }

    /// Starts node `id` joining the running cluster (`--join`), with `initial_cluster` (the
    /// members it was told, itself included).
    pub fn spawn_joining(&mut self, id: u64, initial_cluster: &str) {
        let saved = std::mem::replace(&mut self.initial_cluster, initial_cluster.to_string());
        self.nodes[(id - 1) as usize]
            .extra
            .push("--join".to_string());
        self.spawn(id);
        self.nodes[(id - 1) as usize].extra.pop();
        self.initial_cluster = saved;
    }

    /// `--initial-cluster` text listing `ids` with their peer addresses.
    pub fn cluster_text(&self, ids: &[u64]) -> String {
        ids.iter()
            .map(|&id| format!("{id}={}", self.nodes[(id - 1) as usize].peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits up to `timeout` for node `id`'s process to exit on its own and returns its exit
    /// status (the process is then forgotten), or `None` if it still runs.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let node = &mut self.nodes[(id - 1) as usize];
            let child = node.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Node `id`'s `concord db status --json` row (`{"endpoint", "status"}` or
    /// `{"endpoint", "error"}`), if the command printed one.
    pub fn status(&self, id: u64) -> Option<serde_json::Value> {
        let node = &self.nodes[(id - 1) as usize];
        let output = concord()
            .args(["db", "status", "--json", "--endpoints"])
            .arg(format!("http://{}", node.client))
            .output()
            .ok()?;
        let rows: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        Some(rows[0].clone())
    }

    /// Node `id`'s log.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.nodes[(id - 1) as usize].log).unwrap_or_default()
    }

    /// Client addresses of nodes `ids`, comma-separated.
    pub fn endpoints_of(&self, ids: &[u64]) -> String {
        ids.iter()
            .map(|&id| self.nodes[(id - 1) as usize].client.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client addresses of the running nodes, comma-separated.
    pub fn running_endpoints(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.client.clone())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Polls `condition` every 100 ms until it holds, or panics after `timeout` with `what()`.
pub fn wait_until(
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
    what: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {}",
            what()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `probe` every 100 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
