//! Time windows (`hours = { ... }`) and the little civil-calendar arithmetic they need.
//!
//! Everything is integer arithmetic on milliseconds since the Unix epoch: a window is
//! evaluated by shifting `now` by the fixed UTC offset, splitting it into a day number and
//! a time of day, and reading the weekday off the day number (1970-01-01 was a Thursday).

use std::fmt;

use super::config::HoursConfig;

const DAY_MS: i128 = 86_400_000;
const MINUTE_MS: i128 = 60_000;
/// Largest accepted `utc_offset`, in minutes (18 hours, as ISO 8601 allows).
const MAX_OFFSET_MIN: i32 = 18 * 60;

/// Day names, Monday first (index 0 = Monday).
pub(crate) const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL_DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const ALL_DAYS: u8 = 0b111_1111;

/// A checked [`HoursConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hours {
    /// Bit `i` set: open on day `i` (0 = Monday).
    days: u8,
    /// Inclusive start, minutes after local midnight (0..1440).
    from_min: u32,
    /// Exclusive end, minutes after local midnight (1..=1440).
    to_min: u32,
    /// Local time = UTC + this many minutes.
    offset_min: i32,
}

/// Where `now` stands relative to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Window {
    /// Inside; the window (including directly following all-day windows) ends at
    /// `until_ms`, or never when `None` (open all day, every day).
    Inside { until_ms: Option<u64> },
    /// Outside; the next window opens at `next_ms`.
    Outside { next_ms: Option<u64> },
}

impl Hours {
    /// Checks `cfg`, appending one message per problem to `errors` (each prefixed with
    /// `who`, e.g. `rule "x"`). Returns `None` when anything was wrong.
    pub(crate) fn compile(cfg: &HoursConfig, who: &str, errors: &mut Vec<String>) -> Option<Hours> {
        let before = errors.len();
        let mut days = 0u8;
        match &cfg.days {
            None => days = ALL_DAYS,
            Some(list) if list.is_empty() => errors.push(format!(
                "{who}: hours.days: is empty; list days like [\"mon\", \"fri\"] or omit it for every day"
            )),
            Some(list) => {
                for day in list {
                    match parse_day(day) {
                        Some(i) => days |= 1 << i,
                        None => errors.push(format!(
                            "{who}: hours.days: {day:?} is not a day; use mon, tue, wed, thu, fri, sat, sun"
                        )),
                    }
                }
            }
        }
        let from = parse_hhmm(&cfg.from, false);
        if from.is_none() {
            errors.push(format!(
                "{who}: hours.from: {:?} is not a time of day; write HH:MM between 00:00 and 23:59",
                cfg.from
            ));
        }
        let to = parse_hhmm(&cfg.to, true);
        if to.is_none() {
            errors.push(format!(
                "{who}: hours.to: {:?} is not a time of day; write HH:MM between 00:01 and 24:00",
                cfg.to
            ));
        }
        if let (Some(f), Some(t)) = (from, to) {
            if f >= t {
                errors.push(format!(
                    "{who}: hours: from {:?} is not before to {:?}; a window cannot cross midnight, so split it into two rules",
                    cfg.from, cfg.to
                ));
            }
        }
        let offset = match &cfg.utc_offset {
            None => Some(0),
            Some(text) => {
                let parsed = parse_offset(text);
                if parsed.is_none() {
                    errors.push(format!(
                        "{who}: hours.utc_offset: {text:?} is not a UTC offset; write +HH:MM or -HH:MM (e.g. \"+02:00\"), at most 18:00"
                    ));
                }
                parsed
            }
        };
        if errors.len() != before {
            return None;
        }
        Some(Hours {
            days,
            from_min: from?,
            to_min: to?,
            offset_min: offset?,
        })
    }

    fn open_on(&self, day: i128) -> bool {
        self.days & (1 << weekday(day)) != 0
    }

    fn offset_ms(&self) -> i128 {
        i128::from(self.offset_min) * MINUTE_MS
    }

    /// Local day `day` at `minute` minutes after local midnight, as UTC milliseconds.
    fn to_utc_ms(&self, day: i128, minute: u32) -> u64 {
        let ms = day * DAY_MS + i128::from(minute) * MINUTE_MS - self.offset_ms();
        u64::try_from(ms.max(0)).unwrap_or(u64::MAX)
    }

    /// Where `now_ms` stands relative to the window.
    pub(crate) fn check(&self, now_ms: u64) -> Window {
        let local = i128::from(now_ms) + self.offset_ms();
        let day = local.div_euclid(DAY_MS);
        let ms_of_day = local.rem_euclid(DAY_MS);
        let from_ms = i128::from(self.from_min) * MINUTE_MS;
        let to_ms = i128::from(self.to_min) * MINUTE_MS;
        if self.open_on(day) && from_ms <= ms_of_day && ms_of_day < to_ms {
            return Window::Inside {
                until_ms: self.window_end(day),
            };
        }
        // The next opening: later today if the window has not started yet, else the first
        // open day after today (at most a week ahead; `days` is never empty).
        for ahead in 0..=7 {
            let d = day + ahead;
            if !self.open_on(d) || (ahead == 0 && ms_of_day >= from_ms) {
                continue;
            }
            return Window::Outside {
                next_ms: Some(self.to_utc_ms(d, self.from_min)),
            };
        }
        Window::Outside { next_ms: None }
    }

