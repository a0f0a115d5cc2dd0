//! `fake-logind --bus ADDRESS [--unit NAME --invocation-id HEX32 --main-pid-file FILE]`
//!
//! Plays systemd-logind and systemd on the private bus at ADDRESS for tests/test_power.py (see
//! service/tests/support/fake_systemd.rs for what it serves). Prints `READY` once it owns both
//! names, then one JSON line per call it receives: `{"service", "method", "args", "outcome"}`.
//! Runs until killed.

#[path = "../tests/support/fake_systemd.rs"]
mod fake_systemd;

use fake_systemd::{FakeSystemd, MainPid, Recorder, UnitSpec};
use std::io::Write;
use std::sync::Arc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let usage = || -> ! {
        eprintln!("usage: fake-logind --bus ADDRESS [--unit NAME --invocation-id HEX32 --main-pid-file FILE]");
        std::process::exit(2)
    };
    let bus = opt("--bus").unwrap_or_else(|| usage());
    let unit = opt("--unit").map(|name| {
        let hex = opt("--invocation-id").unwrap_or_else(|| usage());
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = hex.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).unwrap_or_else(|| usage());
        }
        let main_pid = MainPid::File(opt("--main-pid-file").unwrap_or_else(|| usage()).into());
        UnitSpec { name, invocation_id: id, main_pid }
    });
    let rec = Arc::new(Recorder::with_sink(Box::new(|c| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", c.to_json());
        let _ = out.flush();
    })));
    let _fake = match FakeSystemd::start(&bus, rec, unit) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake-logind: {bus}: {e}");
            std::process::exit(1);
        }
    };
    println!("READY");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
