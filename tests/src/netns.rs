//! Network namespaces for the capture and pod tests: made with `ip netns`, removed on drop
//! (their links with them), and processes run inside them. Needs root and iproute2; without
//! them a test fails saying so, never skips.

use std::process::{Child, Command, Output, Stdio};

/// A network namespace, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    /// `name` plus this process's ID, so concurrent test runs do not collide.
    pub fn new(name: &str) -> Netns {
        let name = format!("{name}-{}", std::process::id());
        let out = Command::new("ip").args(["netns", "add", &name]).output();
        match out {
            Ok(o) if o.status.success() => Netns(name),
            Ok(o) => panic!(
                "cannot create a network namespace (this test needs root): {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("cannot run `ip` (iproute2) for a network namespace: {e}"),
        }
    }

    /// Runs `program` in the namespace to completion.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {program}: {e}"))
    }

    /// As [`Netns::run`], panicking unless it succeeds.
    pub fn ok(&self, program: &str, args: &[&str]) {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "{} {program} {args:?}: {out:?}",
            self.0
        );
    }

    /// The HTTP status of `GET url` from the namespace (as root), `000` when there was no
    /// answer (refused, closed, timed out after 5 s).
    pub fn http_status(&self, url: &str) -> String {
        let out = self.run(
            "curl",
            &[
                "-s",
                "-m",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                url,
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `curl -s -m 5 ARGS...` in the namespace as `uid`: what an app running as it would get.
    pub fn curl_as(&self, uid: u32, args: &[&str]) -> Output {
        let (reuid, regid) = (format!("--reuid={uid}"), format!("--regid={uid}"));
        let mut all = vec![
            reuid.as_str(),
            regid.as_str(),
            "--clear-groups",
            "curl",
            "-s",
            "-m",
            "5",
        ];
        all.extend_from_slice(args);
        self.run("setpriv", &all)
    }

    /// A long-running process in the namespace as `uid` (and gid `uid`), output discarded.
    pub fn spawn_as(&self, uid: u32, program: &str, args: &[&str]) -> Child {
        let (reuid, regid) = (format!("--reuid={uid}"), format!("--regid={uid}"));
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.0,
                "setpriv",
                &reuid,
                &regid,
                "--clear-groups",
            ])
            .arg(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} in {}: {e}", self.0))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

/// Child processes, killed on drop (before the namespaces they run in go).
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
