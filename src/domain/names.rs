//! Validation of the two kinds of names the API accepts: DNS names to put in
//! a certificate (RFC 1035 §2.3.1 preferred syntax, as CAs apply it under the
//! Baseline Requirements) and the identifier of a managed name.
//!
//! Messages name the bad input and the rule it broke, because they are sent
//! back to API clients verbatim.

use std::fmt;

use serde::Serialize;

/// Why a name was rejected. The text is safe to show to API clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub String);

fn err(msg: String) -> NameError {
    NameError(msg)
}

/// A DNS name that a public CA can put into a certificate: ASCII, lower case,
/// no trailing dot, 2+ labels, each 1–63 of `[a-z0-9-]` not starting or
/// ending with `-`, at most 253 characters, optionally a leading `*.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DnsName(String);

impl DnsName {
    /// Validates and normalises `raw`. Upper case is folded to lower case and
    /// one trailing dot is dropped; everything else that is not the
    /// preferred syntax is rejected with a message that says why.
    pub fn parse(raw: &str) -> Result<DnsName, NameError> {
        let shown = raw.chars().take(80).collect::<String>();
        if raw.is_empty() {
            return Err(err("domain name is empty".into()));
        }
        if raw.trim() != raw {
            return Err(err(format!(
                "domain name '{shown}' has leading or trailing whitespace"
            )));
        }
        if !raw.is_ascii() {
            return Err(err(format!(
                "domain name '{shown}' contains non-ASCII characters; give internationalized names in their A-label (xn--) form"
            )));
        }
        let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        if name.len() > 253 {
            return Err(err(format!(
                "domain name '{shown}…' is {} characters long; the limit is 253",
                name.len()
            )));
        }
        if name.parse::<std::net::IpAddr>().is_ok()
            || name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::Ipv6Addr>()
                .is_ok()
        {
            return Err(err(format!(
                "'{shown}' is an IP address; only DNS names are supported"
            )));
        }
        let (wildcard, rest) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name.as_str()),
        };
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() < 2 {
            return Err(err(format!(
                "domain name '{shown}' must have at least two labels (like example.com)"
            )));
        }
        for label in &labels {
            check_label(label, &shown)?;
        }
        if let Some(tld) = labels.last()
            && tld.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(err(format!(
                "domain name '{shown}' ends in an all-numeric label '{tld}'"
            )));
        }
        let _ = wildcard;
        Ok(DnsName(name))
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a wildcard (`*.example.com`), which only DNS-01 can
    /// validate (RFC 8555 §7.1.3).
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }
}

