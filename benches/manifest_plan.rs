//! Manifest loading and planning at mirror scale. Prints figures; asserts
//! nothing about time (rule: speed is measured, not asserted).
//!
//! `cargo bench --bench manifest_plan` (PINFLEET_BENCH_PINS=N to resize).

use std::io::Write;
use std::time::Instant;

use pinfleet::manifest::{CidKey, Limits, load_paths};
use pinfleet::plan::{PruneGuard, plan_pinset};
use pinfleet::state::PinState;

fn cid(i: u64) -> String {
    pinfleet::testkit::seq_cid(i).to_string()
}

fn write_set(dir: &std::path::Path, n: u64, shift: u64) {
    let mut list =
        std::io::BufWriter::new(std::fs::File::create(dir.join("list.txt")).expect("create list"));
    for i in shift..n + shift {
        writeln!(list, "{} pkg-{i}", cid(i)).expect("write list");
    }
    list.flush().expect("flush list");
    std::fs::write(
        dir.join("set.yaml"),
        "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata: {name: big}\nspec:\n  defaults: {replication: {min: 2, max: 3}}\n  pinsFrom: [{path: list.txt}]\n",
    )
    .expect("write manifest");
}

fn main() {
    let n: u64 = std::env::var("PINFLEET_BENCH_PINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    write_set(dir.path(), n, 0);
    let bytes = std::fs::metadata(dir.path().join("list.txt"))
        .expect("list")
        .len();

    let t = Instant::now();
    let loaded = load_paths(&[dir.path()], &Limits::default()).expect("load");
    let load = t.elapsed();
    let ps = &loaded.pinsets[0];
    assert_eq!(ps.pins.len() as u64, n);
    println!(
        "load {n} CIDs ({:.1} MiB list): {:.3} s, {:.0} CIDs/s",
        bytes as f64 / 1048576.0,
        load.as_secs_f64(),
        n as f64 / load.as_secs_f64()
    );

    let mut state = PinState::new();
    let owner = ps.owner();
    let t = Instant::now();
    let p = plan_pinset(ps, &state.owned_by(&owner), PruneGuard::default()).expect("plan");
    let plan_full = t.elapsed();
    let t = Instant::now();
    state.apply(&p);
    let apply_full = t.elapsed();
    println!(
        "plan {n} adds against an empty state: {:.3} s; apply: {:.3} s",
        plan_full.as_secs_f64(),
        apply_full.as_secs_f64()
    );

    let t = Instant::now();
    let current = state.owned_by(&owner);
    let owned = t.elapsed();
    let t = Instant::now();
    let p = plan_pinset(ps, &current, PruneGuard::default()).expect("plan");
    assert!(p.is_empty());
    println!(
        "no-op plan of {n} pins: owned_by {:.3} s + plan {:.3} s",
        owned.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );

    // The hourly sync: 1% of the list replaced.
    let shift = n / 100;
    write_set(dir.path(), n, shift);
    let t = Instant::now();
    let loaded = load_paths(&[dir.path()], &Limits::default()).expect("load");
    let reload = t.elapsed();
    let t = Instant::now();
    let p = plan_pinset(&loaded.pinsets[0], &current, PruneGuard::default()).expect("plan");
    let plan_delta = t.elapsed();
    assert_eq!(p.add.len() as u64, shift);
    assert_eq!(p.release.len() as u64, shift);
    println!(
        "1% change ({shift} added, {shift} released): reload {:.3} s, plan {:.3} s",
        reload.as_secs_f64(),
        plan_delta.as_secs_f64()
    );

    let t = Instant::now();
    let mut ok = 0u64;
    for i in 0..n {
        if CidKey::parse(&cid(i)).is_ok() {
            ok += 1;
        }
    }
    let parse = t.elapsed();
    println!(
        "CID parse + normalise: {:.0} ns/CID ({ok} parsed)",
        parse.as_nanos() as f64 / n as f64
    );
}
