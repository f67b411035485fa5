//! Conversions between protobuf timestamps and [`Micros`], saturating instead of overflowing.

use crate::Micros;
use prost_types::Timestamp;

/// `fireAt` of the SDKs' "wait forever" timer: 9999-12-31T23:59:59.999999999Z.
pub const SENTINEL_SECONDS: i64 = 253_402_300_799;

/// Timers at or after this instant (9999-01-01T00:00:00Z) never fire: they are sentinels.
pub const NEVER_FIRES_FROM: Micros = 253_370_764_800_000_000;

pub fn to_micros(ts: &Timestamp) -> Micros {
    ts.seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(ts.nanos) / 1_000)
}

pub fn from_micros(us: Micros) -> Timestamp {
    Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// True for timers that must never fire (the SDKs' indefinite-wait sentinel and anything as far).
pub fn is_never(ts: &Timestamp) -> bool {
    ts.seconds >= SENTINEL_SECONDS || to_micros(ts) >= NEVER_FIRES_FROM
}

/// RFC 3339 with microseconds, UTC (`2026-08-01T10:00:00.123456Z`), as Dapr's HTTP API prints.
pub fn rfc3339(us: Micros) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

// Howard Hinnant's days-to-civil algorithm: exact for the whole proleptic Gregorian range.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_saturation() {
        let ts = Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_000,
        };
        assert_eq!(from_micros(to_micros(&ts)), ts);
        let huge = Timestamp {
            seconds: i64::MAX,
            nanos: 999_999_999,
        };
        assert_eq!(to_micros(&huge), i64::MAX);
    }

    #[test]
    fn sentinel_never_fires() {
        let s = Timestamp {
            seconds: SENTINEL_SECONDS,
            nanos: 999_999_999,
        };
        assert!(is_never(&s));
        assert!(!is_never(&from_micros(1_700_000_000_000_000)));
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_785_578_400_123_456),
            "2026-08-01T10:00:00.123456Z"
        );
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999Z");
    }
}
