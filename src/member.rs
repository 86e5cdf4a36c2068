//! A set's members formatted and opened in processes of their own.
//!
//! libcryptsetup is not thread-safe, so libcryptsetup-rs lets one thread
//! of a process into it at a time ([`crate::luks`]): threads that format
//! the members of a set "in parallel" take turns, and a set of 8 costs 8
//! headers one after another. Each member's format therefore runs in a
//! child process, this binary again under the hidden subcommand
//! [`names::MEMBER_COMMAND`], whose libcryptsetup is its own; so does each
//! member's open when its key slot is argon2 (a typed passphrase: seconds
//! and up to 1 GiB per unlock). A PBKDF2 slot (a KMS or S3 key of high
//! entropy, 1000 iterations) opens in 0.13 s under TCG, a child costs
//! 0.6 s there (exec, libraries, mlockall, the crypto back end): those
//! opens stay in the parent ([`crate::exec`]). The header reads of
//! observation load a header and its token, no KDF, and stay too.
//!
//! A child rather than a fork: the parent has threads by then (tokio's,
//! the SDK's), and a fork of a threaded process may only call
//! async-signal-safe functions, which libcryptsetup is not. A new process
//! starts clean.
//!
//! The key never leaves locked memory but through a pipe: the parent
//! writes one JSON line (the job: device, options, place, the data key's
//! record, or the mapping to open; nothing secret) and then exactly the
//! key's bytes into the child's stdin; the child reads the line byte by
//! byte (no buffer that could hold the key) and the key straight into its
//! own locked buffer. Never argv, the environment or a file. The child
//! prints one JSON line: the new LUKS UUID, "opened", or the error and
//! its exit code.
//!
//! Every child dies with the parent (`PR_SET_PDEATHSIG`, SIGKILL); the
//! parent polls its children and the signal flag, and on SIGTERM/SIGINT
//! kills and reaps them and fails like any step, so the run rolls back as
//! it would with threads. The first child to fail fails the step, and the
//! children still running are killed and reaped: headers left
//! `formatting` never held data, and the next `up` makes them again; the
//! caller closes the mappings of the members that did open.
//!
//! At most as many children run at once as there are CPUs, and for
//! argon2 key slots as many as the available memory holds (1 GiB each
//! for a new slot, libcryptsetup's most; the slot's own cost to open one).

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
}

/// One member's open, as the parent hands it to a child.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenJob {
    pub dev: PathBuf,
    /// The mapping: /dev/mapper/NAME.
    pub name: String,
    pub discard: bool,
    /// What the key that follows is.
    pub key: OpenKey,
}

/// The key an [`OpenJob`]'s child gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenKey {
    /// The data key the header records, decrypted by the parent.
    HeaderDataKey,
    /// The passphrase `from` names (for messages).
    Given { from: String },
}

/// A member's work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    Format(FormatJob),
    Open(OpenJob),
}

impl Job {
    fn dev(&self) -> &std::path::Path {
        match self {
            Job::Format(j) => &j.dev,
            Job::Open(j) => &j.dev,
        }
    }

    fn doing(&self) -> &'static str {
        match self {
            Job::Format(_) => "formats",
            Job::Open(_) => "opens",
        }
    }
}

/// The line the parent writes: the job, and the length of the key whose
/// bytes follow it.
#[derive(Debug, Serialize, Deserialize)]
struct Handed {
    job: Job,
    key_len: usize,
}

/// What a child prints.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Formatted { uuid: String },
    Opened,
    Failed { error: String, exit: u8 },
}

/// How many children may run at once for `members`: the CPUs, and what
/// the memory holds when each takes `memory_each` bytes (an argon2 key
/// slot's; `None`: no bound), at least one.
pub fn limit(members: usize, memory_each: Option<u64>, cpus: usize, mem_available: u64) -> usize {
    let by_memory = match memory_each {
        Some(each) => (mem_available / each.max(1)) as usize,
        None => usize::MAX,
    };
    members.min(cpus).min(by_memory).max(1)
}

