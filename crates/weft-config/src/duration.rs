//! Go-style durations (`2s`, `1h30m`, `1.5h`, `250ms`), as Dapr's Configuration writes them.

use std::time::Duration;

/// Parses a non-negative Go duration. Units: `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`; a bare `0`
/// is zero. Returns a message saying what is wrong on failure.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.starts_with('-') {
        return Err(format!("duration '{text}' is negative"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut rest = s;
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "duration '{text}': expected a number at '{rest}' (write e.g. 30s, 1h30m, 24h)"
            ));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("duration '{text}': '{}' is not a number", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(format!(
                    "duration '{text}' has no unit (use ns, us, ms, s, m or h)"
                ));
            }
            other => {
                return Err(format!(
                    "duration '{text}': unknown unit '{other}' (use ns, us, ms, s, m or h)"
                ));
            }
        };
        total_nanos += number * scale;
        rest = &rest[unit_len..];
    }
    // Go's time.Duration is an int64 of nanoseconds: larger values are refused there too.
    if !total_nanos.is_finite() || total_nanos > i64::MAX as f64 {
        return Err(format!("duration '{text}' is too large"));
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// Renders a duration the way Go prints it (`1h30m0s`, `2s`, `250ms`), for logs and `config check`.
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        return if nanos.is_multiple_of(1_000_000) {
            format!("{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            format!("{}us", nanos / 1_000)
        } else {
            format!("{nanos}ns")
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let frac = d.subsec_nanos();
    let sec = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{:09}", frac);
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => sec,
        (0, m) => format!("{m}m{sec}"),
        (h, m) => format!("{h}h{m}m{sec}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_forms() {
        let d = |s| parse_go_duration(s).unwrap();
        assert_eq!(d("2s"), Duration::from_secs(2));
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("24h"), Duration::from_secs(86400));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("1m0.5s"), Duration::from_millis(60_500));
        assert_eq!(d("10us"), Duration::from_micros(10));
        assert_eq!(d("10µs"), Duration::from_micros(10));
    }

    #[test]
    fn refuses_bad_forms() {
        for bad in ["", "2", "-1s", "2 days", "1d", "h", "1.2.3s", "s1", "1e3s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(format_go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
    }
}
