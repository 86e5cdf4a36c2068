//! Who may change the files secretfs trusts: root, or the user running
//! secretfs, and nobody else. Someone else who could write the config
//! could point `up` at any disk; a passphrase or wrapped-key file, hand it
//! a passphrase they know; a backing file, read or replace the volume.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Checks that only root or the user running secretfs can change `path`
/// (`meta` is its metadata): it is owned by one of them and neither its
/// group nor others may write it. The error is a line for the operator:
/// `what` names the file ("config"), `chmod` is the mode change that
/// fixes its mode ("go-w", "600").
pub fn check(what: &str, path: &Path, meta: &std::fs::Metadata, chmod: &str) -> Result<(), String> {
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "{what} {} is owned by uid {}, not root: `chown root:root {}`",
            path.display(),
            meta.uid(),
            path.display()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{what} {} is mode {mode:04o}, writable by {}: `chmod {chmod} {}`",
            path.display(),
            if mode & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            },
            path.display()
        ));
    }
    Ok(())
}
