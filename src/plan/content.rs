//! What a device holds (the classification table) and what the filesystem
//! step does once the volume is open (the filesystem table).

use std::path::Path;

use super::{refuse, FsRecord, Refusal};
use crate::luks::header::{Header, TokenFound};
use crate::luks::token::{Place, Purpose, TokenState, LAYOUT_LUKS_PER_MEMBER};
use crate::names;
use crate::observe::{Content, Data, Signature};
use crate::settings::Filesystem;

/// What a device holds, as far as `up` is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// Zeros where data would be, no signature.
    Blank,
    /// Our volume; `place` when it is a member of a striped set;
    /// `ephemeral` when its key lived only in memory (`up --ephemeral`);
    /// `swap` when it is the swap space of `secretfs swap`.
    Ours {
        record: FsRecord,
        place: Option<Place>,
        ephemeral: bool,
        swap: bool,
    },
    /// Our header, but the making stopped before it could hold data.
    HalfMade { why: String },
    /// Something else, described.
    Foreign(String),
    /// A LUKS header that cannot be loaded: maybe ours, maybe data.
    Damaged(String),
}

fn subsystem_is_ours(sigs: &[Signature]) -> bool {
    sigs.iter().any(|s| {
        matches!(s, Signature::Luks { version: 2, subsystem: Some(x), .. } if x == names::LUKS_SUBSYSTEM)
    })
}

/// Classifies a device's content (the first table above).
pub fn classify(c: &Content) -> Class {
    match &c.header {
        Some(Header {
            token: TokenFound::Present { token, .. },
            active_keyslots,
            ..
        }) => {
            if let Some(l) = token
                .layout
                .as_deref()
                .filter(|l| *l != LAYOUT_LUKS_PER_MEMBER)
            {
                // Assembled the way this build knows, it would be garbage.
                Class::Foreign(format!(
                    "a member of a secretfs set in layout {l:?}, which this secretfs does not know \
                     (it knows {LAYOUT_LUKS_PER_MEMBER:?}): upgrade secretfs"
                ))
            } else if token.state == TokenState::Formatting {
                Class::HalfMade {
                    why: "its token says the format did not finish".into(),
                }
            } else if *active_keyslots == 0 && !token.ephemeral {
                match &token.filesystem {
                    // It held data: a header backup still opens it, so it
                    // is not formatted over.
                    Some(fs) => Class::Damaged(format!(
                        "a secretfs volume that held data (its token records {fs}) but has no key \
                         slot left, so nothing opens it; a header backup would (`cryptsetup \
                         luksHeaderRestore`), or erase it for good with `secretfs shred --disk`"
                    )),
                    None => Class::HalfMade {
                        why: "it has no key slot".into(),
                    },
                }
            } else {
                Class::Ours {
                    record: FsRecord::Token {
                        filesystem: token.filesystem.clone(),
                    },
                    place: token.place(),
                    ephemeral: token.ephemeral,
                    swap: token.purpose == Some(Purpose::Swap),
                }
            }
        }
        Some(Header {
            token: TokenFound::Unreadable { reason },
            ..
        }) => Class::Foreign(format!("a LUKS2 header with a secretfs token: {reason}")),
        Some(Header {
            token: TokenFound::Absent,
            active_keyslots,
            ..
        }) if subsystem_is_ours(&c.signatures) => {
            if *active_keyslots == 0 {
                Class::HalfMade {
                    why: "it has no key slot".into(),
                }
            } else {
                Class::Ours {
                    record: FsRecord::Legacy,
                    place: None,
                    ephemeral: false,
                    swap: false,
                }
            }
        }
        Some(_) => Class::Foreign(if c.signatures.is_empty() {
            "a LUKS2 header (not made by secretfs)".into()
        } else {
            c.describe()
        }),
        None => {
            if c.signatures
                .iter()
                .any(|s| matches!(s, Signature::Luks { version: 2, .. }))
            {
                return Class::Damaged(format!(
                    "{}, but libcryptsetup cannot load it",
                    c.describe()
                ));
            }
            if !c.signatures.is_empty() {
                return Class::Foreign(c.describe());
            }
            match c.data {
                Data::Zero { .. } => Class::Blank,
                Data::NonZero { .. } => Class::Foreign(c.describe()),
                Data::NotChecked => Class::Foreign("content that was not checked".into()),
            }
        }
    }
}

/// What the filesystem step does, once the volume is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsTodo {
    /// Make the filesystem, then record it in the token.
    Make,
    /// The filesystem is there; `record` it in the token if the token
    /// does not say so.
    Have { record: bool },
}

/// The filesystem a volume has or gets (before it is open): the one its
/// token records, else `want` (ext4 when not asked). A filesystem asked
/// for that differs from the recorded one is refused: secretfs never
/// converts one into the other.
pub fn volume_fs(
    want: Option<Filesystem>,
    record: &FsRecord,
    path: &str,
) -> Result<Filesystem, Refusal> {
    let recorded = match record {
        FsRecord::Token {
            filesystem: Some(name),
        } => name,
        FsRecord::New | FsRecord::Token { filesystem: None } | FsRecord::Legacy => {
            return Ok(want.unwrap_or(Filesystem::Ext4))
        }
    };
    let Some(have) = Filesystem::from_name(recorded) else {
        return refuse(format!(
            "{path} holds a volume with {recorded} inside, which this secretfs does not make: \
             open it with the release that made it"
        ));
    };
    match want {
        Some(w) if w != have => refuse(format!(
            "{path} holds a volume with {have} inside, not the {w} asked for (--fs, or fs in the \
             config): secretfs does not convert a filesystem; ask for {have}, or `secretfs shred` \
             the volume to make a new one"
        )),
        _ => Ok(have),
    }
}

/// Decides the filesystem step (the third table above) for `fs`, the
/// volume's filesystem ([`volume_fs`]).
pub fn filesystem(
    record: &FsRecord,
    fs: Filesystem,
    inner: &[Signature],
    mapper: &Path,
) -> Result<FsTodo, Refusal> {
    let there = inner.len() == 1 && inner[0].fstype() == Some(fs.as_str());
    let what = if inner.is_empty() {
        "no filesystem that libblkid recognises".to_string()
    } else {
        inner
            .iter()
            .map(Signature::describe)
            .collect::<Vec<_>>()
            .join(" and ")
    };
    match record {
        FsRecord::New | FsRecord::Token { filesystem: None } => Ok(FsTodo::Make),
        FsRecord::Token {
            filesystem: Some(_),
        } => {
            if there {
                Ok(FsTodo::Have { record: false })
            } else {
                let m = mapper.display();
                let repair = match fs {
                    Filesystem::Ext4 => format!(
                        "Repair it from a backup superblock with `e2fsck -b 32768 {m}` \
                         (`mke2fs -n {m}` lists them)"
                    ),
                    Filesystem::Xfs => format!(
                        "Repair it with `xfs_repair {m}` (it finds a secondary superblock; \
                         `xfs_repair -n {m}` only reports)"
                    ),
                };
                refuse(format!(
                    "{m} holds {what}, but secretfs made {fs} on it: the filesystem is damaged; \
                     secretfs will not make a new one over the data. {repair}, or recreate the volume"
                ))
            }
        }
        FsRecord::Legacy => {
            if there {
                Ok(FsTodo::Have { record: true })
            } else if inner.is_empty() {
                Ok(FsTodo::Make)
            } else {
                refuse(format!(
                    "{} holds {what}, not {fs}: secretfs will not replace it",
                    mapper.display()
                ))
            }
        }
    }
}