/// The children's limit on this machine.
fn limit_here(members: usize, memory_each: Option<u64>) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = crate::observe::sys::mem_available(std::path::Path::new("/")).unwrap_or(0);
    limit(members, memory_each, cpus, mem)
}

/// The most memory a new argon2id key slot takes (libcryptsetup's
/// default limit).
const NEW_ARGON2_SLOT_BYTES: u64 = 1 << 30;

/// Formats every member of `jobs` in a child each, at most [`limit`] at
/// a time; returns their LUKS UUIDs in the jobs' order, each with the
/// seconds its process took (start to end). The first failure (or
/// SIGTERM/SIGINT) ends the children still running and fails.
pub fn format_all(jobs: &[FormatJob], key: &Passphrase) -> Result<Vec<(String, f64)>> {
    let memory_each = match jobs.first().map(|j| j.opts.kdf) {
        Some(Kdf::Argon2id) => Some(NEW_ARGON2_SLOT_BYTES),
        _ => None,
    };
    let jobs: Vec<(Job, &Passphrase)> =
        jobs.iter().map(|j| (Job::Format(j.clone()), key)).collect();
    run_all(&jobs, limit_here(jobs.len(), memory_each))?
        .into_iter()
        .map(|(answer, seconds)| match answer {
            Answer::Formatted { uuid } => Ok((uuid, seconds)),
            other => anyhow::bail!("a member's process answered {other:?} to a format"),
        })
        .collect()
}

/// Opens every member of `jobs` (each with its key) in a child each, at
/// most [`limit`] at a time, each unlock taking `memory_each` bytes;
/// returns the seconds each process took. On failure the members that
/// did open stay open: the caller closes them.
pub fn open_all(jobs: &[(OpenJob, &Passphrase)], memory_each: Option<u64>) -> Result<Vec<f64>> {
    let jobs: Vec<(Job, &Passphrase)> = jobs
        .iter()
        .map(|(j, key)| (Job::Open(j.clone()), *key))
        .collect();
    run_all(&jobs, limit_here(jobs.len(), memory_each))?
        .into_iter()
        .map(|(answer, seconds)| match answer {
            Answer::Opened => Ok(seconds),
            other => anyhow::bail!("a member's process answered {other:?} to an open"),
        })
        .collect()
}

