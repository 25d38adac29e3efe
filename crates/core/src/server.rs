//! Putting a core together from its configuration, and serving it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::service::Core;

/// A started core.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The messaging service.
    pub core: Arc<Core>,
    /// KMSs that connected out to this node (the relay's).
    pub links: Arc<crate::relay::Links>,
    /// The server task.
    pub task: tokio::task::JoinHandle<()>,
}

/// Opens the store, bus and blob store the config names, and starts serving.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let store = core_store::open(cfg.database_url()).await.context("opening the database")?;
    let bus: Arc<dyn core_bus::EventBus> = match &cfg.nats_url {
        Some(url) => Arc::new(
            core_bus::NatsBus::connect(url, &cfg.nats_prefix)
                .await
                .with_context(|| format!("connecting to NATS at {url}"))?,
        ),
        None => Arc::new(core_bus::InProcessBus::new()),
    };
    let blobs: Arc<dyn object_store::ObjectStore> = match &cfg.blobs.s3 {
        Some(s3) => {
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(&s3.bucket)
                .with_region(&s3.region)
                .with_allow_http(s3.allow_http);
            if let Some(e) = &s3.endpoint {
                b = b.with_endpoint(e);
            }
            Arc::new(b.build().with_context(|| format!("S3 bucket {}", s3.bucket))?)
        }
        None => {
            let blob_dir = cfg.data_dir.join("blobs");
            std::fs::create_dir_all(&blob_dir).with_context(|| format!("creating {}", blob_dir.display()))?;
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&blob_dir)?)
        }
    };
    let listen = cfg.listen;
    let core = Arc::new(Core::new(cfg, store, bus, blobs)?);
    core.follow_membership().await.context("subscribing to membership notices")?;
    if core.cfg.webhooks.deliver {
        tokio::spawn(core.webhooks.clone().run(core.store.clone()));
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    let state = crate::state::AppState::new(core.clone())?;
    let links = state.links.clone();
    let app = crate::api::router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "server failed");
        }
    });
    Ok(Running { addr, core, links, task })
}

/// `custos core serve`: start, print where, run until SIGINT/SIGTERM.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let running = start(cfg).await?;
    println!("custos core: serving on http://{} (OpenAPI at /openapi.json)", running.addr);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = running.task => { if let Err(e) = r { anyhow::bail!("server task failed: {e}") } }
    }
    println!("custos core: stopping");
    Ok(())
}
