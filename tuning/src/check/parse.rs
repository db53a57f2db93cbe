//! Parsers for what `/proc` and `/sys` say, as plain functions over text, so that every
//! format is tested with fixture strings and no test depends on the machine it runs on.

/// A resource limit as `/proc/PID/limits` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `unlimited`.
    Unlimited,
    /// A number (bytes for memlock, descriptors for nofile).
    Value(u64),
}

impl Limit {
    /// Whether the limit allows at least `need`.
    pub fn allows(self, need: u64) -> bool {
        match self {
            Limit::Unlimited => true,
            Limit::Value(v) => v >= need,
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Unlimited => f.write_str("unlimited"),
            Limit::Value(v) => write!(f, "{v}"),
        }
    }
}

/// Soft and hard value of one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftHard {
    /// What the process gets now.
    pub soft: Limit,
    /// What it may raise the soft limit to without privileges.
    pub hard: Limit,
}

/// The limit called `name` (e.g. `Max open files`) in the text of `/proc/PID/limits`.
pub fn limit(limits: &str, name: &str) -> Option<SoftHard> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let mut values = line[name.len()..].split_whitespace();
    let parse = |v: &str| match v {
        "unlimited" => Some(Limit::Unlimited),
        n => n.parse().ok().map(Limit::Value),
    };
    Some(SoftHard {
        soft: parse(values.next()?)?,
        hard: parse(values.next()?)?,
    })
}

/// The CPUs of a list like `0-3,5,8-9` (`/sys/devices/system/cpu/online`,
/// `Cpus_allowed_list`).
pub fn cpu_list(text: &str) -> Option<Vec<u32>> {
    let text = text.trim();
    if text.is_empty() {
        return Some(Vec::new());
    }
    let mut cpus = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last): (u32, u32) =
                    (first.trim().parse().ok()?, last.trim().parse().ok()?);
                if last < first || last - first > 65_536 {
                    return None;
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    Some(cpus)
}

/// The value of `Field:` in `/proc/PID/status`.
pub fn status_field<'a>(status: &'a str, field: &str) -> Option<&'a str> {
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim())
    })
}

/// The selected word of a sysfs choice like `always [madvise] never`.
pub fn bracketed(text: &str) -> Option<&str> {
    let start = text.find('[')?;
    let end = start + text[start..].find(']')?;
    Some(&text[start + 1..end])
}

/// One number from a sysctl file.
pub fn number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `net.ipv4.ip_local_port_range`: first and last port.
pub fn port_range(text: &str) -> Option<(u32, u32)> {
    let mut it = text.split_whitespace();
    let first = it.next()?.parse().ok()?;
    let last = it.next()?.parse().ok()?;
    (first <= last && it.next().is_none()).then_some((first, last))
}

/// Major and minor of a kernel release like `6.8.0-1019-aws` or `5.10.0`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.trim().split(['.', '-']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max open files            1024                 524288               files     
Max locked memory         65536                65536                bytes     
Max address space         unlimited            unlimited            bytes     
";

    #[test]
    fn limits_are_read_by_name_with_unlimited() {
        assert_eq!(
            limit(LIMITS, "Max open files"),
            Some(SoftHard {
                soft: Limit::Value(1024),
                hard: Limit::Value(524_288)
            })
        );
        assert_eq!(
            limit(LIMITS, "Max locked memory").map(|l| l.soft),
            Some(Limit::Value(65_536))
        );
        assert_eq!(
            limit(LIMITS, "Max address space").map(|l| l.hard),
            Some(Limit::Unlimited)
        );
        assert_eq!(limit(LIMITS, "Max processes"), None);
        assert_eq!(
            limit("Max open files  lots  many files", "Max open files"),
            None
        );
        assert!(Limit::Unlimited.allows(u64::MAX));
        assert!(!Limit::Value(10).allows(11));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(cpu_list("0-3,5,8-9"), Some(vec![0, 1, 2, 3, 5, 8, 9]));
        assert_eq!(cpu_list("7"), Some(vec![7]));
        assert_eq!(cpu_list(""), Some(vec![]));
        assert_eq!(cpu_list("3-1"), None);
        assert_eq!(cpu_list("a-b"), None);
        assert_eq!(cpu_list("0-4294967295"), None);
    }

    #[test]
    fn status_fields() {
        let status = "Name:\tsluice\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n";
        assert_eq!(status_field(status, "Cpus_allowed_list"), Some("0-1"));
        assert_eq!(status_field(status, "Cpus_allowed"), Some("3"));
        assert_eq!(status_field(status, "Threads"), None);
    }

    #[test]
    fn sysfs_choices_and_numbers() {
        assert_eq!(bracketed("always [madvise] never\n"), Some("madvise"));
        assert_eq!(
            bracketed("always defer defer+madvise [madvise] never"),
            Some("madvise")
        );
        assert_eq!(bracketed("[always] madvise never"), Some("always"));
        assert_eq!(bracketed("always madvise never"), None);
        assert_eq!(number("4096\n"), Some(4096));
        assert_eq!(
            number("9223372036854775807\n"),
            Some(9_223_372_036_854_775_807)
        );
        assert_eq!(number("x"), None);
    }

    #[test]
    fn port_ranges_and_kernel_versions() {
        assert_eq!(port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(port_range("1024 65535"), Some((1024, 65535)));
        assert_eq!(port_range("60999 32768"), None);
        assert_eq!(port_range("1 2 3"), None);
        assert_eq!(kernel_version("6.8.0-1019-aws\n"), Some((6, 8)));
        assert_eq!(kernel_version("5.10.0"), Some((5, 10)));
        assert_eq!(kernel_version("4.19-rc1"), Some((4, 19)));
        assert_eq!(kernel_version("linux"), None);
    }
}
