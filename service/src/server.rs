//! Start-up: state, first Administrator, TLS, the HTTP server, background chores, restart.

use crate::app::{Config, Keel};
use crate::tree::dispatch::{dispatch, Server};
use actix_web::{web, App, HttpServer};
use rand::Rng;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

pub struct ServeOpts {
    pub listen: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub bootstrap_admin_file: Option<PathBuf>,
    pub workers: usize,
    /// Seconds between inventory re-reads (hot-plug); 0 turns it off.
    pub inventory_refresh: u64,
    /// What the service itself is given; `run` fills in `base_url`, `port` and `self_signed`
    /// from the listening address and the certificate.
    pub config: Config,
}

/// What the server loop ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Stopped,
    Restart,
}

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::Other, e.to_string())
}

/// A random password that satisfies the default policy.
pub fn random_password() -> String {
    const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
    const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    const DIGIT: &[u8] = b"23456789";
    const OTHER: &[u8] = b"-_.+=";
    let mut rng = rand::thread_rng();
    let all: Vec<u8> = [LOWER, UPPER, DIGIT, OTHER].concat();
    let mut p: Vec<u8> = (0..20).map(|_| all[rng.gen_range(0..all.len())]).collect();
    for (i, set) in [LOWER, UPPER, DIGIT, OTHER].iter().enumerate() {
        p[i * 5] = set[rng.gen_range(0..set.len())];
    }
    String::from_utf8(p).unwrap()
}

/// Create the first Administrator when there is no account at all.
pub fn bootstrap_admin(keel: &Keel, file: Option<&PathBuf>) -> io::Result<()> {
    if !keel.accounts.is_empty() {
        return Ok(());
    }
    let (user, password, from_file) = match file {
        Some(f) => {
            let text = std::fs::read_to_string(f)?;
            let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
            let (u, p) = line.split_once(':').ok_or_else(|| err(format!("{}: expected one user:password line", f.display())))?;
            (u.to_string(), p.to_string(), true)
        }
        None => ("admin".to_string(), random_password(), false),
    };
    keel.accounts.check_password(&user, &password).map_err(|e| err(format!("bootstrap administrator password refused: {e}")))?;
    let hash = keel.accounts.hash_password(&password).map_err(err)?;
    keel.accounts.create(&user, hash, "Administrator", true, false).map_err(err)?;
    if from_file {
        log::info!("created Administrator account {user} from the bootstrap file");
    } else {
        let path = keel.state.path("initial-admin-password");
        crate::store::write_atomic(&path, format!("{password}\n").as_bytes(), 0o600)?;
        log::info!("created Administrator account {user}; its password is in {}", path.display());
    }
    Ok(())
}

pub async fn run(opts: ServeOpts) -> io::Result<Exit> {
    let addr: std::net::SocketAddr = opts.listen.parse().map_err(|e| err(format!("--listen {}: {e}", opts.listen)))?;
    let state_dir = opts.config.state_dir.clone();
    std::fs::create_dir_all(&state_dir)?;
    // A factory reset or a configuration import finishes here, before anything loads the state.
    crate::reset::apply_pending(&state_dir, opts.bootstrap_admin_file.as_deref())?;
    crate::backup::recover(&state_dir)?;
    let (cert, key, self_signed) = match (&opts.tls_cert, &opts.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), false),
        (None, None) => {
            let (c, k) = crate::tls::ensure_self_signed(&state_dir).map_err(err)?;
            (c, k, true)
        }
        _ => return Err(err("--tls-cert and --tls-key go together")),
    };
    let cfg = Config { page_size: opts.config.page_size.max(1), base_url: format!("https://{addr}"), port: addr.port(), self_signed, ..opts.config.clone() };
    let max_body = cfg.max_body;
    let keel = Keel::open(cfg)?;
    bootstrap_admin(&keel, opts.bootstrap_admin_file.as_ref())?;
    crate::events::start_delivery(&keel.events);
    let tls = crate::tls::acceptor(&cert, &key, opts.tls_client_ca.as_deref()).map_err(err)?;
    let srv = web::Data::new(Server { keel: keel.clone(), tree: Arc::new(crate::tree::Tree::build()), write_gate: Default::default() });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(srv.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .default_service(web::to(dispatch))
    })
    .on_connect(crate::tls::on_connect)
    .workers(opts.workers.max(1))
    .backlog(1024)
    .shutdown_timeout(5)
    // A client that closes its end ends its response (an SSE stream) at once.
    .h1_allow_half_closed(false)
    .disable_signals()
    .bind_openssl(addr, tls)?
    .run();
    let handle = server.handle();
    log::info!("keeld listening on https://{addr}/redfish/v1");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    let inventory_refresh = if opts.inventory_refresh > 0 {
        let k = keel.clone();
        let every = std::time::Duration::from_secs(opts.inventory_refresh);
        Some(actix_web::rt::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let k2 = k.clone();
                let _ = web::block(move || k2.refresh_inventory()).await;
            }
        }))
    } else {
        None
    };
    // keeld answers: the boot that started it is good (systemd-bless-boot's job on a Keel image).
    match keel.updates.slots.bless() {
        Ok(Some(e)) => log::info!("slots: boot entry blessed as {e}"),
        Ok(None) => {}
        Err(e) => log::warn!("slots: cannot bless the booted entry: {e}"),
    }
    // Staged updates waiting for their maintenance window.
    let k = keel.clone();
    let update_timer = actix_web::rt::spawn(async move {
        let mut n: u64 = 0;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            // The update policy's periodic check of the signed index.
            n += 1;
            if n % 5 == 0 {
                crate::tree::update::check_if_due(&k);
            }
            if k.updates.pending().is_some() {
                let k2 = k.clone();
                let _ = web::block(move || k2.updates.tick(chrono::Utc::now())).await;
            }
        }
    });
    // On a live machine the kernel's device events trigger a re-read at once.
    if keel.host.is_live() {
        let k = keel.clone();
        if let Err(e) = crate::inventory::uevent::spawn(std::time::Duration::from_millis(300), move || k.refresh_inventory()) {
            log::warn!("no hot-plug monitor ({e}): devices are found by the periodic re-read only");
        }
    }
    let chores = keel.clone();
    let sweeper = actix_web::rt::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(15)).await;
            for s in chores.sessions.expire() {
                log::info!("session {} of {} timed out", s.id, s.user_name);
            }
            chores.sessions.flush_if_dirty();
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let server = actix_web::rt::spawn(server);
    let exit = tokio::select! {
        _ = keel.restart.notified() => Exit::Restart,
        _ = term.recv() => Exit::Stopped,
        _ = tokio::signal::ctrl_c() => Exit::Stopped,
    };
    log::info!("{}", if exit == Exit::Restart { "restarting keeld" } else { "stopping keeld" });
    // A restart re-executes keeld in place (same PID): for systemd that is a reload, which the new
    // process ends with READY=1; anything else is a stop.
    if exit == Exit::Restart {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading, sd_notify::NotifyState::monotonic_usec_now().unwrap_or(sd_notify::NotifyState::MonotonicUsec(0))]);
    } else {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    }
    // Open SSE streams would hold a graceful stop until its timeout: end them first.
    keel.events.close_all_sse();
    handle.stop(true).await;
    let _ = server.await;
    sweeper.abort();
    update_timer.abort();
    if let Some(t) = inventory_refresh {
        t.abort();
    }
    keel.sessions.flush_if_dirty();
    Ok(exit)
}
