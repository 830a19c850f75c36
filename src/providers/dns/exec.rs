//! `kind = "exec"`: the operator's own program publishes the records, for
//! any DNS twincert has no provider for.
//!
//! The program is run without a shell, as
//! `command[0] command[1..] present <fqdn> <value>` to add a TXT value and
//! `command[0] command[1..] cleanup <fqdn> <value>` to remove exactly that
//! value again — the arguments lego's `exec` provider passes, so a script
//! written for lego works unchanged. `<fqdn>` ends with a dot, as lego's
//! does. Exit status 0 means done; anything else is an error carrying the
//! end of the program's stderr (so whatever the program prints there is
//! shown to operators: it must not print secrets). The program runs in its
//! own process group; when it has not finished after `timeout_seconds` the
//! whole group is killed. It is run exactly as a files destination's
//! post-deploy command (`crate::command::run_command`): twincert's
//! environment plus the entry's `env` table.
//!
//! The contract the program must keep, like every provider: `present`
//! appends (another value may already be at that name: the other CA's, or
//! the wildcard's), `cleanup` deletes only the value it is given.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::time::Duration;

use super::{CheckFuture, DnsError, DnsFuture, DnsProvider, ProviderCheck, longest_zone};
use crate::command::{CommandStatus, run_command};

/// The program to run and how (`kind = "exec"`), as the configuration
/// validated them.
#[derive(Clone)]
pub struct ExecSettings {
    /// The program (a path, or a bare name looked up in `PATH`) and its
    /// leading arguments; never empty.
    pub command: Vec<String>,
    /// How long one call may take before its process group is killed.
    pub timeout: Duration,
    /// Extra environment variables (values may be secrets: not in
    /// `Debug`).
    pub env: BTreeMap<String, String>,
}

impl std::fmt::Debug for ExecSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSettings")
            .field("command", &self.command)
            .field("timeout", &self.timeout)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A provider that runs a program.
#[derive(Debug)]
pub struct Exec {
    id: String,
    zones: Vec<String>,
    settings: ExecSettings,
}

impl Exec {
    /// A provider from its configuration.
    pub fn new(id: &str, zones: &[String], settings: &ExecSettings) -> Result<Exec, DnsError> {
        if settings.command.is_empty() {
            return Err(DnsError(format!("DNS provider {id}: command is empty")));
        }
        Ok(Exec {
            id: id.to_string(),
            zones: zones.to_vec(),
            settings: settings.clone(),
        })
    }

    /// The whole argument vector of one call, the program first.
    fn argv(&self, action: &str, fqdn: &str, value: &str) -> Vec<String> {
        let mut argv = self.settings.command.clone();
        argv.push(action.to_string());
        argv.push(format!("{}.", fqdn.trim_end_matches('.')));
        argv.push(value.to_string());
        argv
    }

    async fn run(&self, action: &str, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let env: Vec<(&str, &OsStr)> = self
            .settings
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), OsStr::new(v)))
            .collect();
        let outcome =
            run_command(&self.argv(action, fqdn, value), self.settings.timeout, &env).await;
        if outcome.status.success() {
            return Ok(());
        }
        let what = format!(
            "DNS provider {} ({} {action} {})",
            self.id,
            self.settings.command[0],
            fqdn.trim_end_matches('.')
        );
        let how = match &outcome.status {
            CommandStatus::TimedOut => format!(
                "did not finish within {:?}; its process group was killed",
                self.settings.timeout
            ),
            other => other.to_string(),
        };
        let tail = outcome.stderr_tail.trim();
        Err(DnsError(if tail.is_empty() {
            format!("{what}: {how} (no stderr)")
        } else {
            format!("{what}: {how}; stderr ends: {tail}")
        }))
    }
}

impl DnsProvider for Exec {
    fn id(&self) -> &str {
        &self.id
    }

    fn zone_for(&self, fqdn: &str) -> Option<String> {
        longest_zone(&self.zones, fqdn)
    }