    /// End of the window open on local day `day`. An all-day window running into more
    /// all-day windows ends where the last of them does; open all day every day never ends.
    fn window_end(&self, day: i128) -> Option<u64> {
        let mut last = day;
        if self.from_min == 0 && self.to_min == 24 * 60 {
            if self.days == ALL_DAYS {
                return None;
            }
            while self.open_on(last + 1) {
                last += 1;
            }
        }
        Some(self.to_utc_ms(last, self.to_min))
    }
}

impl fmt::Display for Hours {
    /// E.g. `mon-fri 08:00-18:00 UTC+02:00`, `every day 00:00-06:00 UTC`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.days == ALL_DAYS {
            f.write_str("every day")?;
        } else {
            // Runs of three or more consecutive days are written as ranges (mon-fri).
            let mut first = true;
            let mut i = 0;
            while i < 7 {
                if self.days & (1 << i) == 0 {
                    i += 1;
                    continue;
                }
                let mut j = i;
                while j + 1 < 7 && self.days & (1 << (j + 1)) != 0 {
                    j += 1;
                }
                let sep = if first { "" } else { "," };
                first = false;
                if j >= i + 2 {
                    write!(f, "{sep}{}-{}", DAY_NAMES[i], DAY_NAMES[j])?;
                } else {
                    write!(f, "{sep}{}", DAY_NAMES[i])?;
                    if j > i {
                        write!(f, ",{}", DAY_NAMES[j])?;
                    }
                }
                i = j + 1;
            }
        }
        write!(
            f,
            " {:02}:{:02}-{:02}:{:02} UTC",
            self.from_min / 60,
            self.from_min % 60,
            self.to_min / 60,
            self.to_min % 60
        )?;
        if self.offset_min != 0 {
            let sign = if self.offset_min < 0 { '-' } else { '+' };
            let abs = self.offset_min.unsigned_abs();
            write!(f, "{sign}{:02}:{:02}", abs / 60, abs % 60)?;
        }
        Ok(())
    }
}

/// Weekday of day number `day` (days since 1970-01-01, a Thursday), 0 = Monday.
fn weekday(day: i128) -> usize {
    // The result of rem_euclid(7) is in 0..7.
    (day + 3).rem_euclid(7) as usize
}

fn parse_day(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| *d == lower)
        .or_else(|| FULL_DAY_NAMES.iter().position(|d| *d == lower))
}

/// `HH:MM` as minutes after midnight; `24:00` only when `allow_24` is set.
fn parse_hhmm(text: &str, allow_24: bool) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    if !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    match (h, m) {
        (24, 0) if allow_24 => Some(24 * 60),
        (0..=23, 0..=59) if allow_24 || h * 60 + m < 24 * 60 => Some(h * 60 + m),
        _ => None,
    }
}

/// `+HH:MM` / `-HH:MM` (or `Z` / `UTC`) as minutes east of UTC.
fn parse_offset(text: &str) -> Option<i32> {
    if text == "Z" || text.eq_ignore_ascii_case("utc") {
        return Some(0);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let minutes = i32::try_from(parse_hhmm(rest, true)?).ok()?;
    if minutes > MAX_OFFSET_MIN {
        return None;
    }
    Some(sign * minutes)
}

/// Formats milliseconds since the epoch as `YYYY-MM-DD HH:MM UTC` (seconds dropped), e.g.
/// `2026-11-24 06:00 UTC`. Used in denial messages and reports.
pub fn format_utc(ms: u64) -> String {
    let ms = i128::from(ms);
    let day = ms.div_euclid(DAY_MS);
    let minute = ms.rem_euclid(DAY_MS) / MINUTE_MS;
    let (y, m, d) = civil_from_days(day);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        minute / 60,
        minute % 60
    )
}

