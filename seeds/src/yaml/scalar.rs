//! Tags and scalars as YAML 1.1 (PyYAML's resolver) reads them: bools,
//! ints (with sexagesimals), floats, timestamps, and Python's float repr.

use super::*;

/// The tag as a message shows it: never under a secret.
pub(super) fn tag_name(t: &Tag, redact: bool) -> String {
    if redact {
        " (not shown: it is on a secret)".to_string()
    } else if is_core(t) {
        format!(" `!!{}`", printable(&t.suffix))
    } else {
        format!(" `{}{}`", printable(&t.handle), printable(&t.suffix))
    }
}

pub(super) fn check_collection_tag(
    tag: Option<&Tag>,
    want: &str,
    pos: Pos,
    redact: bool,
) -> Result<(), LoadError> {
    match tag {
        None => Ok(()),
        Some(t) if is_core(t) && t.suffix == want => Ok(()),
        Some(t) => Err(err(
            Some(pos),
            format!("unsupported tag{}", tag_name(t, redact)),
        )),
    }
}

pub(super) fn is_core(t: &Tag) -> bool {
    t.handle == "tag:yaml.org,2002:" || t.handle == "!!"
}

pub(super) fn resolve_scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    pos: Pos,
    redact: bool,
) -> Result<Value, LoadError> {
    if let Some(t) = tag {
        if !is_core(t) {
            // A lone `!` is the non-specific tag: the scalar is a string.
            if t.handle == "!" && t.suffix.is_empty() {
                return Ok(Value::Str(text.to_owned()));
            }
            return Err(err(
                Some(pos),
                format!("unsupported tag{}", tag_name(t, redact)),
            ));
        }
        let bad = || {
            err(
                Some(pos),
                format!("value does not match its tag{}", tag_name(t, redact)),
            )
        };
        return match t.suffix.as_str() {
            "str" | "binary" => Ok(Value::Str(text.to_owned())),
            "null" => Ok(Value::Null),
            "bool" => resolve_bool(text).map(Value::Bool).ok_or_else(bad),
            "int" => match resolve_plain(text, pos)? {
                v @ Value::Int(_) => Ok(v),
                _ => Err(bad()),
            },
            "float" => match resolve_plain(text, pos)? {
                v @ Value::Float(_) => Ok(v),
                Value::Int(i) => Ok(Value::Float(i as f64)),
                _ => Err(bad()),
            },
            "timestamp" => match resolve_plain(text, pos)? {
                v @ Value::Timestamp(_) => Ok(v),
                _ => Err(bad()),
            },
            _ => Err(err(
                Some(pos),
                format!("unsupported tag{}", tag_name(t, redact)),
            )),
        };
    }
    match style {
        ScalarStyle::Plain => resolve_plain(text, pos),
        _ => Ok(Value::Str(text.to_owned())),
    }
}

