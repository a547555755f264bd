//! What every process benchmark prints and reads the same way: numbers
//! from the environment and figures. Each bench declares `mod common;`.

use std::fmt::Display;
use std::time::Duration;

/// `name` from the environment as a number (`_` and `,` allowed between
/// digits), or `default` (said on stderr when the value is not a number).
pub fn env_u64(name: &str, default: u64) -> u64 {
    let Ok(v) = std::env::var(name) else {
        return default;
    };
    let digits: String = v.chars().filter(|c| !matches!(c, '_' | ',')).collect();
    digits.trim().parse().unwrap_or_else(|_| {
        eprintln!("{name}={v:?} is not a number; using {default}");
        default
    })
}

/// One figure: `  what: value`.
pub fn fig(what: impl Display, value: impl Display) {
    println!("  {what}: {value}");
}

/// A duration as seconds with two decimals.
pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}