/// Proleptic Gregorian (year, month, day) of day number `z` (days since 1970-01-01);
/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i128) -> (i128, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i128::from(m <= 2);
    // d and m are small and positive by construction.
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    const HOUR: u64 = 60 * MIN;

    fn hours(days: Option<&[&str]>, from: &str, to: &str, off: Option<&str>) -> Hours {
        let cfg = HoursConfig {
            days: days.map(|d| d.iter().map(|s| s.to_string()).collect()),
            from: from.into(),
            to: to.into(),
            utc_offset: off.map(str::to_owned),
        };
        let mut errors = Vec::new();
        Hours::compile(&cfg, "rule \"t\"", &mut errors).unwrap_or_else(|| panic!("{errors:?}"))
    }

    #[test]
    fn civil_dates_match_known_values() {
        // Values from `date -u -d ... +%s`.
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(1_795_500_000_000), "2026-11-24 06:00 UTC");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00 UTC");
        assert_eq!(
            format_utc(1_795_176_000_000 + 59_999),
            "2026-11-20 12:00 UTC"
        );
        assert_eq!(weekday(0), 3, "1970-01-01 was a Thursday");
        assert_eq!(
            weekday(1_795_500_000 / 86_400),
            1,
            "2026-11-24 is a Tuesday"
        );
        assert_eq!(weekday(-1), 2, "1969-12-31 was a Wednesday");
    }

    #[test]
    fn parsing() {
        assert_eq!(parse_hhmm("08:30", false), Some(510));
        assert_eq!(parse_hhmm("24:00", true), Some(1440));
        assert_eq!(parse_hhmm("24:00", false), None);
        assert_eq!(parse_hhmm("24:01", true), None);
        assert_eq!(parse_hhmm("8:00", false), None);
        assert_eq!(parse_hhmm("08:60", false), None);
        assert_eq!(parse_hhmm("+8:00", false), None);
        assert_eq!(parse_offset("+02:00"), Some(120));
        assert_eq!(parse_offset("-05:30"), Some(-330));
        assert_eq!(parse_offset("Z"), Some(0));
        assert_eq!(parse_offset("+19:00"), None);
        assert_eq!(parse_offset("02:00"), None);
        assert_eq!(parse_day("Monday"), Some(0));
        assert_eq!(parse_day("sun"), Some(6));
        assert_eq!(parse_day("mo"), None);
    }

    #[test]
    fn describe() {
        let h = hours(
            Some(&["mon", "tue", "wed", "thu", "fri"]),
            "08:00",
            "18:00",
            Some("+02:00"),
        );
        assert_eq!(h.to_string(), "mon-fri 08:00-18:00 UTC+02:00");
        let h = hours(Some(&["sat", "sun", "wed"]), "00:00", "24:00", None);
        assert_eq!(h.to_string(), "wed,sat,sun 00:00-24:00 UTC");
        let h = hours(None, "09:15", "10:00", Some("-05:30"));
        assert_eq!(h.to_string(), "every day 09:15-10:00 UTC-05:30");
    }

    #[test]
    fn all_day_windows_run_together() {
        // Mon-Fri all day, UTC: on Tuesday the window lasts until Saturday 00:00.
        let h = hours(
            Some(&["mon", "tue", "wed", "thu", "fri"]),
            "00:00",
            "24:00",
            None,
        );
        let tue = 1_795_500_000_000; // 2026-11-24 06:00 UTC, Tuesday
        let sat = 1_795_219_200_000 + 7 * 24 * HOUR; // 2026-11-28 00:00 UTC
        assert_eq!(
            h.check(tue),
            Window::Inside {
                until_ms: Some(sat)
            }
        );
        let h = hours(None, "00:00", "24:00", Some("+01:00"));
        assert_eq!(h.check(tue), Window::Inside { until_ms: None });
    }

    #[test]
    fn offsets_shift_the_day() {
        // 2026-11-23 23:30 UTC is Tuesday 01:30 at +02:00: outside a Mon-only window that
        // is open 00:00-24:00 local; the next one opens Monday 2026-11-29 22:00 UTC.
        let h = hours(Some(&["mon"]), "00:00", "24:00", Some("+02:00"));
        let now = 1_795_413_600_000 + 17 * HOUR + 30 * MIN; // 2026-11-23 23:30 UTC
        assert_eq!(format_utc(now), "2026-11-23 23:30 UTC");
        match h.check(now) {
            Window::Outside { next_ms: Some(n) } => {
                assert_eq!(format_utc(n), "2026-11-29 22:00 UTC")
            }
            other => panic!("{other:?}"),
        }
        // Two hours earlier, 21:30 UTC is Monday 23:30 local: inside, ending 22:00 UTC.
        let earlier = now - 2 * HOUR;
        assert_eq!(
            h.check(earlier),
            Window::Inside {
                until_ms: Some(1_795_413_600_000 + 16 * HOUR)
            }
        );
    }

    #[test]
    fn compile_reports_every_problem() {
        let cfg = HoursConfig {
            days: Some(vec!["mon".into(), "funday".into()]),
            from: "25:00".into(),
            to: "8".into(),
            utc_offset: Some("+2".into()),
        };
        let mut errors = Vec::new();
        assert!(Hours::compile(&cfg, "rule \"x\"", &mut errors).is_none());
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(errors[0].contains("hours.days: \"funday\""), "{errors:#?}");
        assert!(errors[1].contains("hours.from: \"25:00\""), "{errors:#?}");
        assert!(errors[2].contains("hours.to: \"8\""), "{errors:#?}");
        assert!(
            errors[3].contains("hours.utc_offset: \"+2\""),
            "{errors:#?}"
        );
    }
}
