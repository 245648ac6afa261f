//! A checker of systemd calendar expressions (systemd.time(7), "Calendar
//! Events"), for `appliance.update.oncalendar`, which becomes a timer's
//! `OnCalendar=`.
//!
//! Self-written because the only complete implementation is systemd's own
//! (`systemd-analyze calendar`), which is not on every build host, not in
//! the container a test runs in, and would be a process per check; no Rust
//! crate parses this syntax. An env must be refused at `env check` time, on
//! the build host, not at boot when the timer fails to load. This checks the
//! syntax and the ranges of every field; it does not compute when the timer
//! elapses, and a time zone is checked for its form only (the build host's
//! tzdata says nothing about the appliance's).
//!
//! The accepted forms:
//!
//! - the shorthands `minutely`, `hourly`, `daily`, `weekly`, `monthly`,
//!   `yearly` (`annually`), `quarterly`, `semiannually` (any case);
//! - `[WEEKDAYS] [[YYYY-]MM-DD] [HH:MM[:SS[.ffffff]]]`, at least one part:
//!   weekdays are `Mon`..`Sun` or their full names, in lists (`Mon,Fri`) and
//!   ranges (`Mon..Fri`, also `Mon-Fri`); every date and time field is `*`,
//!   or a list (`,`) of values, ranges (`a..b`) and repetitions (`v/n`,
//!   `a..b/n`); `~` instead of the last `-` counts days from the end of the
//!   month (`*-02~03`); a two-digit year is 1970..2069;
//! - either followed by a time zone: `UTC` or an `Area/Location` name.

/// Why a calendar expression is refused (shown after the value).
pub type Error = String;

const SHORTHANDS: &[&str] = &[
    "minutely",
    "hourly",
    "daily",
    "weekly",
    "monthly",
    "yearly",
    "annually",
    "quarterly",
    "semiannually",
];

