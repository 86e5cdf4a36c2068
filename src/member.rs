//! A set's members formatted in processes of their own.
//!
//! libcryptsetup is not thread-safe, so libcryptsetup-rs lets one thread
//! of a process into it at a time ([`crate::luks`]): threads that format
//! the members of a set "in parallel" take turns, and a set of 8 costs 8
//! headers one after another. Each member's format therefore runs in a
//! child process, this binary again under the hidden subcommand
//! [`names::MEMBER_COMMAND`], whose libcryptsetup is its own.
//!
//! A child rather than a fork: the parent has threads by then (tokio's,
//! the SDK's), and a fork of a threaded process may only call
//! async-signal-safe functions, which libcryptsetup is not. A new process
//! starts clean.
//!
//! The key never leaves locked memory but through a pipe: the parent
//! writes one JSON line (the job: device, options, place, the data key's
//! record; nothing secret) and then exactly the key's bytes into the
//! child's stdin; the child reads the line byte by byte (no buffer that
//! could hold the key) and the key straight into its own locked buffer.
//! Never argv, the environment or a file. The child prints one JSON line:
//! the new LUKS UUID, or the error and its exit code.
//!
//! Every child dies with the parent (`PR_SET_PDEATHSIG`, SIGKILL); the
//! parent polls its children and the signal flag, and on SIGTERM/SIGINT
//! kills and reaps them and fails like any step, so the run rolls back as
//! it would with threads. The first child to fail fails the step, and the
//! children still running are killed and reaped: headers left
//! `formatting` never held data, and the next `up` makes them again.
//!
//! At most as many children run at once as there are CPUs, and for
//! argon2id key slots (typed passphrases, up to 1 GiB each) as many as
//! the available memory holds.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::{Failure, EXIT_FAILED};
use crate::keys::data_key::WrappedKey;
use crate::keys::Passphrase;
use crate::luks::token::Place;
use crate::luks::{FormatOptions, Kdf, SlotKey};
use crate::names;
use crate::signals;

/// One member's format, as the parent hands it to a child (nothing
/// secret: the key follows the line on its own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatJob {
    pub dev: PathBuf,
    pub opts: FormatOptions,
    pub place: Place,
    /// Examine the disk again first (unless `--force` wiped it).
    pub check: bool,
    /// Over a header of ours that never held data ([`crate::exec`]).
    pub again: bool,
    /// The data key's record for the token (`--kms-key`); `None`: the
    /// key is the set's one passphrase.
    pub record: Option<WrappedKey>,
    /// The key's length in bytes, which follow the line.
    pub key_len: usize,
}

/// What a child prints.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Formatted { uuid: String },
    Failed { error: String, exit: u8 },
}

/// How many children may run at once for `jobs`: the CPUs, and for
/// argon2id key slots what the memory holds (1 GiB each, libcryptsetup's
/// most), at least one.
pub fn limit(members: usize, kdf: Kdf, cpus: usize, mem_available: u64) -> usize {
    let by_memory = match kdf {
        Kdf::Argon2id => (mem_available >> 30) as usize,
        Kdf::Pbkdf2 => usize::MAX,
    };
    members.min(cpus).min(by_memory).max(1)
}

/// The children's limit on this machine.
fn limit_here(members: usize, kdf: Kdf) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = crate::observe::sys::mem_available(std::path::Path::new("/")).unwrap_or(0);
    limit(members, kdf, cpus, mem)
}

