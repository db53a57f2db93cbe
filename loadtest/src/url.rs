//! `postgres://user:password@host:port/db?sslmode=…&sslrootcert=…` into a [`Target`].

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// How the connection is encrypted, from the URL's `sslmode`. The default is `disable`
/// (unlike libpq's `prefer`), so a figure never silently mixes plain and TLS connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    /// Encrypt, but accept any server certificate (libpq's meaning of `require`).
    Require,
    /// Encrypt and verify the certificate chain and the host name.
    VerifyFull,
}

/// One server to load, parsed from its URL.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password is a gateway token more often than not: never print it.
        write!(f, "{self}")
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "postgres://{}@{}:{}/{}?sslmode={}",
            self.user,
            self.host,
            self.port,
            self.database,
            match self.sslmode {
                SslMode::Disable => "disable",
                SslMode::Require => "require",
                SslMode::VerifyFull => "verify-full",
            }
        )
    }
}

impl Target {
    pub fn parse(url: &str) -> Result<Target> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .context("a target URL starts with postgres:// or postgresql://")?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, database) = match rest.split_once('/') {
            Some((a, d)) => (a, decode(d)?),
            None => (rest, String::new()),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pw)) => (decode(user)?, decode(pw)?),
                None => (decode(u)?, String::new()),
            },
            None => (String::new(), String::new()),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, p) = h.split_once(']').context("unclosed [ in the URL's host")?;
            (h.to_string(), p.strip_prefix(':').unwrap_or(""))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (hostport.to_string(), ""),
            }
        };
        let port = if port.is_empty() {
            5432
        } else {
            port.parse()
                .with_context(|| format!("port {port:?} in the URL is not a number"))?
        };
        let mut target = Target {
            host: if host.is_empty() {
                "127.0.0.1".into()
            } else {
                host
            },
            port,
            user,
            password,
            database: database.clone(),
            sslmode: SslMode::Disable,
            sslrootcert: None,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v)?;
            match k {
                "sslmode" => {
                    target.sslmode = match v.as_str() {
                        "disable" => SslMode::Disable,
                        "require" => SslMode::Require,
                        "verify-full" => SslMode::VerifyFull,
                        other => bail!(
                            "sslmode={other} is not supported; use disable, require or verify-full"
                        ),
                    }
                }
                "sslrootcert" => target.sslrootcert = Some(PathBuf::from(v)),
                "user" => target.user = v,
                "password" => target.password = v,
                "dbname" => target.database = v,
                "application_name" | "connect_timeout" => {}
                other => bail!("URL parameter {other:?} is not supported"),
            }
        }
        if target.user.is_empty() {
            bail!("the target URL names no user");
        }
        if target.database.is_empty() {
            target.database = target.user.clone();
        }
        Ok(target)
    }
}

fn decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .context("truncated %-escape in the URL")?;
            out.push(u8::from_str_radix(hex, 16).context("bad %-escape in the URL")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("the URL is not UTF-8 after %-decoding")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_url() {
        let t = Target::parse(
            "postgres://al%40ice:p%3Aw@127.0.0.1:6432/shop?sslmode=verify-full&sslrootcert=/tmp/ca.pem",
        )
        .expect("parse");
        assert_eq!(t.user, "al@ice");
        assert_eq!(t.password, "p:w");
        assert_eq!(t.port, 6432);
        assert_eq!(t.database, "shop");
        assert_eq!(t.sslmode, SslMode::VerifyFull);
        assert_eq!(t.sslrootcert, Some(PathBuf::from("/tmp/ca.pem")));
        assert!(!format!("{t:?}").contains("p:w"));
    }

    #[test]
    fn defaults_and_refusals() {
        let t = Target::parse("postgresql://bob@localhost").expect("parse");
        assert_eq!((t.port, t.database.as_str()), (5432, "bob"));
        assert_eq!(t.sslmode, SslMode::Disable);
        assert!(Target::parse("mysql://x@y/z").is_err());
        assert!(Target::parse("postgres://x@y/z?sslmode=prefer").is_err());
        assert!(Target::parse("postgres://x@y:abc/z").is_err());
    }
}
