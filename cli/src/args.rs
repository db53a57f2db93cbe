//! Value parsers shared by the subcommands: durations (`15m`, `1h 30m`) and group lists
//! (`--groups a,b --groups c`).

use std::time::Duration;

/// Parses a positive duration written the way people write them: `30s`, `15m`, `1h 30m`.
pub fn duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 30s, 15m, 8h"))?;
    if d.is_zero() {
        return Err("the duration must be positive".into());
    }
    Ok(d)
}

/// One group name from a comma-separated `--groups` list: surrounding spaces are dropped;
/// empty names and control characters are refused.
pub fn group(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty() {
        return Err("a group name is empty (write --groups a,b)".into());
    }
    if name.chars().any(char::is_control) {
        return Err(format!("group name {name:?} contains a control character"));
    }
    Ok(name.to_owned())
}

/// Milliseconds in `d`, saturating (the admin API carries durations as milliseconds).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_human_and_positive() {
        assert_eq!(duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration(" 250ms "), Ok(Duration::from_millis(250)));
        let err = duration("soon").unwrap_err();
        assert!(
            err.contains("not a duration") && err.contains("15m"),
            "{err}"
        );
        assert!(duration("15").is_err(), "a unit is required");
        assert_eq!(duration("0s"), Err("the duration must be positive".into()));
    }

    #[test]
    fn group_names_are_trimmed_and_checked() {
        assert_eq!(group(" dba "), Ok("dba".into()));
        assert_eq!(group("Domain Admins"), Ok("Domain Admins".into()));
        assert!(group("").unwrap_err().contains("empty"));
        assert!(group("  ").unwrap_err().contains("empty"));
        assert!(group("a\u{1b}[31m")
            .unwrap_err()
            .contains("control character"));
    }

    #[test]
    fn millis_saturates() {
        assert_eq!(millis(Duration::from_secs(90)), 90_000);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
