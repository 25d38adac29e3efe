//! Listening: [`start`] in the background, [`serve`] until a signal.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{Config, Error, Idp};

/// How long [`Running::shutdown`] waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running IdP. Stops when dropped (at once) or on [`Running::shutdown`] (gracefully).
#[derive(Debug)]
pub struct Running {
    /// The address it listens on (the actual port when `listen` had port 0).
    pub addr: SocketAddr,
    /// The issuer URL (derived from `addr` unless configured).
    pub issuer: String,
    idp: Idp,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// The provider (e.g. for its key id).
    pub fn idp(&self) -> &Idp {
        &self.idp
    }

    /// Stops accepting connections, lets open ones finish (at most 5
    /// seconds), and returns once the server has stopped.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Dropping the sender tells open connections to finish; aborting the
        // task closes the listening socket now.
        self.stop.take();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Binds `config.listen`, loads (or generates) the signing key and serves in
/// the background on the current tokio runtime. With port 0 and no
/// `issuer`, the issuer is `http://<bound address>`.
pub async fn start(mut config: Config) -> Result<Running, Error> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind { addr: config.listen, source })?;
    let issuer = config.issuer_for(addr);
    config.issuer = Some(issuer.clone());
    config.listen = addr;
    // Key generation and file I/O block: keep them off the async workers.
    let idp =
        tokio::task::spawn_blocking(move || Idp::new(config)).await.map_err(|e| Error::Internal(e.to_string()))??;
    let app = idp.router();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "the IdP server failed");
        }
    });
    tracing::info!(%addr, issuer, kid = idp.kid(), "development IdP listening");
    Ok(Running { addr, issuer, idp, stop: Some(stop), task: Some(task) })
}

/// `custos idp serve`: start, say where, serve until Ctrl-C (or SIGTERM), then stop.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    println!(
        "custos idp (development only; production uses any OIDC provider): issuer {} on http://{}",
        running.issuer, running.addr
    );
    println!("device sign-in page: {}/device", running.issuer);
    wait_for_signal().await?;
    println!("custos idp: stopping");
    running.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await?;
    Ok(())
}