    fn present<'a>(&'a self, fqdn: &'a str, value: &'a str) -> DnsFuture<'a> {
        Box::pin(self.run("present", fqdn, value))
    }

    fn cleanup<'a>(&'a self, fqdn: &'a str, value: &'a str) -> DnsFuture<'a> {
        Box::pin(self.run("cleanup", fqdn, value))
    }

    fn check<'a>(&'a self, zone: &'a str) -> CheckFuture<'a> {
        let detail = format!(
            "DNS provider '{}' (exec) for zone {zone}: not checkable without a change: exec runs the operator's program only to present or clean up a record, so preflight does not run it",
            self.id
        );
        Box::pin(async move { ProviderCheck::NotCheckable(detail) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(command: &[&str], timeout_ms: u64) -> Exec {
        let settings = ExecSettings {
            command: command.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_millis(timeout_ms),
            env: BTreeMap::from([("SECRET_TOKEN".into(), "hunter2".into())]),
        };
        Exec::new("ex", &["example.test".into()], &settings).expect("valid")
    }

    #[tokio::test]
    async fn the_check_does_not_run_the_program_and_says_so() {
        // A program that would fail loudly if it ran.
        let e = exec(&["/nonexistent/program"], 1000);
        let ProviderCheck::NotCheckable(detail) = e.check("example.test").await else {
            panic!("exec is not checkable");
        };
        assert!(
            detail.starts_with("DNS provider 'ex' (exec) for zone example.test: not checkable")
                && !detail.contains("hunter2"),
            "{detail}"
        );
    }

    #[test]
    fn arguments_are_lego_s_and_the_debug_hides_env_values() {
        let e = exec(&["/bin/prog", "--flag"], 1000);
        assert_eq!(
            e.argv("present", "_acme-challenge.a.example.test", "-v1"),
            [
                "/bin/prog",
                "--flag",
                "present",
                "_acme-challenge.a.example.test.",
                "-v1"
            ]
        );
        assert_eq!(
            e.argv("cleanup", "_acme-challenge.a.example.test.", "v2")[2..],
            ["cleanup", "_acme-challenge.a.example.test.", "v2"]
        );
        let shown = format!("{e:?}");
        assert!(shown.contains("SECRET_TOKEN") && !shown.contains("hunter2"));
        let empty = ExecSettings {
            command: vec![],
            timeout: Duration::from_secs(1),
            env: BTreeMap::new(),
        };
        assert!(Exec::new("ex", &[], &empty).is_err());
    }

    #[tokio::test]
    async fn exit_status_stderr_env_and_timeout_become_errors_naming_the_provider() {
        let script = r#"test "$SECRET_TOKEN" = hunter2 && test "$1" = present"#;
        let ok = exec(&["/bin/sh", "-c", script, "sh"], 5000);
        ok.present("_acme-challenge.a.example.test", "v")
            .await
            .expect("runs with env and lego's arguments");
        let failing = exec(
            &[
                "/bin/sh",
                "-c",
                "echo first >&2; echo 'zone refused' >&2; exit 3",
            ],
            5000,
        );
        let err = failing
            .cleanup("a.example.test", "v")
            .await
            .expect_err("fails")
            .0;
        assert!(
            err.starts_with(
                "DNS provider ex (/bin/sh cleanup a.example.test): exited with status 3"
            ),
            "{err}"
        );
        assert!(err.ends_with("stderr ends: first\nzone refused"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        // A grandchild keeping stderr open is killed with the group.
        let started = std::time::Instant::now();
        let hanging = exec(&["/bin/sh", "-c", "sleep 30 & sleep 30"], 300);
        let err = hanging
            .present("a.example.test", "v")
            .await
            .expect_err("hangs")
            .0;
        assert!(err.contains("did not finish within 300ms"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let missing = exec(&["/nonexistent/prog"], 1000);
        let err = missing
            .present("a.example.test", "v")
            .await
            .expect_err("missing")
            .0;
        assert!(err.contains("could not be started"), "{err}");
    }
}
