//! Running cryptsetup and systemd-cryptenroll for a change. Secrets travel on the child's
//! environment (`PASSWORD`, `NEWPASSWORD`), its standard input, or a 0600 key file whose *path* is
//! an argument: never as an argument themselves. What the tools print on stderr is logged only
//! after every secret of the call has been cut out of it.

use std::io::Write;
use std::process::{Command, Stdio};

pub struct Out {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.status == 0
    }
}

/// A tool run: program, arguments, secret environment, secret standard input.
pub struct Call<'a> {
    pub program: &'a str,
    pub args: Vec<String>,
    pub env: Vec<(&'static str, &'a str)>,
    pub stdin: Option<&'a [u8]>,
}

impl<'a> Call<'a> {
    pub fn new(program: &'a str, args: &[&str]) -> Self {
        Call { program, args: args.iter().map(|s| s.to_string()).collect(), env: vec![], stdin: None }
    }
    pub fn env(mut self, name: &'static str, secret: &'a str) -> Self {
        self.env.push((name, secret));
        self
    }
    pub fn stdin(mut self, secret: &'a [u8]) -> Self {
        self.stdin = Some(secret);
        self
    }

    /// Run to completion. A program that cannot be started gives status -1.
    pub fn run(&self) -> Out {
        let mut cmd = Command::new(self.program);
        cmd.args(&self.args).stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
        // No password agent, no terminal prompt: a missing secret is an error, not a hang.
        cmd.env("SYSTEMD_ASK_PASSWORD_AGENT", "0").env_remove("PASSWORD").env_remove("NEWPASSWORD").env_remove("PIN");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => return Out { status: -1, stdout: String::new(), stderr: format!("{} could not be started: {e}", self.program) },
        };
        if let (Some(input), Some(mut pipe)) = (self.stdin, child.stdin.take()) {
            let _ = pipe.write_all(input);
        }
        match child.wait_with_output() {
            Ok(o) => Out {
                status: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: self.scrub(&String::from_utf8_lossy(&o.stderr)),
            },
            Err(e) => Out { status: -1, stdout: String::new(), stderr: format!("{}: {e}", self.program) },
        }
    }

    /// `text` with every secret of this call replaced.
    fn scrub(&self, text: &str) -> String {
        let mut t = text.to_string();
        let stdin = self.stdin.and_then(|s| std::str::from_utf8(s).ok());
        for s in self.env.iter().map(|(_, v)| *v).chain(stdin) {
            let s = s.trim();
            if s.len() >= 4 {
                t = t.replace(s, "<secret>");
            }
        }
        t
    }

    /// For logs and errors: the program and its arguments (which never hold secrets).
    pub fn describe(&self) -> String {
        format!("{} {}", self.program, self.args.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_go_by_env_and_stdin_and_are_scrubbed_from_stderr() {
        let out = Call::new("sh", &["-c", "printf %s \"$NEWPASSWORD\" >&2; cat >&2; printf ok"]).env("NEWPASSWORD", "hunter2-secret").stdin(b"stdin-secret").run();
        assert!(out.ok());
        assert_eq!(out.stdout, "ok");
        assert_eq!(out.stderr, "<secret><secret>");
        assert_eq!(Call::new("/nonexistent/tool", &[]).run().status, -1);
    }
}