pub(super) fn resolve_bool(s: &str) -> Option<bool> {
    match s {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// PyYAML's implicit resolvers for plain scalars (YAML 1.1).
pub(super) fn resolve_plain(s: &str, pos: Pos) -> Result<Value, LoadError> {
    if matches!(s, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    if let Some(b) = resolve_bool(s) {
        return Ok(Value::Bool(b));
    }
    if is_int(s) {
        return parse_int(s)
            .map(Value::Int)
            .ok_or_else(|| err(Some(pos), "integer is too large"));
    }
    if is_float(s) {
        return Ok(Value::Float(parse_float(s)));
    }
    if let Some(ts) = resolve_timestamp(s) {
        return Ok(Value::Timestamp(ts));
    }
    Ok(Value::Str(s.to_owned()))
}

pub(super) fn strip_sign(s: &str) -> (bool, &str) {
    match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    }
}

pub(super) fn all(s: &str, f: impl Fn(u8) -> bool) -> bool {
    s.bytes().all(f)
}

/// `[-+]?0b[01_]+ | [-+]?0[0-7_]+ | [-+]?(0|[1-9][0-9_]*) | [-+]?0x[0-9a-fA-F_]+
///  | [-+]?[1-9][0-9_]*(:[0-5]?[0-9])+`
pub(super) fn is_int(s: &str) -> bool {
    let (_, d) = strip_sign(s);
    if let Some(b) = d.strip_prefix("0b") {
        return !b.is_empty() && all(b, |c| matches!(c, b'0' | b'1' | b'_'));
    }
    if let Some(h) = d.strip_prefix("0x") {
        return !h.is_empty() && all(h, |c| c.is_ascii_hexdigit() || c == b'_');
    }
    if d == "0" {
        return true;
    }
    if let Some(o) = d.strip_prefix('0') {
        return !o.is_empty() && all(o, |c| matches!(c, b'0'..=b'7' | b'_'));
    }
    let mut parts = d.split(':');
    let first = parts.next().unwrap_or("");
    if !first.starts_with(|c: char| matches!(c, '1'..='9'))
        || !all(first, |c| c.is_ascii_digit() || c == b'_')
    {
        return false;
    }
    parts.all(is_sexagesimal_part)
}

pub(super) fn is_sexagesimal_part(p: &str) -> bool {
    let b = p.as_bytes();
    match b.len() {
        1 => b[0].is_ascii_digit(),
        2 => matches!(b[0], b'0'..=b'5') && b[1].is_ascii_digit(),
        _ => false,
    }
}

pub(super) fn parse_int(s: &str) -> Option<i128> {
    let cleaned: String = s.chars().filter(|&c| c != '_').collect();
    let (neg, d) = strip_sign(&cleaned);
    let v: i128 = if d == "0" {
        0
    } else if let Some(b) = d.strip_prefix("0b") {
        i128::from_str_radix(b, 2).ok()?
    } else if let Some(h) = d.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()?
    } else if let Some(o) = d.strip_prefix('0') {
        i128::from_str_radix(o, 8).ok()?
    } else if d.contains(':') {
        let mut v: i128 = 0;
        for part in d.split(':') {
            v = v.checked_mul(60)?.checked_add(part.parse::<i128>().ok()?)?;
        }
        v
    } else {
        d.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

/// `[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+][0-9]+)? | [-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*
///  | [-+]?\.(inf|Inf|INF) | \.(nan|NaN|NAN)`
pub(super) fn is_float(s: &str) -> bool {
    if matches!(s, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let (_, d) = strip_sign(s);
    if matches!(d, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    // Mantissa and optional exponent (the exponent needs a sign in YAML 1.1).
    let (mant, exp) = match d.find(['e', 'E']) {
        Some(i) => (&d[..i], Some(&d[i + 1..])),
        None => (d, None),
    };
    if let Some(e) = exp {
        let (_, digits) = match e.as_bytes().first() {
            Some(b'-') | Some(b'+') => strip_sign(e),
            _ => return false,
        };
        if digits.is_empty() || !all(digits, |c| c.is_ascii_digit()) {
            return false;
        }
    }
    let Some(dot) = mant.find('.') else {
        return false;
    };
    let (int_part, frac) = (&mant[..dot], &mant[dot + 1..]);
    if !all(frac, |c| c.is_ascii_digit() || c == b'_') {
        return false;
    }
    if int_part.is_empty() {
        // `.5`, `.5e+3`; PyYAML requires a digit after the dot here.
        return frac.starts_with(|c: char| c.is_ascii_digit());
    }
    if int_part.contains(':') {
        if exp.is_some() {
            return false;
        }
        let mut parts = int_part.split(':');
        let first = parts.next().unwrap_or("");
        return first.starts_with(|c: char| c.is_ascii_digit())
            && all(first, |c| c.is_ascii_digit() || c == b'_')
            && parts.all(is_sexagesimal_part);
    }
    int_part.starts_with(|c: char| c.is_ascii_digit())
        && all(int_part, |c| c.is_ascii_digit() || c == b'_')
}

pub(super) fn parse_float(s: &str) -> f64 {
    let cleaned: String = s
        .chars()
        .filter(|&c| c != '_')
        .collect::<String>()
        .to_lowercase();
    let (neg, d) = strip_sign(&cleaned);
    let sign = if neg { -1.0 } else { 1.0 };
    if d == ".inf" {
        return sign * f64::INFINITY;
    }
    if d == ".nan" {
        return f64::NAN;
    }
    if d.contains(':') {
        let mut v = 0.0;
        for part in d.split(':') {
            v = v * 60.0 + part.parse::<f64>().unwrap_or(0.0);
        }
        return sign * v;
    }
    // Rust's parser accepts the forms is_float admits (`1.`, `.5`, `1.5e+3`).
    let d = if d.ends_with('.') {
        format!("{d}0")
    } else if d.starts_with('.') {
        format!("0{d}")
    } else {
        d.to_string()
    };
    sign * d.replace(".e", ".0e").parse::<f64>().unwrap_or(f64::NAN)
}

/// YAML 1.1 timestamps, printed as Python's `str()` of the date or datetime.
pub(super) fn resolve_timestamp(s: &str) -> Option<String> {
    let b = s.as_bytes();
    // A bare date: exactly YYYY-MM-DD.
    if b.len() == 10 && is_date_shape(b) {
        return valid_date(&s[0..4], &s[5..7], &s[8..10]).then(|| s.to_owned());
    }
    // YYYY-M(M)-D(D) then [Tt] or spaces, H(H):MM:SS(.frac)? (spaces? (Z|±H(H)(:MM)?))?
    let (date, rest) = split_date(s)?;
    let rest = if let Some(r) = rest.strip_prefix(['T', 't']) {
        r
    } else {
        let trimmed = rest.trim_start_matches([' ', '\t']);
        if trimmed.len() == rest.len() {
            return None;
        }
        trimmed
    };
    let (h, rest) = take_digits(rest, 1, 2)?;
    let rest = rest.strip_prefix(':')?;
    let (mi, rest) = take_digits(rest, 2, 2)?;
    let rest = rest.strip_prefix(':')?;
    let (sec, mut rest) = take_digits(rest, 2, 2)?;
    let mut frac = "";
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        frac = &r[..n];
        rest = &r[n..];
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let tz = if rest.is_empty() {
        None
    } else if rest == "Z" {
        Some("+00:00".to_string())
    } else {
        let (neg, r) = match rest.as_bytes()[0] {
            b'-' => (true, &rest[1..]),
            b'+' => (false, &rest[1..]),
            _ => return None,
        };
        let (th, r) = take_digits(r, 1, 2)?;
        let tm = match r.strip_prefix(':') {
            Some(r2) => {
                let (tm, r3) = take_digits(r2, 2, 2)?;
                if !r3.is_empty() {
                    return None;
                }
                tm
            }
            None if r.is_empty() => "00",
            None => return None,
        };
        Some(format!(
            "{}{:02}:{}",
            if neg { '-' } else { '+' },
            th.parse::<u32>().ok()?,
            tm
        ))
    };
    let (y, mo, d) = date;
    if !valid_date(y, mo, d) {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let mi: u32 = mi.parse().ok()?;
    let sec: u32 = sec.parse().ok()?;
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut out = format!(
        "{y}-{:02}-{:02} {h:02}:{mi:02}:{sec:02}",
        mo.parse::<u32>().ok()?,
        d.parse::<u32>().ok()?
    );
    if !frac.is_empty() {
        // Python keeps microseconds: 6 digits, padded or cut.
        let mut micro: String = frac.chars().take(6).collect();
        while micro.len() < 6 {
            micro.push('0');
        }
        if micro != "000000" {
            out.push('.');
            out.push_str(&micro);
        }
    }
    if let Some(tz) = tz {
        out.push_str(&tz);
    }
    Some(out)
}

pub(super) fn is_date_shape(b: &[u8]) -> bool {
    b[0..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
}

pub(super) fn split_date(s: &str) -> Option<((&str, &str, &str), &str)> {
    let (y, rest) = take_digits(s, 4, 4)?;
    let rest = rest.strip_prefix('-')?;
    let (m, rest) = take_digits(rest, 1, 2)?;
    let rest = rest.strip_prefix('-')?;
    let (d, rest) = take_digits(rest, 1, 2)?;
    Some(((y, m, d), rest))
}

pub(super) fn take_digits(s: &str, min: usize, max: usize) -> Option<(&str, &str)> {
    let n = s.bytes().take(max).take_while(u8::is_ascii_digit).count();
    (n >= min).then(|| s.split_at(n))
}

pub(super) fn valid_date(y: &str, m: &str, d: &str) -> bool {
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<u32>(), m.parse::<u32>(), d.parse::<u32>()) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    y >= 1 && (1..=days).contains(&d)
}

/// A float printed as Python's `repr()` does: the shortest digits that round
/// trip, fixed notation for decimal exponents in -4..16, else `1e+16` style.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // `{:e}` gives the shortest round-trip digits: "1.5e0", "1e16", "-2.5e-7".
    let sci = format!("{:e}", f.abs());
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let sign = if f < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if (point as usize) >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let es = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{es}{:02}", exp.abs())
    }
}
