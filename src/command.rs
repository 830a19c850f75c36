//! Running an operator's program: a files destination's post-deploy
//! command, an `exec` DNS provider. The argv is run without a shell,
//! stdin and stdout closed, the end of stderr kept for the operator, and
//! after a timeout the program is killed with everything it started (it
//! leads its own process group). Knows nothing of what the program is for.

use std::fmt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

/// How much of a command's stderr is kept (its end).
pub const STDERR_TAIL_BYTES: usize = 4096;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandStatus {
    /// It exited with this code (0 is success).
    Exited(i32),
    /// A signal ended it.
    Signaled,
    /// It ran past the timeout and was killed.
    TimedOut,
    /// It could not be started (missing binary, permissions, empty argv).
    SpawnFailed(String),
}

impl CommandStatus {
    /// Whether the command did what it was asked.
    pub fn success(&self) -> bool {
        *self == CommandStatus::Exited(0)
    }
}

impl fmt::Display for CommandStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandStatus::Exited(code) => write!(f, "exited with status {code}"),
            CommandStatus::Signaled => f.write_str("was killed by a signal"),
            CommandStatus::TimedOut => f.write_str("timed out and was killed"),
            CommandStatus::SpawnFailed(why) => write!(f, "could not be started: {why}"),
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct CommandOutcome {
    /// How it ended.
    pub status: CommandStatus,
    /// The last [`STDERR_TAIL_BYTES`] of its stderr (lossy UTF-8), what an
    /// operator needs to see why a reload failed.
    pub stderr_tail: String,
    /// How long it ran.
    pub duration: Duration,
}

/// Runs `argv` with `env` added, stdin and stdout closed, stderr kept (its
/// tail), killed after `timeout` together with everything it started (it
/// leads its own process group). Also the runner of `exec` DNS providers.
pub async fn run_command(
    argv: &[String],
    timeout: Duration,
    env: &[(&str, &std::ffi::OsStr)],
) -> CommandOutcome {
    let started = Instant::now();
    let outcome = |status, stderr: &[u8]| CommandOutcome {
        status,
        stderr_tail: String::from_utf8_lossy(stderr).into_owned(),
        duration: started.elapsed(),
    };
    let Some((program, args)) = argv.split_first() else {
        return outcome(
            CommandStatus::SpawnFailed("the command is empty".into()),
            &[],
        );
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return outcome(CommandStatus::SpawnFailed(format!("{program}: {e}")), &[]),
    };
    let mut stderr = child.stderr.take();
    let mut tail = Vec::new();
    let finished = tokio::time::timeout(timeout, async {
        let read = async {
            if let Some(pipe) = stderr.as_mut() {
                read_tail(pipe, &mut tail).await;
            }
        };
        tokio::join!(read, child.wait()).1
    })
    .await;
    let status = match finished {
        Ok(Ok(status)) => match status.code() {
            Some(code) => CommandStatus::Exited(code),
            None => CommandStatus::Signaled,
        },
        Ok(Err(e)) => CommandStatus::SpawnFailed(format!("waiting for {program}: {e}")),
        Err(_) => {
            if let Some(pgid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) with a negative pid signals the process
                // group the child leads (`process_group(0)` above); no
                // memory is involved.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
            if let Err(e) = child.kill().await {
                tracing::warn!(program, error = %e, "could not kill a command");
            }
            CommandStatus::TimedOut
        }
    };
    outcome(status, &tail)
}

/// Reads `pipe` to its end, keeping the last [`STDERR_TAIL_BYTES`].
async fn read_tail(pipe: &mut (impl AsyncRead + Unpin), tail: &mut Vec<u8>) {
    let mut buf = [0u8; 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL_BYTES {
                    tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                }
            }
        }
    }
}
