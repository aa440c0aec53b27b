//! The rig's ceiling: Debian's nginx as a non-durable forwarder.
//!
//! nginx accepts each `POST /workflow/tasks` and proxies it, over kept-alive HTTP/1.1
//! connections, to the receiver's `/sink`, which counts it and answers with a task id, so the
//! load generator drives it exactly as it drives the dispatcher. No store, no signature, no
//! retry: whatever the dispatcher reaches is a fraction of this figure, measured on the same
//! machine in the same run, which makes reports from different days and machines comparable.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// A running nginx and the directory holding its config, logs and temp files.
pub(crate) struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
}

impl Nginx {
    /// Starts `binary` forwarding `/workflow/tasks` to `http://<sink>/sink` with `workers`
    /// worker processes; waits until it accepts connections.
    pub(crate) async fn start(
        binary: &Path,
        sink: SocketAddr,
        workers: usize,
    ) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), port, sink, workers))?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            // The error log before the config's own `error_log` applies (nginx >= 1.19.5).
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "while starting {} (install Debian's nginx: apt-get install nginx)",
                    binary.display()
                )
            })?;
        let mut nginx = Nginx {
            child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(nginx);
            }
            if let Some(status) = nginx.child.try_wait()? {
                let log =
                    std::fs::read_to_string(nginx.dir.path().join("error.log")).unwrap_or_default();
                anyhow::bail!("nginx exited at start ({status}): {log}");
            }
            anyhow::ensure!(Instant::now() < deadline, "nginx did not listen in 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The master process and its workers.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let master = self.child.id();
        let mut pids = vec![master];
        pids.extend(crate::procstat::children(master));
        pids
    }

    /// The version nginx reports (`nginx -v` prints to stderr).
    pub(crate) fn version(binary: &Path) -> String {
        Command::new(binary)
            .arg("-v")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
            .unwrap_or_default()
    }
}

impl Drop for Nginx {
    /// Stops nginx and waits for it, so no path, an error's included, leaves it running:
    /// SIGTERM to the master, which stops its workers; SIGKILL after 5 s.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx's config: everything under `dir`, no access log, one upstream with idle kept-alive
/// connections to the sink (`proxy_http_version 1.1` and an empty `Connection` header are what
/// upstream keepalive needs).
fn config(dir: &Path, port: u16, sink: SocketAddr, workers: usize) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_body_buffer_size 64k;
    keepalive_requests 1000000;
    upstream sink {{
        server {sink};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location = /workflow/tasks {{
            proxy_pass http://sink/sink;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_forwards_the_task_route_over_kept_alive_connections() {
        let c = config(
            Path::new("/tmp/x"),
            8080,
            "127.0.0.1:9000".parse().unwrap(),
            2,
        );
        assert!(c.contains("listen 127.0.0.1:8080;"), "{c}");
        assert!(c.contains("server 127.0.0.1:9000;"), "{c}");
        assert!(c.contains("proxy_pass http://sink/sink;"), "{c}");
        assert!(c.contains("keepalive 256;"), "{c}");
        assert!(c.contains("proxy_set_header Connection \"\";"), "{c}");
        assert!(c.contains("worker_processes 2;"), "{c}");
        assert!(c.contains("pid /tmp/x/nginx.pid;"), "{c}");
    }
}
