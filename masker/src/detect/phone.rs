//! Phone numbers: E.164 (`+`, then 8–15 digits in groups) and the national forms of the
//! regions a profile lists (`phone_regions`, default `["US"]`).
//!
//! National forms are matched only with the separators people write them with: ten bare
//! digits are as likely an order number as a phone number, so `4155550142` is not taken
//! (its E.164 form `+14155550142` is).

use super::scan::{at, digits_from, ends, fresh as fresh_at, is_digit, is_word};
use crate::ConfigError;

/// `+` and 15 digits with up to two separator bytes between every two of them.
pub(crate) const MAX_LEN: usize = 1 + 15 + 2 * 14;

/// The national formats a profile turns on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Regions {
    pub(crate) us: bool,
    gb: bool,
    de: bool,
    fr: bool,
    india: bool,
}

impl Regions {
    /// The region codes the policy file may name.
    pub(crate) const KNOWN: [&'static str; 5] = ["US", "GB", "DE", "FR", "IN"];

    /// Whether a national form other than the US one is on.
    pub(crate) fn non_us(self) -> bool {
        self.gb || self.de || self.fr || self.india
    }

    /// From `phone_regions` (`None`: US only). Codes are ISO 3166 alpha-2, any case.
    pub(crate) fn parse(codes: Option<&[String]>) -> Result<Regions, ConfigError> {
        let Some(codes) = codes else {
            return Ok(Regions {
                us: true,
                ..Regions::default()
            });
        };
        let mut r = Regions::default();
        for (i, code) in codes.iter().enumerate() {
            match code.to_ascii_uppercase().as_str() {
                "US" => r.us = true,
                "GB" => r.gb = true,
                "DE" => r.de = true,
                "FR" => r.fr = true,
                "IN" => r.india = true,
                _ => {
                    return Err(ConfigError(format!(
                        "phone_regions[{i}]: unknown region {code:?} (known: {})",
                        Regions::KNOWN.join(", ")
                    )))
                }
            }
        }
        Ok(r)
    }
}

/// Whether a phone number can start at the digit run at `i` (`run` digits, between
/// `prev` and `next`): the cheap gate before [`at_run`].
#[inline]
pub(crate) fn may_start(
    text: &[u8],
    i: usize,
    run: usize,
    prev: u8,
    next: u8,
    fresh: bool,
    regions: Regions,
) -> bool {
    if prev == b'+' {
        // E.164 is found from its `+`.
        return false;
    }
    if (prev == b'(' || !fresh) && run == 3 {
        // `(415) …`, or the area code after a leading `1-`.
        return regions.us;
    }
    if !fresh {
        return false;
    }
    let sep = matches!(next, b'-' | b'.' | b' ');
    let us = regions.us && sep && (run == 3 || (run == 1 && at(text, i) == b'1'));
    let other = (regions.gb || regions.de || regions.fr || regions.india) && run >= 2;
    us || other
}

/// A national phone number around the digit run at `i` (`run` digits): its span. `fresh`
/// says whether the run starts a token of its own (national forms need it; the US form
/// `(415) 555-0142` is anchored on its parenthesis). E.164 numbers are found from their
/// `+` by [`e164`].
pub(crate) fn at_run(
    text: &[u8],
    i: usize,
    run: usize,
    fresh: bool,
    regions: Regions,
) -> Option<(usize, usize)> {
    let prev = if i > 0 { at(text, i - 1) } else { 0 };
    if prev == b'+' {
        return None;
    }
    if regions.us && run == 3 {
        // An area code: a leading `1-`, `1.`, `1 ` or `1 (` makes the number longer.
        let one_before = |k: usize| i >= k && at(text, i - k) == b'1' && fresh_at(text, i - k);
        if i >= 2 && matches!(at(text, i - 1), b'-' | b'.' | b' ') && one_before(2) {
            if let Some(e) = us(text, i - 2, 1) {
                return Some((i - 2, e));
            }
        }
        if prev == b'(' && i >= 3 && at(text, i - 2) == b' ' && one_before(3) {
            if let Some(e) = us(text, i - 3, 1) {
                return Some((i - 3, e));
            }
        }
    }
    if prev == b'(' {
        let lp = i - 1;
        if regions.us && (lp == 0 || !is_word(at(text, lp - 1))) {
            return us_paren(text, lp).map(|e| (lp, e));
        }
        return None;
    }
    if !fresh {
        return None;
    }
    let mut best: Option<usize> = None;
    let mut take = |e: Option<usize>| {
        if let Some(e) = e {
            best = Some(best.map_or(e, |b| b.max(e)));
        }
    };
    if regions.us {
        take(us(text, i, run));
    }
    if at(text, i) == b'0' && (b'1'..=b'9').contains(&at(text, i + 1)) {
        if regions.gb {
            take(gb(text, i, run));
        }
        if regions.de {
            take(de(text, i, run));
        }
        if regions.fr {
            take(fr(text, i, run));
        }
    }
    if regions.india {
        take(india(text, i, run));
    }
    best.map(|e| (i, e))
}

/// E.164 from the `+` at `plus`: its end. Digit groups joined by one or two of
/// ` - . ( )` (`+1 (415) 555-0142`, `+44 (0)20 7946 0958`), 8–15 digits, the first not
/// 0. When separators are used, the first group is at most 4 digits (a country code and
/// maybe an area code: `+12345678.90` is an amount). Beyond 15 digits the number is
/// taken up to the last group that fits only if a space follows it; a longer number
/// joined otherwise is something else.
pub(crate) fn e164(text: &[u8], plus: usize) -> Option<usize> {
    if plus > 0 && is_word(at(text, plus - 1)) {
        return None;
    }
    if !(b'1'..=b'9').contains(&at(text, plus + 1)) {
        return None;
    }
    let mut pos = plus + 1;
    let mut digits = 0;
    let mut first_group = 0;
    let mut joined = false;
    let mut joiner_is_space = false;
    let mut open = false;
    let end = loop {
        let g = digits_from(text, pos);
        if digits + g > 15 {
            if joined && joiner_is_space {
                break pos_before_joiner(text, pos);
            }
            return None;
        }
        if first_group == 0 {
            first_group = g;
        }
        digits += g;
        pos += g;
        // A joiner: one or two of ` - . ( )`, parentheses balanced, then a digit.
        let mut j = pos;
        let mut only_space = true;
        let mut open_after = open;
        while j - pos < 2 {
            match at(text, j) {
                b' ' => {}
                b'-' | b'.' => only_space = false,
                b'(' if !open_after => {
                    open_after = true;
                    only_space = false;
                }
                b')' if open_after => {
                    open_after = false;
                    only_space = false;
                }
                _ => break,
            }
            j += 1;
        }
        if j == pos || !is_digit(at(text, j)) {
            break pos;
        }
        joined = true;
        joiner_is_space = only_space;
        open = open_after;
        pos = j;
    };
    let ok = (8..=15).contains(&digits)
        && !(joined && first_group > 4)
        && !is_word(at(text, end))
        && end - plus <= MAX_LEN;
    ok.then_some(end)
}

/// The end of the digits before the joiner that ends at `pos` (`pos` is a digit).
fn pos_before_joiner(text: &[u8], pos: usize) -> usize {
    let mut p = pos;
    while p > 0 && !is_digit(at(text, p - 1)) {
        p -= 1;
    }
    p
}

/// A NANP area code or exchange: 3 digits, the first 2–9.
fn nanp3(text: &[u8], i: usize) -> bool {
    digits_from(text, i) == 3 && (b'2'..=b'9').contains(&at(text, i))
}

/// `415-555-0142`, `415.555.0142`, `415 555 0142`, `1-415-555-0142`, `1 (415) 555-0142`.
fn us(text: &[u8], i: usize, run: usize) -> Option<usize> {
    if run == 1 && at(text, i) == b'1' {
        let sep = at(text, i + 1);
        if !matches!(sep, b'-' | b'.' | b' ') {
            return None;
        }
        if at(text, i + 2) == b'(' {
            return us_paren(text, i + 2);
        }
        return us_plain(text, i + 2, Some(sep));
    }
    if run == 3 {
        return us_plain(text, i, None);
    }
    None
}

/// `AAA-EEE-SSSS` at `i`, all separators the same (and equal to `sep` when given).
fn us_plain(text: &[u8], i: usize, sep: Option<u8>) -> Option<usize> {
    let s = at(text, i + 3);
    if !matches!(s, b'-' | b'.' | b' ') || sep.is_some_and(|x| x != s) {
        return None;
    }
    if !nanp3(text, i) || !nanp3(text, i + 4) || at(text, i + 7) != s {
        return None;
    }
    us_subscriber(text, i + 8)
}

/// `(AAA) EEE-SSSS` or `(AAA)EEE-SSSS` from the `(` at `lp`.
fn us_paren(text: &[u8], lp: usize) -> Option<usize> {
    if !nanp3(text, lp + 1) || at(text, lp + 4) != b')' {
        return None;
    }
    let mut pos = lp + 5;
    if at(text, pos) == b' ' {
        pos += 1;
    }
    if !nanp3(text, pos) || !matches!(at(text, pos + 3), b'-' | b'.' | b' ') {
        return None;
    }
    us_subscriber(text, pos + 4)
}

/// The 4-digit subscriber number at `i`, ending the number.
fn us_subscriber(text: &[u8], i: usize) -> Option<usize> {
    let end = i + 4;
    (digits_from(text, i) == 4 && ends(text, end)).then_some(end)
}

/// Digit groups from `i` (the first `run` digits long) joined by a single `sep`-class
/// byte: returns (total digits, groups, end), stopping before `max_digits` is passed.
fn groups(
    text: &[u8],
    i: usize,
    run: usize,
    seps: &[u8],
    max_groups: usize,
    group_len: std::ops::RangeInclusive<usize>,
) -> (usize, usize, usize) {
    let mut n = run;
    let mut count = 1;
    let mut pos = i + run;
    while count < max_groups && seps.contains(&at(text, pos)) && is_digit(at(text, pos + 1)) {
        let g = digits_from(text, pos + 1);
        if !group_len.contains(&g) {
            break;
        }
        n += g;
        pos += 1 + g;
        count += 1;
    }
    (n, count, pos)
}

/// GB: `020 7946 0958`, `0121 496 0000`, `01632 960001`, `07700 900123`, `07700900123`.
fn gb(text: &[u8], i: usize, run: usize) -> Option<usize> {
    if run == 11 && at(text, i + 1) == b'7' {
        return ends(text, i + 11).then_some(i + 11);
    }
    if !(3..=5).contains(&run) {
        return None;
    }
    let (n, count, end) = groups(text, i, run, b" ", 3, 3..=6);
    (count >= 2 && (10..=11).contains(&n) && ends(text, end)).then_some(end)
}

/// DE: `030 12345678`, `030/12345678`, `0151 23456789`, `089 123 4567`, `06221-123456`.
fn de(text: &[u8], i: usize, run: usize) -> Option<usize> {
    if !(3..=6).contains(&run) {
        return None;
    }
    let (n, count, end) = groups(text, i, run, b" -/", 3, 3..=8);
    (count >= 2 && (10..=12).contains(&n) && ends(text, end)).then_some(end)
}

/// FR: `01 23 45 67 89`, `01.23.45.67.89`, `01-23-45-67-89`.
fn fr(text: &[u8], i: usize, run: usize) -> Option<usize> {
    if run != 2 {
        return None;
    }
    let sep = at(text, i + 2);
    if !matches!(sep, b' ' | b'.' | b'-') {
        return None;
    }
    let (n, count, end) = groups(text, i, run, &[sep], 5, 2..=2);
    let ok = n == 10
        && count == 5
        && ends(text, end)
        && !(at(text, end) == sep && is_digit(at(text, end + 1)));
    ok.then_some(end)
}

/// IN: mobiles `98765 43210`, `098765 43210`, `09876543210`; landlines `011-2345-6789`,
/// `011 23456789`, `0124-2345678` (11 digits with the trunk 0).
fn india(text: &[u8], i: usize, run: usize) -> Option<usize> {
    let first = at(text, i);
    let mobile = |k: usize| (b'6'..=b'9').contains(&at(text, i + k));
    let sep_then = |pos: usize, len: usize| {
        matches!(at(text, pos), b' ' | b'-') && digits_from(text, pos + 1) == len
    };
    let end = if run == 5 && mobile(0) && sep_then(i + 5, 5) {
        i + 11
    } else if run == 6 && first == b'0' && mobile(1) && sep_then(i + 6, 5) {
        i + 12
    } else if run == 11 && first == b'0' && mobile(1) {
        i + 11
    } else if (3..=5).contains(&run) && first == b'0' && at(text, i + 1) != b'0' {
        let (n, count, end) = groups(text, i, run, b" -", 3, 3..=8);
        if count >= 2 && n == 11 {
            end
        } else {
            return None;
        }
    } else {
        return None;
    };
    ends(text, end).then_some(end)
}
