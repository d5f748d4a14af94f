//! Durations as operators type them: Go's `time.ParseDuration` form, which kubeadm's
//! `--ttl` takes (`24h0m0s`, `1h30m`, `90s`, `1.5h`), plus days (`7d`), and then
//! humantime's words (`30min`, `2 weeks`) for anything Go's grammar does not cover.
//!
//! Every step is checked: an amount no `Duration` can hold is an error, never a
//! wrap-around or a panic.

use std::time::Duration;

/// Nanoseconds in each unit. A unit is the whole run of non-digits after a number, so
/// names are matched exactly (`ms` never reads as `m` then `s`).
const UNITS: [(&str, u128); 10] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    // Not Go's, but unambiguous (Go has no `d`) and what humantime users write.
    ("d", 86_400_000_000_000),
    ("w", 604_800_000_000_000),
];

/// Most fractional digits honoured; Go keeps nanosecond precision, and 18 digits of a
/// fraction of a week still fit in a `u128` product.
const MAX_FRACTION_DIGITS: usize = 18;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a duration in any accepted form.
    #[error("{0:?} is not a duration (examples: 24h0m0s, 1h30m, 90s, 7d)")]
    Invalid(String),
    /// A duration too long to represent.
    #[error("{0:?} is too long a duration")]
    Overflow(String),
}

/// Parses a duration: Go's grammar first (a bare `0` included), then humantime's.
///
/// # Errors
///
/// [`DurationError::Invalid`] for text in neither form, [`DurationError::Overflow`]
/// for an amount beyond `Duration::MAX`.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    match parse_go(text) {
        Ok(d) => Ok(d),
        Err(GoError::Overflow) => Err(DurationError::Overflow(text.to_owned())),
        Err(GoError::Syntax) => humantime::parse_duration(text).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => DurationError::Overflow(text.to_owned()),
            _ => DurationError::Invalid(text.to_owned()),
        }),
    }
}

enum GoError {
    Syntax,
    Overflow,
}

/// Go's `time.ParseDuration` grammar, unsigned: `0`, or one or more
/// `<digits>[.<digits>]<unit>` with no spaces.
fn parse_go(text: &str) -> Result<Duration, GoError> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(GoError::Syntax);
    }
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (whole, fraction, after) = split_number(rest)?;
        let (per_unit, after) = split_unit(after)?;
        let whole_ns = whole.checked_mul(per_unit).ok_or(GoError::Overflow)?;
        let fraction_ns = fraction_nanos(fraction, per_unit)?;
        total = total.checked_add(whole_ns).and_then(|t| t.checked_add(fraction_ns)).ok_or(GoError::Overflow)?;
        rest = after;
    }
    from_nanos(total)
}

/// A leading number: its whole part, its fraction digits, and what follows.
fn split_number(text: &str) -> Result<(u128, &str, &str), GoError> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (whole_digits, after) = text.split_at(digits_end);
    let (fraction, after) = match after.strip_prefix('.') {
        Some(tail) => {
            let end = tail.find(|c: char| !c.is_ascii_digit()).unwrap_or(tail.len());
            tail.split_at(end)
        }
        None => ("", after),
    };
    // Go accepts `1.` and `.5` but not a lone `.`.
    if whole_digits.is_empty() && fraction.is_empty() {
        return Err(GoError::Syntax);
    }
    let whole =
        if whole_digits.is_empty() { 0 } else { whole_digits.parse::<u128>().map_err(|_| GoError::Overflow)? };
    Ok((whole, fraction, after))
}

/// A leading unit: its length in nanoseconds, and what follows.
fn split_unit(text: &str) -> Result<(u128, &str), GoError> {
    let end = text.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(text.len());
    let (unit, after) = text.split_at(end);
    UNITS.iter().find(|(name, _)| *name == unit).map(|(_, ns)| (*ns, after)).ok_or(GoError::Syntax)
}

/// `0.<digits>` of a unit, in nanoseconds (truncated, as Go does).
fn fraction_nanos(digits: &str, per_unit: u128) -> Result<u128, GoError> {
    let mut numerator: u128 = 0;
    let mut denominator: u128 = 1;
    for c in digits.chars().take(MAX_FRACTION_DIGITS) {
        let digit = u128::from(c.to_digit(10).ok_or(GoError::Syntax)?);
        numerator = numerator.checked_mul(10).and_then(|n| n.checked_add(digit)).ok_or(GoError::Overflow)?;
        denominator = denominator.checked_mul(10).ok_or(GoError::Overflow)?;
    }
    numerator.checked_mul(per_unit).and_then(|n| n.checked_div(denominator)).ok_or(GoError::Overflow)
}

fn from_nanos(total: u128) -> Result<Duration, GoError> {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs =
        u64::try_from(total.checked_div(NANOS_PER_SEC).ok_or(GoError::Overflow)?).map_err(|_| GoError::Overflow)?;
    let nanos =
        u32::try_from(total.checked_rem(NANOS_PER_SEC).ok_or(GoError::Overflow)?).map_err(|_| GoError::Overflow)?;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn go_forms() {
        for (text, want) in [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("24h0m0s", secs(86_400)),
            ("1h30m", secs(5_400)),
            ("90s", secs(90)),
            ("1.5h", secs(5_400)),
            (".5s", Duration::from_millis(500)),
            ("1.s", secs(1)),
            ("300ms", Duration::from_millis(300)),
            ("2us", Duration::from_micros(2)),
            ("2µs", Duration::from_micros(2)),
            ("7ns", Duration::from_nanos(7)),
            ("7d", secs(7 * 86_400)),
            ("1w2d", secs(9 * 86_400)),
            ("1h1h", secs(7_200)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn humantime_words_still_work() {
        assert_eq!(parse("30min"), Ok(secs(1_800)));
        assert_eq!(parse("2 weeks"), Ok(secs(14 * 86_400)));
        assert_eq!(parse("1y").map(|d| d > secs(365 * 86_400)), Ok(true));
    }

    #[test]
    fn rejects() {
        for text in ["", ".", "h", "1", "-1h", "1x", "1h 30q", "forever"] {
            assert!(matches!(parse(text), Err(DurationError::Invalid(_))), "{text}: {:?}", parse(text));
        }
        for text in ["99999999999999999999999999999999999999999h", "9999999999999999999999w"] {
            assert!(matches!(parse(text), Err(DurationError::Overflow(_))), "{text}: {:?}", parse(text));
        }
    }
}
