//! Go-style durations (`720h`, `1h30m`, `90s`), as Flux and IPFS Cluster write them.

use std::time::Duration;

use super::diag::shown;

/// Parses a Go duration string. Units: `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`;
/// one or more `<number><unit>` terms, decimals allowed (`1.5h`). A bare `0` is
/// zero. Negative durations are rejected.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(format!("negative duration {}", shown(input)));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "invalid duration {}: expected a number",
                shown(input)
            ));
        }
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().map_err(|_| {
            format!(
                "invalid duration {}: bad number {}",
                shown(input),
                shown(num)
            )
        })?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(format!(
                    "invalid duration {}: missing unit (h, m, s, ms)",
                    shown(input)
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration {}: unknown unit {} (use h, m, s, ms, us, ns)",
                    shown(input),
                    shown(other)
                ));
            }
        };
        total += value * nanos_per_unit;
        rest = tail;
    }
    // 2^63 ns is Go's limit too (about 292 years).
    if total >= 9.2e18 {
        return Err(format!("duration {} is too long", shown(input)));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Formats a duration the way Go prints it (`720h0m0s`, `1.5s`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let total_ns = d.as_nanos();
    if total_ns == 0 {
        return "0s".into();
    }
    if total_ns < 1_000_000_000 {
        return if total_ns.is_multiple_of(1_000_000) {
            format!("{}ms", total_ns / 1_000_000)
        } else if total_ns.is_multiple_of(1_000) {
            format!("{}us", total_ns / 1_000)
        } else {
            format!("{total_ns}ns")
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let frac = d.subsec_nanos();
    let sec_str = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:09}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    if h > 0 {
        format!("{h}h{m}m{sec_str}")
    } else if m > 0 {
        format!("{m}m{sec_str}")
    } else {
        sec_str
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(
            parse_duration("720h").unwrap(),
            Duration::from_secs(720 * 3600)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in ["", "10", "5d", "-1h", "h", "1h-5m", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_duration(Duration::from_secs(720 * 3600)), "720h0m0s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        for s in ["720h0m0s", "1.5s", "1m30s", "250ms"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
