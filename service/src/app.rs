//! The daemon's shared state: configuration, stores, event bus.

use crate::auth::{Accounts, Sessions};
use crate::events::EventBus;
use crate::host::Host;
use crate::inventory::Inventory;
use crate::store::StateDir;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Config {
    pub state_dir: PathBuf,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Server-driven paging: the most members one collection response carries.
    pub page_size: usize,
    /// The URL the service is reached at, as logged and used in the Manager.
    pub base_url: String,
    /// The HTTPS port (shown in ManagerNetworkProtocol).
    pub port: u16,
    /// Whether the certificate in use is the one keeld generated.
    pub self_signed: bool,
    /// A recorded machine to serve instead of this one (`--host-root`).
    pub host_root: Option<PathBuf>,
    /// The TPM's TCTI (`--tpm-tcti`); `None`: `/dev/tpmrm0` on a live machine, if present.
    pub tpm_tcti: Option<String>,
    /// Seconds between smartctl runs for one drive (`--smart-interval`); sysfs is read on every
    /// inventory refresh.
    pub smart_interval: u64,
    /// `--power`: how ComputerSystem.Reset acts (logind on a Keel image, else simulated).
    pub power: crate::power::PowerMode,
    /// `--power-bus`: the D-Bus address logind and systemd are reached at (default: the system bus).
    pub power_bus: Option<String>,
    /// Simulated LUKS2 volumes and data drives (`--crypt-volume NAME=PATH`).
    pub crypt_volumes: Vec<crate::crypt::SimDisk>,
    /// Where the A/B slot engine acts (`--platform`): `simulated`, `real` or `auto` (real on a
    /// Keel image, simulated elsewhere). See `slots::open_configured`.
    pub platform: String,
    /// The CA an update bundle's signer must chain to (`--update-ca`).
    pub update_ca: PathBuf,
    /// Size of each usr partition of a newly created simulated disk (`--sim-usr-size`).
    pub sim_usr_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { state_dir: PathBuf::from("/var/lib/keel"), max_body: 1 << 20, page_size: 1000, base_url: String::new(), port: 8443, self_signed: true, host_root: None, tpm_tcti: None, smart_interval: 600, power: Default::default(), power_bus: None, crypt_volumes: vec![], platform: "auto".into(), update_ca: PathBuf::from(crate::slots::DEFAULT_UPDATE_CA), sim_usr_size: crate::slots::DEFAULT_SIM_USR_SIZE }
    }
}

pub struct Keel {
    pub cfg: Config,
    pub state: StateDir,
    pub accounts: Accounts,
    pub sessions: Sessions,
    pub events: Arc<EventBus>,
    /// Long-running operations (TaskService), persisted in the state directory.
    pub tasks: crate::tasks::Tasks,
    pub service_uuid: String,
    /// When this process started (Manager LastResetTime).
    pub started: chrono::DateTime<chrono::Utc>,
    /// Set by Manager.Reset: the server loop restarts the daemon when notified.
    pub restart: tokio::sync::Notify,
    /// The machine (or a recording of one) the inventory is read from.
    pub host: Host,
    /// The inventory as last read: GETs never wait on the machine.
    pub inventory: std::sync::RwLock<Arc<Inventory>>,
    /// SMART results kept between inventory builds.
    pub smart: crate::inventory::storage::SmartCache,
    /// The systemd journal, read on demand and cached briefly.
    pub journal: crate::inventory::journal::Journal,
    /// The host's TPM, when one answered at start.
    pub tpm: Option<crate::tpm::Tpm>,
    /// One inventory re-read at a time (the periodic one and the hot-plug monitor's), so each
    /// change is announced once.
    refresh_lock: std::sync::Mutex<()>,
    /// How the host is reset (logind, or the simulated platform).
    pub power: Box<dyn crate::power::PowerBackend>,
    /// LUKS2 volumes, TPM2 bindings and recovery keys.
    pub crypt: crate::crypt::Crypt,
    /// The A/B slot engine and the updates driven through it.
    pub updates: Arc<crate::update::Updates>,
}

impl Keel {
    pub fn inventory(&self) -> Arc<Inventory> {
        self.inventory.read().unwrap().clone()
    }

