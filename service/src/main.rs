use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "keeld", version, about = "Keel's Redfish service daemon")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum HostCmd {
    /// Capture what keeld reads of this machine into DIR (a fixture for --host-root).
    Record { dir: PathBuf },
    /// Time `Inventory::build` on a recorded machine (bench/inventory.sh): min/median of N runs.
    #[command(hide = true)]
    BenchInventory {
        dir: PathBuf,
        #[arg(long, default_value_t = 50)]
        runs: usize,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the Redfish API over HTTPS.
    Serve {
        /// Address and port to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Where accounts, sessions, subscriptions, settings and the TLS certificate live.
        #[arg(long, default_value = "/var/lib/keel")]
        state_dir: PathBuf,
        /// PEM certificate chain (with --tls-key); without both a self-signed one is made.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// CA whose client certificates log in as the account named by their subject CN.
        #[arg(long)]
        tls_client_ca: Option<PathBuf>,
        /// A `user:password` line: the first Administrator when no account exists.
        #[arg(long)]
        bootstrap_admin_file: Option<PathBuf>,
        /// A systemd credential NAME holding that `user:password` line
        /// (`$CREDENTIALS_DIRECTORY/NAME`, e.g. from `ImportCredential=`); ignored when absent or
        /// when --bootstrap-admin-file is given.
        #[arg(long, value_name = "NAME")]
        bootstrap_admin_credential: Option<String>,
        /// HTTP worker threads (default: one per CPU).
        #[arg(long)]
        workers: Option<usize>,
        /// Most members returned in one collection page.
        #[arg(long, default_value_t = 1000)]
        page_size: usize,
        /// Largest request body accepted, in bytes.
        #[arg(long, default_value_t = 1 << 20)]
        max_body: usize,
        /// Serve a machine recorded by `keeld host record` instead of this one.
        #[arg(long)]
        host_root: Option<PathBuf>,
        /// Seconds between inventory re-reads that find hot-plugged and removed devices (0: off).
        #[arg(long, default_value_t = 10)]
        inventory_refresh: u64,
        /// Seconds between smartctl runs for one drive (at start, for a new drive at once; then
        /// at most this often; a drive in standby is not woken). 0: on every inventory refresh.
        #[arg(long, default_value_t = 600)]
        smart_interval: u64,
        /// The TPM's TCTI, e.g. `swtpm:host=127.0.0.1,port=2321` (default: device:/dev/tpmrm0 if present).
        #[arg(long)]
        tpm_tcti: Option<String>,
    },
    /// Work with the host root.
    Host {
        #[command(subcommand)]
        cmd: HostCmd,
    },
    /// Print the OpenAPI document (YAML).
    Openapi,
}

/// Keep the heap small: argon2 allocates 19 MiB per verification, and glibc's dynamic mmap
/// threshold would otherwise keep such blocks in per-thread arenas for good.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Times `Inventory::build` on a fixture, three ways: cold (a new SMART cache each time, so every
/// drive's smartctl output is replayed from its file and parsed), SMART skipped, and a refresh
/// within `--smart-interval` (the kept SMART results, no smartctl). One `name min median` line each.
fn bench_inventory(dir: &std::path::Path, runs: usize) {
    use keeld::inventory::{storage::SmartCache, Inventory};
    use std::time::{Duration, Instant};
    let host = keeld::host::Host::fixture(dir);
    let time = |f: &dyn Fn() -> Inventory| {
        let mut t: Vec<Duration> = (0..runs)
            .map(|_| {
                let s = Instant::now();
                std::hint::black_box(f());
                s.elapsed()
            })
            .collect();
        t.sort();
        (t[0], t[t.len() / 2])
    };
    let warm = SmartCache::new(Duration::from_secs(3600));
    let inv = Inventory::build(&host, Some(&warm));
    let drives: usize = inv.storage.iter().map(|c| c.drives.len()).sum();
    let with_smart = inv.storage.iter().flat_map(|c| &c.drives).filter(|d| d.smart.is_some()).count();
    println!("# {} drives ({} with SMART data), {} runs each", drives, with_smart, runs);
    for (name, (min, median)) in [
        ("cold_smart_replayed", time(&|| Inventory::build(&host, Some(&SmartCache::new(Duration::ZERO))))),
        ("smart_skipped", time(&|| Inventory::build(&host, None))),
        ("refresh_smart_kept", time(&|| Inventory::build(&host, Some(&warm)))),
    ] {
        println!("{name} {:.3} {:.3}", min.as_secs_f64() * 1e3, median.as_secs_f64() * 1e3);
    }
}

/// `$CREDENTIALS_DIRECTORY/NAME` when systemd passed that credential to the service.
fn credential_file(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('/') {
        log::warn!("--bootstrap-admin-credential {name:?}: not a credential name");
        return None;
    }
    let path = PathBuf::from(std::env::var_os("CREDENTIALS_DIRECTORY")?).join(name);
    path.is_file().then_some(path)
}

fn main() {
    tune_allocator();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,actix_server=warn")).format_target(false).init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Openapi => {
            use std::io::Write;
            // A closed pipe (`keeld openapi | head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(keeld::openapi::yaml(keeld::tree::global()).as_bytes());
        }
        Cmd::Host { cmd: HostCmd::Record { dir } } => match keeld::host::record::record(&keeld::host::Host::live(), &dir) {
            Ok((files, commands)) => log::info!("recorded {files} files and {commands} command outputs into {}", dir.display()),
            Err(e) => {
                log::error!("recording into {}: {e}", dir.display());
                std::process::exit(1);
            }
        },
        Cmd::Host { cmd: HostCmd::BenchInventory { dir, runs } } => bench_inventory(&dir, runs.max(1)),
        Cmd::Serve { listen, state_dir, tls_cert, tls_key, tls_client_ca, bootstrap_admin_file, bootstrap_admin_credential, workers, page_size, max_body, host_root, inventory_refresh, smart_interval, tpm_tcti } => {
            let bootstrap_admin_file = bootstrap_admin_file.or_else(|| credential_file(bootstrap_admin_credential.as_deref()?));
            let opts = keeld::server::ServeOpts {
                listen,
                state_dir,
                tls_cert,
                tls_key,
                tls_client_ca,
                bootstrap_admin_file,
                workers: workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)),
                page_size,
                max_body,
                host_root,
                inventory_refresh,
                smart_interval,
                tpm_tcti,
            };
            match actix_web::rt::System::new().block_on(keeld::server::run(opts)) {
                Ok(keeld::server::Exit::Stopped) => {}
                Ok(keeld::server::Exit::Restart) => {
                    use std::os::unix::process::CommandExt;
                    let e = std::process::Command::new("/proc/self/exe").args(std::env::args_os().skip(1)).exec();
                    log::error!("re-exec failed: {e}");
                    std::process::exit(1);
                }
                Err(e) => {
                    log::error!("{e}");
                    std::process::exit(1);
                }
            }
        }
    }
}
