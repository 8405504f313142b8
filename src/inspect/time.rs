//! RFC 3339 timestamps, written and read by hand (UTC, nanoseconds since the Unix epoch).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `nanos` since the Unix epoch as RFC 3339 in UTC with nine fraction digits:
/// `2026-12-06T10:00:00.000000000Z`.
pub(crate) fn format(nanos: u64) -> String {
    let secs = nanos / 1_000_000_000;
    let fraction = nanos % 1_000_000_000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:09}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Reads an RFC 3339 time (`2026-12-06T10:00:00Z`, `2026-12-06T10:00:00.5+01:00`; `T` may be
/// `t` or a space, `Z` may be `z`); `None` if it is not one, or before the Unix epoch.
pub(crate) fn parse(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let separators = b[4] == b'-' && b[7] == b'-' && b[13] == b':' && b[16] == b':';
    if !separators || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut nanos: u64 = 0;
    if b[at] == b'.' {
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            if at - start < 9 {
                nanos = nanos * 10 + u64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return None;
        }
        for _ in (at - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(at..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| -> Option<i64> {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let (h, m) = (two(*h1, *h2)?, two(*m1, *m2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset * 60;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, u32::try_from(nanos).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of `days` since 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(t: SystemTime) -> u64 {
        u64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap()
    }

    #[test]
    fn formats_and_parses_back() {
        assert_eq!(format(0), "1970-01-01T00:00:00.000000000Z");
        let t = parse("2026-12-06T10:00:00Z").unwrap();
        assert_eq!(nanos(t), 1_796_551_200_000_000_000);
        assert_eq!(format(nanos(t)), "2026-12-06T10:00:00.000000000Z");
        for n in [1, 951_782_400_123_456_789, 4_107_542_399_999_999_999] {
            assert_eq!(nanos(parse(&format(n)).unwrap()), n, "{}", format(n));
        }
        // Leap day, offsets, a short fraction, lower case.
        assert_eq!(
            format(nanos(parse("2024-02-29t23:30:00.5-01:00").unwrap())),
            "2024-03-01T00:30:00.500000000Z"
        );
        assert_eq!(
            nanos(parse("2026-12-06 11:00:00+01:00").unwrap()),
            1_796_551_200_000_000_000
        );
    }

    #[test]
    fn refuses_what_is_not_rfc_3339() {
        for bad in [
            "",
            "2026-12-06",
            "2026-12-06T10:00:00",
            "2026-13-06T10:00:00Z",
            "2025-02-29T10:00:00Z",
            "2026-12-06T24:00:00Z",
            "2026-12-06T10:00:00.Z",
            "2026-12-06T10:00:00+0100",
            "1969-12-31T23:59:59Z",
            "2026-12-06X10:00:00Z",
            "+026-12-06T10:00:00Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