    /// Read the machine again; announce what appeared and what went away, then serve the new
    /// inventory. Blocking (it reads sysfs): run it off the request threads.
    pub fn refresh_inventory(&self) {
        let _one = self.refresh_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut new = Inventory::build(&self.host, Some(&self.smart));
        self.crypt.refresh(&self.host, &mut new);
        let new = Arc::new(new);
        let old = self.inventory();
        let (before, after) = (old.resources(), new.resources());
        *self.inventory.write().unwrap() = new;
        for (uri, ty) in after.iter().filter(|(u, _)| !before.contains_key(*u)) {
            log::info!("inventory: {uri} appeared");
            self.events.inventory_event(true, uri, ty);
        }
        for (uri, ty) in before.iter().filter(|(u, _)| !after.contains_key(*u)) {
            log::info!("inventory: {uri} went away");
            self.events.inventory_event(false, uri, ty);
        }
    }

    pub fn open(cfg: Config) -> std::io::Result<Arc<Keel>> {
        let state = StateDir::open(&cfg.state_dir)?;
        let service_uuid = match std::fs::read_to_string(state.path("service-uuid")) {
            Ok(s) if uuid::Uuid::parse_str(s.trim()).is_ok() => s.trim().to_string(),
            _ => {
                let u = uuid::Uuid::new_v4().to_string();
                crate::store::write_atomic(&state.path("service-uuid"), u.as_bytes(), 0o600)?;
                u
            }
        };
        let events = Arc::new(EventBus::open(state.clone())?);
        let tasks = crate::tasks::Tasks::open(&state, events.clone())?;
        let host = match &cfg.host_root {
            Some(d) => Host::fixture(d),
            None => Host::live(),
        };
        let smart = crate::inventory::storage::SmartCache::new(std::time::Duration::from_secs(cfg.smart_interval));
        let crypt = crate::crypt::Crypt::open(&cfg.state_dir, cfg.crypt_volumes.clone(), cfg.tpm_tcti.clone(), &host)?;
        let mut inv = Inventory::build(&host, Some(&smart));
        crypt.refresh(&host, &mut inv);
        if crypt.adopt() {
            inv = Inventory::build(&host, Some(&smart));
            crypt.refresh(&host, &mut inv);
        }
        let inventory = std::sync::RwLock::new(Arc::new(inv));
        let tpm = crate::tpm::Tpm::probe(crate::tpm::default_tcti(cfg.tpm_tcti.clone(), host.is_live()), &state.path("attestation-ca.pem"))
            // A recorded machine without --tpm-tcti: the TPM it had, as recorded (read-only).
            .or_else(|| (!host.is_live() && cfg.tpm_tcti.is_none()).then(|| crate::tpm::Tpm::recorded(&host)).flatten());
        // The simulated platform's reset hook: where the A/B engine's simulated reboot goes.
        let slots = crate::slots::open_configured(&cfg)?;
        log::info!("slots: {} platform, running {}", slots.platform(), slots.running_version().unwrap_or_else(|| "an unknown version".into()));
        let updates = Arc::new(crate::update::Updates::open(slots, cfg.update_ca.clone(), state.clone(), events.clone())?);
        // The simulated platform's resets are the A/B engine's simulated reboots.
        let u = updates.clone();
        let hook: crate::power::ResetHook = Box::new(move |k| if k.boots() { u.simulated_reboot().map(|_| ()) } else { Ok(()) });
        let power = crate::power::select(cfg.power, cfg.power_bus.clone(), &state, host.is_live(), hook)?;
        log::info!("power: {}", power.name());
        let keel = Arc::new(Keel {
            accounts: Accounts::open(state.clone())?,
            sessions: Sessions::open(state.clone())?,
            events,
            tasks,
            service_uuid,
            started: chrono::Utc::now(),
            restart: tokio::sync::Notify::new(),
            host,
            inventory,
            smart,
            journal: Default::default(),
            tpm,
            refresh_lock: Default::default(),
            power,
            crypt,
            updates,
            state,
            cfg,
        });
        // An update applied `Immediate` (or activated) restarts the machine as a GracefulRestart.
        let weak = Arc::downgrade(&keel);
        keel.updates.set_restart(Box::new(move || {
            let k = weak.upgrade().ok_or("keeld is stopping")?;
            k.power.reset(crate::power::ResetKind::GracefulRestart).map_err(|e| e.to_string())
        }));
        Ok(keel)
    }
}