fn check_label(label: &str, shown: &str) -> Result<(), NameError> {
    if label.is_empty() {
        return Err(err(format!("domain name '{shown}' has an empty label")));
    }
    if label == "*" {
        return Err(err(format!(
            "domain name '{shown}' has a '*' that is not the whole leftmost label"
        )));
    }
    if label.len() > 63 {
        return Err(err(format!(
            "label '{}…' in domain name '{shown}' is {} characters long; the limit is 63",
            &label[..20],
            label.len()
        )));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        let why = match c {
            '_' => "underscores are not allowed in hostnames".to_string(),
            '*' => "'*' is only allowed as the whole leftmost label".to_string(),
            other => format!("character '{other}' is not allowed"),
        };
        return Err(err(format!("domain name '{shown}': {why}")));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(err(format!(
            "label '{label}' in domain name '{shown}' starts or ends with a hyphen"
        )));
    }
    Ok(())
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The identifier of a managed name (what the user calls it; the key of
/// `/v1/names/{name}`): 1–128 characters of `[a-z0-9._-]`, starting with a
/// letter or digit, so it is safe in URLs, file names and metric labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ManagedNameId(String);

impl ManagedNameId {
    /// Validates `raw` (case is not folded: `Shop` is rejected, not renamed,
    /// so a client never finds its name under a different spelling).
    pub fn parse(raw: &str) -> Result<ManagedNameId, NameError> {
        let shown = raw.chars().take(80).collect::<String>();
        if raw.is_empty() {
            return Err(err("name is empty".into()));
        }
        if raw.len() > 128 {
            return Err(err(format!(
                "name '{shown}…' is {} characters long; the limit is 128",
                raw.len()
            )));
        }
        if let Some(c) = raw.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        }) {
            return Err(err(format!(
                "name '{shown}' contains '{c}'; allowed are lower-case letters, digits, '.', '_' and '-'"
            )));
        }
        if !raw.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(err(format!(
                "name '{shown}' must start with a letter or digit"
            )));
        }
        Ok(ManagedNameId(raw.to_string()))
    }

    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ManagedNameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so fuzz-style tests are
    /// reproducible without a dependency.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn string(&mut self) -> String {
            const ALPHABET: &[char] = &[
                'a', 'z', 'A', 'Z', '0', '9', '-', '_', '.', '*', ' ', '\t', '/', ':', '[', ']',
                'é', 'ß', '\u{0}', 'x', 'n', '-',
            ];
            let len = (self.next() % 300) as usize;
            (0..len)
                .map(|_| ALPHABET[(self.next() % ALPHABET.len() as u64) as usize])
                .collect()
        }
    }

    #[test]
    fn validators_never_panic_and_accepted_names_are_canonical() {
        let mut g = Gen(0x9E37_79B9_7F4A_7C15);
        let mut accepted = 0;
        for _ in 0..50_000 {
            let raw = g.string();
            if let Ok(n) = DnsName::parse(&raw) {
                accepted += 1;
                let s = n.as_str();
                assert!(s.len() <= 253, "{raw:?}");
                assert!(s.is_ascii() && s == s.to_ascii_lowercase(), "{raw:?}");
                assert!(!s.ends_with('.') && !s.contains(".."), "{raw:?}");
                assert_eq!(
                    DnsName::parse(s)
                        .map(|m| m.as_str().to_string())
                        .ok()
                        .as_deref(),
                    Some(s)
                );
            }
            if let Ok(id) = ManagedNameId::parse(&raw) {
                assert!(
                    id.as_str().len() <= 128 && !id.as_str().is_empty(),
                    "{raw:?}"
                );
            }
        }
        // The generator must also reach the accepting paths sometimes.
        let mut g = Gen(7);
        for _ in 0..2_000 {
            let label: String = (0..(g.next() % 10 + 1))
                .map(|_| (b'a' + (g.next() % 26) as u8) as char)
                .collect();
            let name = format!("{label}.example.test");
            assert!(DnsName::parse(&name).is_ok(), "{name}");
            accepted += 1;
        }
        assert!(accepted >= 2_000);
    }

    #[test]
    fn dns_names_accepted_and_normalised() {
        let cases = [
            ("example.com", "example.com"),
            ("WWW.Example.COM", "www.example.com"),
            ("example.com.", "example.com"),
            ("*.example.com", "*.example.com"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a-b.c1.example.test", "a-b.c1.example.test"),
        ];
        for (raw, want) in cases {
            assert_eq!(
                DnsName::parse(raw).map(|n| n.0),
                Ok(want.to_string()),
                "{raw}"
            );
        }
    }

    #[test]
    fn dns_names_rejected_with_reason() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}com", "abcdefghi.".repeat(26));
        let cases: [(&str, &str); 14] = [
            ("", "empty"),
            ("example..com", "empty label"),
            (".example.com", "empty label"),
            (&long_label, "limit is 63"),
            (&long_name, "limit is 253"),
            ("foo_bar.example.com", "underscores"),
            ("127.0.0.1", "IP address"),
            ("::1", "IP address"),
            ("bücher.example", "A-label"),
            ("localhost", "two labels"),
            ("-a.example.com", "hyphen"),
            ("a.*.example.com", "leftmost"),
            (" example.com", "whitespace"),
            ("example.123", "all-numeric"),
        ];
        for (raw, why) in cases {
            let e = DnsName::parse(raw).expect_err(raw);
            assert!(e.0.contains(why), "{raw}: {e}");
        }
    }

    #[test]
    fn managed_name_ids() {
        assert!(ManagedNameId::parse("shop-eu.example_1").is_ok());
        for bad in ["", "Shop", "-x", "a/b", "a b", &"x".repeat(129)] {
            assert!(ManagedNameId::parse(bad).is_err(), "{bad}");
        }
    }
}