/// Formats every member of `jobs` in a child each, at most [`limit`] at
/// a time; returns their LUKS UUIDs in the jobs' order, each with the
/// seconds its process took (start to end). The first failure (or
/// SIGTERM/SIGINT) ends the children still running and fails.
pub fn format_all(jobs: &[FormatJob], key: &Passphrase) -> Result<Vec<(String, f64)>> {
    let kdf = jobs.first().map_or(Kdf::Pbkdf2, |j| j.opts.kdf);
    let at_once = limit_here(jobs.len(), kdf);
    let mut uuids: Vec<Option<(String, f64)>> = vec![None; jobs.len()];
    let mut running: Vec<(usize, Child, Instant)> = Vec::new();
    let mut next = 0;
    let failed = 'run: loop {
        if let Err(e) = signals::check() {
            break Some(e);
        }
        while running.len() < at_once && next < jobs.len() {
            match spawn(&jobs[next], key) {
                Ok(c) => running.push((next, c, Instant::now())),
                Err(e) => break 'run Some(e),
            }
            next += 1;
        }
        if running.is_empty() {
            break None;
        }
        // A child that ended (or cannot be waited for: answer says so).
        match running
            .iter_mut()
            .position(|(_, c, _)| !matches!(c.try_wait(), Ok(None)))
        {
            Some(i) => {
                let (n, c, started) = running.swap_remove(i);
                match answer(&jobs[n], c) {
                    Ok(uuid) => uuids[n] = Some((uuid, crate::exec::seconds_since(started))),
                    Err(e) => break Some(e),
                }
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    // No child outlives a failed run.
    for (_, mut c, _) in running {
        let _ = c.kill();
        let _ = c.wait();
    }
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(uuids
        .into_iter()
        .map(|u| u.expect("every member answered"))
        .collect())
}

/// Starts the child for `job` and hands it the job and the key.
fn spawn(job: &FormatJob, key: &Passphrase) -> Result<Child> {
    let what = || format!("starting the process that formats {}", job.dev.display());
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(names::MEMBER_COMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(what)?;
    let handed = (|| -> std::io::Result<()> {
        let mut stdin = child.stdin.take().expect("piped");
        let mut line = serde_json::to_vec(&FormatJob {
            key_len: key.len(),
            ..job.clone()
        })
        .map_err(std::io::Error::other)?;
        line.push(b'\n');
        stdin.write_all(&line)?;
        stdin.write_all(key.expose())
    })();
    if let Err(e) = handed {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e).with_context(what);
    }
    Ok(child)
}

/// The ended child's answer.
fn answer(job: &FormatJob, mut c: Child) -> Result<String> {
    let mut out = String::new();
    if let Some(mut o) = c.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let status = c.wait().context("waiting for a member's process")?;
    match serde_json::from_str::<Answer>(out.trim()) {
        Ok(Answer::Formatted { uuid }) if status.success() => Ok(uuid),
        Ok(Answer::Failed { error, exit }) => Err(failure(exit, error)),
        _ => anyhow::bail!(
            "the process formatting {} ended without an answer ({status})",
            job.dev.display()
        ),
    }
}

/// A child's error as the parent reports it, with the same exit code.
fn failure(exit: u8, message: String) -> anyhow::Error {
    match exit {
        EXIT_FAILED => anyhow::anyhow!(message),
        exit => Failure::Relayed { exit, message }.into(),
    }
}

/// The child: reads its job and key from stdin, formats, and prints its
/// answer on stdout. Returns the exit code.
pub fn child_main(format: impl Fn(&FormatJob, SlotKey<'_>) -> Result<String>) -> u8 {
    crate::fault::in_member_child();
    let answer = match read_job().and_then(|(job, key)| {
        let slot = match &job.record {
            Some(record) => SlotKey::NewDataKey { pass: &key, record },
            None => SlotKey::Given {
                pass: &key,
                from: "the set's passphrase",
            },
        };
        format(&job, slot)
    }) {
        Ok(uuid) => Answer::Formatted { uuid },
        Err(e) => Answer::Failed {
            error: format!("{e:#}"),
            exit: crate::error::exit_code_of(&e),
        },
    };
    let code = match &answer {
        Answer::Formatted { .. } => 0,
        Answer::Failed { exit, .. } => *exit,
    };
    let line = serde_json::to_string(&answer).expect("an answer serialises");
    let _ = writeln!(std::io::stdout(), "{line}");
    code
}

/// The job line and the key that follows it, from stdin (unbuffered: the
/// key goes from the pipe straight into locked memory).
fn read_job() -> Result<(FormatJob, Passphrase)> {
    let mut stdin = std::io::stdin().lock();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        stdin
            .read_exact(&mut b)
            .context("reading the job from the parent")?;
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        anyhow::ensure!(line.len() < 1 << 20, "the job from the parent has no end");
    }
    let job: FormatJob =
        serde_json::from_slice(&line).context("reading the job from the parent")?;
    let key = Passphrase::read_exact_from(&mut stdin, job.key_len, "the key from the parent")?;
    Ok((job, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_bounded_by_cpus_and_for_argon2id_by_memory() {
        let gib = 1u64 << 30;
        // rows: members, kdf, cpus, available memory -> at once
        let rows = [
            (8, Kdf::Pbkdf2, 2, 64 * gib, 2),
            (8, Kdf::Pbkdf2, 128, gib / 2, 8),
            (4, Kdf::Pbkdf2, 96, 64 * gib, 4),
            (8, Kdf::Argon2id, 96, 3 * gib + 5, 3),
            (8, Kdf::Argon2id, 2, 64 * gib, 2),
            (8, Kdf::Argon2id, 96, gib / 2, 1),
            (1, Kdf::Pbkdf2, 1, 0, 1),
        ];
        for (members, kdf, cpus, mem, want) in rows {
            assert_eq!(
                limit(members, kdf, cpus, mem),
                want,
                "{members} {kdf:?} {cpus} {mem}"
            );
        }
    }

    #[test]
    fn a_childs_error_keeps_its_exit_code_and_kind() {
        use crate::error::*;
        let e = failure(EXIT_REFUSED, "refused: /dev/vdb changed".into());
        assert_eq!(exit_code_of(&e), EXIT_REFUSED);
        // Its words as the child said them, the prefix once.
        assert_eq!(e.to_string(), "refused: /dev/vdb changed");
        let kind = |e: &anyhow::Error| e.downcast_ref::<Failure>().map(Failure::kind);
        assert_eq!(kind(&e), Some("refused"));
        for (code, k) in [
            (EXIT_USAGE, "usage"),
            (EXIT_KEY_UNAVAILABLE, "key_unavailable"),
        ] {
            let e = failure(code, "m".into());
            assert_eq!((exit_code_of(&e), kind(&e)), (code, Some(k)));
        }
        assert_eq!(exit_code_of(&failure(EXIT_FAILED, "m".into())), EXIT_FAILED);
    }
}
