//! CPU time of local processes from /proc, for "CPU µs per transaction".

use std::time::Duration;

/// utime + stime of process `pid` (all its threads, living and exited), or `None` when it
/// cannot be read (gone, or not on Linux).
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

pub fn own_cpu() -> Option<Duration> {
    process_cpu(std::process::id())
}

fn parse_stat(stat: &str) -> Option<Duration> {
    // The command name (field 2) may contain spaces and parentheses: count fields from
    // the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 3 (state) is index 0, so utime (14) and stime (15) are 11, 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let hz = clock_ticks();
    Some(Duration::from_secs_f64((utime + stime) as f64 / hz))
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_an_odd_name() {
        let line = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        let cpu = parse_stat(line).expect("parse");
        assert_eq!(cpu, Duration::from_secs_f64(300.0 / clock_ticks()));
        assert!(own_cpu().is_some());
    }
}
