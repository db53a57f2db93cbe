//! US social security numbers `AAA-GG-SSSS` or `AAA GG SSSS`. Separators are required:
//! nine bare digits are too common (ids, amounts in cents) to call an SSN.

use super::scan::{at, digits_from, ends, is_digit, number};

/// `AAA-GG-SSSS`.
pub(crate) const MAX_LEN: usize = 11;

/// An SSN starting at `i`, the start of a fresh run of `run` digits: its end.
///
/// Area not 000, 666 or 900–999; group not 00; serial not 0000 (the SSA never issues
/// those). The separator is the same twice, and the number does not go on with another
/// separator and digit.
pub(crate) fn at_run(text: &[u8], i: usize, run: usize) -> Option<usize> {
    if run != 3 {
        return None;
    }
    let sep = at(text, i + 3);
    if sep != b'-' && sep != b' ' {
        return None;
    }
    if digits_from(text, i + 4) != 2 || at(text, i + 6) != sep || digits_from(text, i + 7) != 4 {
        return None;
    }
    let end = i + 11;
    if !ends(text, end) || (at(text, end) == sep && is_digit(at(text, end + 1))) {
        return None;
    }
    let area = number(text, i, 3);
    let group = number(text, i + 4, 2);
    let serial = number(text, i + 7, 4);
    let ok = area != 0 && area != 666 && area < 900 && group != 0 && serial != 0;
    ok.then_some(end)
}
