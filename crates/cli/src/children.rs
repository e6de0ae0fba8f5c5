//! Node processes a launcher (`concord db up`, `concord cluster up`) started and owns.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

/// The worker threads each of `nodes` nodes on this machine gets (`--worker-threads`): its
/// share of the cores, at least one. Nodes sharing cores do better with a share each than
/// with a worker per core apiece (`concord_runtime::server_runtime`).
pub(crate) fn worker_share(nodes: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores / usize::try_from(nodes.max(1)).unwrap_or(usize::MAX)).max(1)
}

/// Children stopped when the launcher exits, however it exits: asked to stop (SIGTERM), and
/// killed if they have not after 3 seconds.
pub(crate) struct Children(pub(crate) Vec<(u64, Child)>);

impl Children {
    /// Starts node `id` with `command`, its output appended to the log file at `log_path`.
    pub(crate) fn spawn(&mut self, id: u64, command: &mut Command, log_path: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a node")?;
        self.0.push((id, child));
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        // On Ctrl-C the terminal interrupted the children too; otherwise ask them to stop
        // (SIGTERM), and let them shut down gracefully.
        for (_, child) in &mut self.0 {
            if child.try_wait().ok().flatten().is_none() {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for _ in 0..30 {
            if self
                .0
                .iter_mut()
                .all(|(_, child)| child.try_wait().ok().flatten().is_some())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Children {
    /// Kills node `id` with SIGKILL (no graceful shutdown) and waits for it to exit.
    pub(crate) fn kill(&mut self, id: u64) {
        if let Some(at) = self.0.iter().position(|(node, _)| *node == id) {
            let (_, mut child) = self.0.remove(at);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to node `id`'s process.
    pub(crate) fn signal(&self, id: u64, signal: &str) -> Result<()> {
        let (_, child) = self
            .0
            .iter()
            .find(|(node, _)| *node == id)
            .with_context(|| format!("node {id} is not running"))?;
        let status = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .context("running kill")?;
        anyhow::ensure!(status.success(), "kill -{signal} node {id}: {status}");
        Ok(())
    }

    /// Waits up to `patience` for node `id` to exit on its own, then forgets it; how it exited,
    /// or `None` if it still runs.
    pub(crate) fn wait_exited(
        &mut self,
        id: u64,
        patience: Duration,
    ) -> Result<Option<std::process::ExitStatus>> {
        let Some(at) = self.0.iter().position(|(node, _)| *node == id) else {
            anyhow::bail!("node {id} is not running");
        };
        let step = Duration::from_millis(20);
        for _ in 0..=patience.as_millis() / step.as_millis() {
            if let Some(status) = self.0[at].1.try_wait()? {
                self.0.remove(at);
                return Ok(Some(status));
            }
            std::thread::sleep(step);
        }
        Ok(None)
    }

    /// Reports a node that exited on its own.
    pub(crate) fn exited(&mut self) -> Result<Option<String>> {
        for (id, child) in &mut self.0 {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(format!("node {id} exited ({status}); see its log")));
            }
        }
        Ok(None)
    }

    /// Waits in the foreground until Ctrl-C or SIGTERM (`Ok`), or until a node exits on its
    /// own (an error that says which).
    pub(crate) fn wait_for_stop(&mut self, rt: &tokio::runtime::Runtime) -> Result<()> {
        rt.block_on(async {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("installing the SIGTERM handler")?;
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    _ = terminate.recv() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_millis(500)) => {
                        if let Some(report) = self.exited()? {
                            anyhow::bail!("{report}");
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::worker_share;

    #[test]
    fn nodes_on_one_machine_share_its_cores_with_at_least_one_worker_each() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(worker_share(1), cores);
        assert_eq!(worker_share(0), cores, "no nodes counts as one");
        assert_eq!(worker_share(2), (cores / 2).max(1));
        assert_eq!(worker_share(cores as u64 + 1), 1);
        assert_eq!(worker_share(u64::MAX), 1);
    }
}
