//! The [`Process`] guard: one running child binary, the log file its output
//! goes to, and killing it when the guard drops however the test ends.
//! Starting it (exactly the given environment, output to the log) is
//! `spawn`'s; waiting on it (readiness, SIGTERM) is `waiting`'s; what the
//! children are and how they are wired is `stack`'s.

mod spawn;
mod waiting;

use std::{path::PathBuf, process::ExitStatus};

/// A running binary, killed when dropped (a failed assertion must not leave
/// servers behind). Its stdout and stderr go to a log file shown on failure.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: std::process::Child,
    log: PathBuf,
    /// Leads a process group of its own ([`Process::spawn_group`]): killed as a group.
    own_group: bool,
}

impl Process {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, and waits for it: the process dies wherever it is, with no
    /// shutdown, drain or flush (a crash, the OOM killer, a pulled plug).
    pub fn kill_9(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(|_| ())
    }

    /// The file its stdout and stderr go to.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// The last lines the process printed, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.own_group {
            // The group, even when its leader has exited: its children may not
            // have. The group id is the leader's pid, which the kernel does not
            // hand out again while any member of the group lives.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.pid())])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