const WEEKDAYS: &[&str] = &[
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Checks one calendar expression.
pub fn check(spec: &str) -> Result<(), Error> {
    if spec.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    let mut words: Vec<&str> = spec.split(' ').filter(|w| !w.is_empty()).collect();
    if words.is_empty() {
        return Err("is empty".into());
    }
    // A trailing time zone.
    if words.len() > 1 {
        let last = words[words.len() - 1];
        if last.starts_with(|c: char| c.is_ascii_alphabetic())
            && weekdays(last).is_err()
            && !is_shorthand(last)
        {
            check_timezone(last)?;
            words.pop();
        }
    }
    if words.len() == 1 && is_shorthand(words[0]) {
        return Ok(());
    }
    let mut rest = &words[..];
    if let Some(first) = rest.first() {
        if first.starts_with(|c: char| c.is_ascii_alphabetic()) {
            if is_shorthand(first) {
                return Err(format!("`{first}` stands alone (or with a time zone)"));
            }
            weekdays(first)?;
            rest = &rest[1..];
        }
    }
    let (mut date, mut time) = (false, false);
    for w in rest {
        if w.contains(':') {
            if time {
                return Err("has two times".into());
            }
            check_time(w)?;
            time = true;
        } else if w.contains(['-', '~']) {
            if date {
                return Err("has two dates".into());
            }
            if time {
                return Err("has the date after the time (write DATE TIME)".into());
            }
            check_date(w)?;
            date = true;
        } else {
            return Err(format!(
                "`{w}` is neither a date (YYYY-MM-DD) nor a time (HH:MM:SS)"
            ));
        }
    }
    Ok(())
}

fn is_shorthand(w: &str) -> bool {
    SHORTHANDS.iter().any(|s| s.eq_ignore_ascii_case(w))
}

fn weekday(w: &str) -> Result<usize, Error> {
    WEEKDAYS
        .iter()
        .position(|d| d.eq_ignore_ascii_case(w) || d[..3].eq_ignore_ascii_case(w))
        .ok_or_else(|| format!("`{w}` is not a weekday (Mon..Sun) or a shorthand such as daily"))
}

/// `Mon,Wed..Fri` (a trailing comma is allowed, as systemd allows it).
fn weekdays(w: &str) -> Result<(), Error> {
    let items = w.strip_suffix(',').unwrap_or(w);
    for item in items.split(',') {
        let (a, b) = match item.split_once("..").or_else(|| item.split_once('-')) {
            Some((a, b)) => (weekday(a)?, Some(weekday(b)?)),
            None => (weekday(item)?, None),
        };
        if let Some(b) = b {
            if b < a {
                return Err(format!("the weekday range `{item}` runs backwards"));
            }
        }
    }
    Ok(())
}

/// `[Y-]M-D` or `[Y-]M~D`.
fn check_date(w: &str) -> Result<(), Error> {
    let tilde = w.matches('~').count();
    if tilde > 1 {
        return Err("has more than one `~` in the date".into());
    }
    let parts: Vec<&str> = w.split(['-', '~']).collect();
    if tilde == 1 {
        // `~` separates the month from the day only.
        let last_sep = w.rfind(['-', '~']).unwrap_or(0);
        if w.as_bytes()[last_sep] != b'~' {
            return Err("`~` goes between the month and the day (e.g. *-02~03)".into());
        }
    }
    let (year, month, day) = match parts.as_slice() {
        [m, d] => (None, *m, *d),
        [y, m, d] => (Some(*y), *m, *d),
        _ => {
            return Err(format!(
                "`{w}` is not a date (YYYY-MM-DD or MM-DD, each field a number, list, range or *)"
            ))
        }
    };
    if let Some(y) = year {
        component(y, "year", 0, 2199, false).and_then(|_| check_years(y))?;
    }
    component(month, "month", 1, 12, false)?;
    component(day, "day", 1, 31, false)?;
    Ok(())
}

/// Years are 1970..2199, or two digits (1970..2069).
fn check_years(y: &str) -> Result<(), Error> {
    if y == "*" {
        return Ok(());
    }
    for item in y.split(',') {
        let (range, _) = item.split_once('/').unwrap_or((item, ""));
        for v in range.split("..") {
            let n: u32 = v.parse().unwrap_or(0);
            if v.len() > 2 && n < 1970 {
                return Err(format!("the year {v} is before 1970"));
            }
        }
    }
    Ok(())
}

/// `H:M[:S]`.
fn check_time(w: &str) -> Result<(), Error> {
    let parts: Vec<&str> = w.split(':').collect();
    let (h, m, s) = match parts.as_slice() {
        [h, m] => (*h, *m, None),
        [h, m, s] => (*h, *m, Some(*s)),
        _ => {
            return Err(format!(
                "`{w}` is not a time (HH:MM or HH:MM:SS, each field a number, list, range or *)"
            ))
        }
    };
    component(h, "hour", 0, 23, false)?;
    component(m, "minute", 0, 59, false)?;
    if let Some(s) = s {
        component(s, "second", 0, 59, true)?;
    }
    Ok(())
}

/// One field: `*`, or a comma list of `v`, `a..b`, `v/n`, `a..b/n`.
fn component(c: &str, what: &str, min: u32, max: u32, fraction: bool) -> Result<(), Error> {
    if c == "*" {
        return Ok(());
    }
    if c.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    for item in c.split(',') {
        let (range, repeat) = match item.split_once('/') {
            Some((r, n)) => (r, Some(n)),
            None => (item, None),
        };
        let (a, b) = match range.split_once("..") {
            Some((a, b)) => (a, Some(b)),
            None => (range, None),
        };
        let a = value(a, what, min, max, fraction)?;
        if let Some(b) = b {
            let b = value(b, what, min, max, fraction)?;
            if b < a {
                return Err(format!("the {what} range `{range}` runs backwards"));
            }
        }
        if let Some(n) = repeat {
            let n = value(n, &format!("{what} repetition"), 0, u32::MAX, fraction)?;
            if n <= 0.0 {
                return Err(format!(
                    "the {what} repetition in `{item}` must be above zero"
                ));
            }
        }
    }
    Ok(())
}

/// A decimal value (with up to six decimals for seconds) within min..=max.
fn value(v: &str, what: &str, min: u32, max: u32, fraction: bool) -> Result<f64, Error> {
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) if fraction => (i, Some(f)),
        _ => (v, None),
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit());
    if v == "*" {
        return Err(format!(
            "`*` cannot be part of a list or range in the {what}"
        ));
    }
    if !digits(int) || frac.is_some_and(|f| !digits(f) || f.len() > 6) {
        return Err(format!("`{v}` is not a number (in the {what})"));
    }
    let n: u64 = int.parse().map_err(|_| format!("`{v}` is too large"))?;
    if n < u64::from(min) || n > u64::from(max) {
        return Err(format!("the {what} {v} is not in {min}..{max}"));
    }
    let f: f64 = format!("{int}.{}", frac.unwrap_or("0"))
        .parse()
        .unwrap_or(0.0);
    Ok(f)
}

