//! Record times: kernel `CLOCK_BOOTTIME` stamps to wall-clock time, and wall-clock time to
//! the records' RFC 3339 text (and back).

use std::time::{Duration, SystemTime};

use super::ShortStr;

/// Converts kernel `CLOCK_BOOTTIME` stamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// Wall-clock time at boot (realtime - boottime, taken once at start).
    boot: SystemTime,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
        let since_boot = Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        );
        Self {
            boot: SystemTime::now()
                .checked_sub(since_boot)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }

    pub(crate) fn wall(&self, boot_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(boot_ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// [`rfc3339`] for a stream of times that mostly share their second (the pipeline's
/// records): the calendar part is computed once per second, the nanoseconds by hand. The
/// full conversion (`time`'s calendar arithmetic and `format!`) was a tenth of the
/// pipeline thread's time per event.
#[derive(Debug, Default)]
pub(crate) struct Rfc3339Cache {
    /// Whole seconds since the epoch of `prefix`, and `YYYY-MM-DDTHH:MM:SS` of them.
    second: Option<u64>,
    prefix: ShortStr,
}

impl Rfc3339Cache {
    pub(crate) fn format(&mut self, t: SystemTime) -> ShortStr {
        // Before the epoch: not worth a cache (a clock that far off is rare).
        let Ok(since) = t.duration_since(SystemTime::UNIX_EPOCH) else {
            return rfc3339(t).into();
        };
        let second = since.as_secs();
        if self.second != Some(second) {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(second);
            let mut full = rfc3339(whole);
            // `.000000000Z`: the fraction and the zone, appended below.
            full.truncate(full.len() - 11);
            self.prefix = full.into();
            self.second = Some(second);
        }
        let mut out = self.prefix.clone();
        let mut fraction = *b".000000000Z";
        let mut nanos = since.subsec_nanos();
        for d in fraction[1..10].iter_mut().rev() {
            // `nanos % 10` is a digit: it always fits.
            *d = b'0' + u8::try_from(nanos % 10).unwrap_or(0);
            nanos /= 10;
        }
        // ASCII only: always a `str`.
        out.push_str(std::str::from_utf8(&fraction).unwrap_or_default());
        out
    }
}

/// RFC 3339 in UTC with exactly nine fractional digits, so records sort and parse alike.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.nanosecond()
    )
}

/// The inverse of [`rfc3339`]: `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (the records' `time`) as
/// nanoseconds since the epoch.
pub(crate) fn parse_rfc3339_nanos(text: &str) -> Option<u64> {
    let utc = text.strip_suffix('Z')?;
    let (date, clock) = utc.split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(str::parse::<i32>);
    let (year, month, day) = (ymd.next()?.ok()?, ymd.next()?.ok()?, ymd.next()?.ok()?);
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut parts = hms.splitn(3, ':').map(str::parse::<u8>);
    let (hour, minute, second) = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date = time::Date::from_calendar_date(year, month, u8::try_from(day).ok()?).ok()?;
    let at = date.with_hms(hour, minute, second).ok()?.assume_utc();
    let mut nanos: u32 = 0;
    if !frac.is_empty() {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        nanos = format!("{frac:0<9}").parse().ok()?;
    }
    let secs = u64::try_from(at.unix_timestamp()).ok()?;
    Some(secs * 1_000_000_000 + u64::from(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_keeps_nanoseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_800_000_000, 123_456_789);
        assert_eq!(rfc3339(t), "2027-01-15T08:00:00.123456789Z");
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_800_000_000, 120_000_000);
        assert_eq!(
            rfc3339(t),
            "2027-01-15T08:00:00.120000000Z",
            "trailing zeros are kept"
        );
    }

    #[test]
    fn the_cache_formats_as_rfc3339_does() {
        let mut cache = Rfc3339Cache::default();
        for (secs, nanos) in [
            (1_800_000_000, 123_456_789),
            (1_800_000_000, 0),
            (1_800_000_000, 999_999_999),
            // The next second, the next day, back again: the prefix follows.
            (1_800_000_001, 5),
            (1_800_086_400, 120_000_000),
            (1_800_000_000, 7),
            (0, 1),
        ] {
            let t = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
            assert_eq!(cache.format(t).as_str(), rfc3339(t), "{secs}.{nanos:09}");
        }
    }

    #[test]
    fn clock_maps_boot_time_near_now() {
        let c = Clock::new();
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
        #[expect(clippy::cast_sign_loss, reason = "non-negative")]
        let now_ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        let skew = c
            .wall(now_ns)
            .duration_since(SystemTime::now())
            .unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(1), "skew {skew:?}");
    }
}
