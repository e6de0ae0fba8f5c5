//! A second, independent etcd client against Concord DB: the npm `etcd3` package (on
//! `@grpc/grpc-js`) runs the scripted session `tests/clients/node-etcd3/session.js` against a
//! three-node cluster. `.ci/run` installs Node.js and runs
//! `npm ci --prefix tests/clients/node-etcd3` first.

mod db;

use std::path::PathBuf;
use std::process::Command;

use db::DbCluster;

fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/node-etcd3")
}

#[test]
fn the_npm_etcd3_client_runs_a_scripted_session() {
    let project = project();
    assert!(
        project.join("node_modules/etcd3").is_dir(),
        "the npm etcd3 client is not installed: run `npm ci --prefix tests/clients/node-etcd3` \
         (needs Node.js 18 or later and npm)"
    );
    let cluster = DbCluster::start(3, &[]);
    let output = Command::new("node")
        .arg(project.join("session.js"))
        .env("CONCORD_ENDPOINTS", cluster.urls().join(","))
        .output()
        .expect("node is installed (Node.js 18 or later; .ci/run installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the etcd3 session failed ({}):\n{stdout}\n{stderr}\n{}",
        output.status,
        cluster.logs()
    );
    assert!(stdout.contains("node etcd3 session: ok"), "{stdout}");
}