/// `UTC`, or an `Area/Location` name of letters, digits, `_`, `+`, `-`.
fn check_timezone(tz: &str) -> Result<(), Error> {
    let ok = tz.split('/').all(|part| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part.len() <= 64
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+-".contains(&b))
    });
    if ok && tz.starts_with(|c: char| c.is_ascii_alphabetic()) {
        Ok(())
    } else {
        Err(format!("`{tz}` is not a time zone (UTC or Area/Location)"))
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn systemd_examples_are_accepted() {
        // From systemd.time(7)'s table of calendar events, and the default.
        for spec in [
            "*-*-* 06:30:00",
            "Sat,Thu,Mon..Wed,Sat..Sun",
            "Mon,Sun 12-*-* 2,1:23",
            "Wed *-1",
            "Wed..Wed,Wed *-1",
            "Wed, 17:48",
            "Wed..Sat,Tue 12-10-15 1:2:3",
            "*-*-7 0:0:0",
            "10-15",
            "monday *-12-* 17:00",
            "Mon,Fri *-*-3,1,2 *:30:45",
            "12,14,13,12:20,10,30",
            "12..14:10,20,30",
            "mon,fri *-1/2-1,3 *:30:45",
            "03-05 08:05:40",
            "08:05:40",
            "05:40",
            "Sat,Sun 12-05 08:05:40",
            "Sat,Sun 08:05:40",
            "2003-03-05 05:40",
            "05:40:23.42/3.17",
            "2003-02..04-05",
            "2003-03-05 05:40 UTC",
            "2003-03-05",
            "03-05",
            "hourly",
            "daily",
            "Daily",
            "daily UTC",
            "monthly",
            "weekly",
            "weekly Pacific/Auckland",
            "yearly",
            "annually",
            "quarterly",
            "semiannually",
            "minutely",
            "*:2/3",
            "*-*~03",
            "*-02~1..3 04:00",
            "Mon-Fri 06:30",
            "2025-*-* 0/6:00:00 Europe/Vienna",
            "*-*-* *:00/15:00",
        ] {
            assert_eq!(check(spec), Ok(()), "{spec}");
        }
    }

    #[test]
    fn bad_expressions_are_refused() {
        for (spec, want) in [
            ("", "is empty"),
            ("every day", "not a weekday"),
            ("sometimes", "not a weekday"),
            ("*-*-* 25:00:00", "hour 25 is not in 0..23"),
            ("*-*-* 06:60", "minute 60"),
            ("*-*-* 06:30:61", "second 61"),
            ("*-13-01", "month 13"),
            ("*-*-32", "day 32"),
            ("*-*-0", "day 0"),
            ("1969-01-01", "before 1970"),
            ("2300-01-01", "year 2300"),
            ("*-*-* 6..4:00", "runs backwards"),
            ("Fri..Mon", "runs backwards"),
            ("*-*-* */2:00", "`*` cannot be part"),
            ("*-*-* 0/0:00", "above zero"),
            ("*-*-* 06:30:00 06:30", "two times"),
            ("06:30 *-*-*", "date after the time"),
            ("*-*-*-* 06:30", "is not a date"),
            ("06:30:00:00", "is not a time"),
            ("*-*~1~2", "more than one `~`"),
            ("*~02-03", "`~` goes between"),
            ("daily weekly", "stands alone"),
            ("*-*-* 06:3x", "not a number"),
            ("*-*-* 06:30 Europe/../etc", "not a time zone"),
            ("06:30\n", "control character"),
            ("--06-30", "not a date"),
            ("*-*-* 6,:00", "not a number"),
            ("x-y-z", "not a weekday"),
            ("*-x-1", "not a number"),
        ] {
            let e = check(spec).expect_err(spec);
            assert!(e.contains(want), "{spec:?}: {e}");
        }
    }
}
