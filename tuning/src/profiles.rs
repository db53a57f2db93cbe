//! The shipped profiles: `tuning/profiles/NAME.toml`, compiled into the binary so that
//! `--profile NAME` means the same thing wherever the binary runs.

use std::fmt;

/// One shipped profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// What `--profile` and `[tuning] profile` take.
    pub name: &'static str,
    /// The file as shipped, comments included (`sluice tune show NAME` prints it).
    pub text: &'static str,
}

/// Every shipped profile; the first is the one in effect when none is chosen.
pub const PROFILES: &[Profile] = &[
    Profile {
        name: "balanced",
        text: include_str!("../profiles/balanced.toml"),
    },
    Profile {
        name: "low-latency",
        text: include_str!("../profiles/low-latency.toml"),
    },
    Profile {
        name: "high-throughput",
        text: include_str!("../profiles/high-throughput.toml"),
    },
    Profile {
        name: "audit-heavy",
        text: include_str!("../profiles/audit-heavy.toml"),
    },
    Profile {
        name: "small-host",
        text: include_str!("../profiles/small-host.toml"),
    },
];

/// The keys a profile may set: how the gateway uses the machine, never what it protects
/// or where it connects. A shipped profile outside this list fails a unit test.
pub const TUNABLE_KEYS: &[&str] = &[
    "listen.workers",
    "listen.pin_workers",
    "listen.driver",
    "listen.uring_entries",
    "io.backlog",
    "io.uring_coop_taskrun",
    "io.uring_sqpoll",
    "io.uring_sqpoll_idle_ms",
    "limits.buffer_bytes",
    "limits.classify_cache_entries",
    "limits.max_message_bytes",
    "limits.handshake_timeout_secs",
    "limits.backend_connect_timeout_secs",
    "recording.enabled",
    "recording.codec",
    "recording.zstd_level",
    "recording.block_kib",
    "recording.segment_mib",
    "recording.segment_age_secs",
    "recording.fsync",
    "recording.fsync_interval_ms",
    "recording.queue_mib",
    "recording.overflow",
    "shutdown.grace_secs",
];

/// A profile name that is not shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownProfile(pub String);

impl fmt::Display for UnknownProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = PROFILES.iter().map(|p| p.name).collect();
        write!(
            f,
            "unknown tuning profile {:?}: the profiles are {}",
            self.0,
            known.join(", ")
        )
    }
}

impl std::error::Error for UnknownProfile {}

/// The shipped profile called `name`.
pub fn find(name: &str) -> Result<&'static Profile, UnknownProfile> {
    PROFILES
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| UnknownProfile(name.to_owned()))
}

impl Profile {
    /// The settings, as a TOML table.
    pub fn table(&self) -> anyhow::Result<toml::Table> {
        toml::from_str(self.text)
            .map_err(|e| anyhow::anyhow!("shipped profile {} does not parse: {e}", self.name))
    }

    /// The first line of the leading comment, without the name: what it is for.
    pub fn summary(&self) -> &'static str {
        let first = self.text.lines().next().unwrap_or_default();
        let first = first.trim_start_matches('#').trim();
        first
            .strip_prefix(self.name)
            .map_or(first, |rest| rest.trim_start_matches(':').trim())
    }

    /// The leading comment block (the profile's documentation), without `#`.
    pub fn description(&self) -> String {
        let mut lines = Vec::new();
        for line in self.text.lines() {
            let Some(comment) = line.strip_prefix('#') else {
                break;
            };
            lines.push(comment.strip_prefix(' ').unwrap_or(comment));
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_match_their_first_line() {
        for (i, profile) in PROFILES.iter().enumerate() {
            assert!(
                profile.text.starts_with(&format!("# {}: ", profile.name)),
                "{} must open with '# {}: <summary>'",
                profile.name,
                profile.name
            );
            assert!(!profile.summary().is_empty());
            assert!(PROFILES[i + 1..].iter().all(|p| p.name != profile.name));
        }
        assert_eq!(PROFILES[0].name, "balanced");
        for required in [
            "balanced",
            "low-latency",
            "high-throughput",
            "audit-heavy",
            "small-host",
        ] {
            find(required).expect(required);
        }
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        let err = find("fast").expect_err("not shipped");
        let text = err.to_string();
        assert!(text.contains("\"fast\""), "{text}");
        for profile in PROFILES {
            assert!(text.contains(profile.name), "{text}");
        }
    }

    #[test]
    fn every_key_is_tunable_and_commented() {
        for profile in PROFILES {
            let table = profile.table().expect("parses");
            let mut keys = Vec::new();
            crate::merge::leaf_keys(&table, "", &mut keys);
            assert!(!keys.is_empty(), "{} sets nothing", profile.name);
            for key in &keys {
                assert!(
                    TUNABLE_KEYS.contains(&key.as_str()),
                    "profile {} sets {key}, which is not a tuning key",
                    profile.name
                );
            }
            // Every setting says why, in the comment right above it.
            let mut previous = "";
            for line in profile.text.lines() {
                let line = line.trim();
                let is_setting =
                    !line.is_empty() && !line.starts_with('#') && !line.starts_with('[');
                if is_setting {
                    assert!(
                        previous.starts_with('#'),
                        "profile {}: {line:?} has no comment saying why",
                        profile.name
                    );
                }
                previous = line;
            }
        }
    }
}