/// Runs every job in a child each, `at_once` at a time; returns their
/// answers in the jobs' order, each with its process's seconds.
fn run_all(jobs: &[(Job, &Passphrase)], at_once: usize) -> Result<Vec<(Answer, f64)>> {
    let mut done: Vec<Option<(Answer, f64)>> = jobs.iter().map(|_| None).collect();
    let mut running: Vec<(usize, Child, Instant)> = Vec::new();
    let mut next = 0;
    let failed = 'run: loop {
        if let Err(e) = signals::check() {
            break Some(e);
        }
        while running.len() < at_once && next < jobs.len() {
            match spawn(&jobs[next].0, jobs[next].1) {
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
                match answer(&jobs[n].0, c) {
                    Ok(a) => done[n] = Some((a, crate::exec::seconds_since(started))),
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
    Ok(done
        .into_iter()
        .map(|d| d.expect("every member answered"))
        .collect())
}

/// Starts the child for `job` and hands it the job and the key.
fn spawn(job: &Job, key: &Passphrase) -> Result<Child> {
    let what = || {
        format!(
            "starting the process that {} {}",
            job.doing(),
            job.dev().display()
        )
    };
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
        let mut line = serde_json::to_vec(&Handed {
            job: job.clone(),
            key_len: key.len(),
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
fn answer(job: &Job, mut c: Child) -> Result<Answer> {
    let mut out = String::new();
    if let Some(mut o) = c.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let status = c.wait().context("waiting for a member's process")?;
    match serde_json::from_str::<Answer>(out.trim()) {
        Ok(Answer::Failed { error, exit }) => Err(failure(exit, error)),
        Ok(a) if status.success() => Ok(a),
        _ => anyhow::bail!(
            "the process that {} {} ended without an answer ({status})",
            job.doing(),
            job.dev().display()
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

/// The child: reads its job and key from stdin, does it (a format with
/// `format`, which examines the disk again first), and prints its answer
/// on stdout. Returns the exit code.
pub fn child_main(format: impl Fn(&FormatJob, SlotKey<'_>) -> Result<String>) -> u8 {
    crate::fault::in_member_child();
    let answer = match read_job().and_then(|(job, key)| match &job {
        Job::Format(job) => {
            let slot = match &job.record {
                Some(record) => SlotKey::NewDataKey { pass: &key, record },
                None => SlotKey::Given {
                    pass: &key,
                    from: "the set's passphrase",
                },
            };
            format(job, slot).map(|uuid| Answer::Formatted { uuid })
        }
        Job::Open(job) => {
            let slot = match &job.key {
                OpenKey::HeaderDataKey => SlotKey::HeaderDataKey(Some(&key)),
                OpenKey::Given { from } => SlotKey::Given { pass: &key, from },
            };
            crate::luks::open(&job.dev, &job.name, slot, job.discard).map(|()| Answer::Opened)
        }
    }) {
        Ok(a) => a,
        Err(e) => Answer::Failed {
            error: format!("{e:#}"),
            exit: crate::error::exit_code_of(&e),
        },
    };
    let code = match &answer {
        Answer::Failed { exit, .. } => *exit,
        _ => 0,
    };
    let line = serde_json::to_string(&answer).expect("an answer serialises");
    let _ = writeln!(std::io::stdout(), "{line}");
    code
}

/// The job line and the key that follows it, from stdin (unbuffered: the
/// key goes from the pipe straight into locked memory).
fn read_job() -> Result<(Job, Passphrase)> {
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
    let handed: Handed =
        serde_json::from_slice(&line).context("reading the job from the parent")?;
    let key = Passphrase::read_exact_from(&mut stdin, handed.key_len, "the key from the parent")?;
    Ok((handed.job, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_bounded_by_cpus_and_for_argon2_by_memory() {
        let gib = 1u64 << 30;
        let mib = 1u64 << 20;
        // rows: members, memory each, cpus, available memory -> at once
        let rows = [
            (8, None, 2, 64 * gib, 2),
            (8, None, 128, gib / 2, 8),
            (4, None, 96, 64 * gib, 4),
            // A new argon2id slot: up to 1 GiB each.
            (8, Some(gib), 96, 3 * gib + 5, 3),
            (8, Some(gib), 2, 64 * gib, 2),
            (8, Some(gib), 96, gib / 2, 1),
            // An existing slot's own cost: 256 MiB each.
            (8, Some(256 * mib), 96, gib + 1, 4),
            (8, Some(256 * mib), 2, gib, 2),
            // A slot that says it takes nothing: the CPUs bound.
            (8, Some(0), 4, gib, 4),
            (1, None, 1, 0, 1),
        ];
        for (members, each, cpus, mem, want) in rows {
            assert_eq!(
                limit(members, each, cpus, mem),
                want,
                "{members} {each:?} {cpus} {mem}"
            );
        }
    }

    #[test]
    fn a_job_line_round_trips_and_carries_no_key() {
        let job = Job::Open(OpenJob {
            dev: "/dev/nvme1n1".into(),
            name: "secretfs-0".into(),
            discard: true,
            key: OpenKey::Given {
                from: "typed passphrase".into(),
            },
        });
        let line = serde_json::to_string(&Handed {
            job: job.clone(),
            key_len: 32,
        })
        .unwrap();
        let back: Handed = serde_json::from_str(&line).unwrap();
        assert_eq!((back.job, back.key_len), (job, 32));
        assert!(!line.contains('\n'));
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
