//! Runs one load against etcd-API endpoints: `loadgen ENDPOINTS OP CLIENTS SECONDS`.
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let config = concord_kv::loadgen::LoadConfig {
        endpoints: args[1].split(',').map(String::from).collect(),
        op: args[2].parse().map_err(anyhow::Error::msg)?,
        clients: args[3].parse()?,
        connections: 16,
        duration: Duration::from_secs(args[4].parse()?),
        value_size: 100,
        keys: 100_000,
        request_timeout: Duration::from_millis(500),
    };
    let report = concord_kv::loadgen::run(&config).await?;
    println!("{report:?}");
    Ok(())
}
