//! `up --each-disk`: which index each disk's volume has. Pure.
//!
//! A node's disks each get a volume of their own, opened as `NAME-diskN`
//! and mounted at `MOUNT/N`. N is written in the volume's token when its
//! header is made and read from there on every boot, so a disk keeps its
//! N whatever the kernel names it (NVMe names follow probe order, which
//! changes between boots). A blank disk gets the smallest N no other disk
//! holds, in the order the disks were listed; anything else on a disk
//! refuses the whole run before any disk is touched.

use std::path::PathBuf;

use super::{classify, set::describe, Class, Refusal};
use crate::luks::header::{Header, TokenFound};
use crate::observe::Content;

/// What a disk holds, as far as its index goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// A volume of ours with index N in its token (ready, half-made, or
    /// ephemeral and closed: the plan of that volume decides).
    Index(u32),
    /// Nothing: a new volume.
    Blank,
    /// Anything else, described (a set's member, a volume of ours made
    /// without `--each-disk`, foreign data).
    Other(String),
}

/// What `c`, a disk's content, holds for `--each-disk`.
pub fn found(c: &Content) -> Found {
    let index = match &c.header {
        Some(Header {
            token: TokenFound::Present { token, .. },
            ..
        }) if token.set.is_none() => token.disk,
        _ => None,
    };
    match (classify(c), index) {
        (Class::Blank, _) => Found::Blank,
        (
            Class::Ours {
                place: None,
                swap: false,
                ..
            }
            | Class::HalfMade { .. },
            Some(n),
        ) => Found::Index(n),
        (Class::Ours { place: None, .. }, None) => {
            Found::Other("a secretfs volume made without --each-disk".into())
        }
        (class, _) => Found::Other(describe(&class)),
    }
}

/// Each disk with its index, in index order; a refusal names every disk
/// that is in the way, and two disks that claim one index.
pub fn assign(found: &[(PathBuf, Found)]) -> Result<Vec<(PathBuf, u32)>, Refusal> {
    let others: Vec<String> = found
        .iter()
        .filter_map(|(d, f)| match f {
            Found::Other(what) => Some(format!("{} holds {what}", d.display())),
            _ => None,
        })
        .collect();
    if !others.is_empty() {
        return Err(Refusal::Refused(format!(
            "--each-disk makes a volume on blank disks and opens its own: {}; nothing was changed \
             (shred or wipe what is no longer wanted, or leave --each-disk off for the layout it has)",
            others.join("; ")
        )));
    }
    let mut out: Vec<(PathBuf, u32)> = Vec::new();
    for (d, f) in found {
        if let Found::Index(n) = f {
            if let Some((other, _)) = out.iter().find(|(_, m)| m == n) {
                return Err(Refusal::Refused(format!(
                    "{} and {} both hold the volume of disk {n} (a copied header?); nothing was \
                     changed: shred the one that is not wanted",
                    other.display(),
                    d.display()
                )));
            }
            out.push((d.clone(), *n));
        }
    }
    let mut next = 1;
    for (d, f) in found {
        if *f == Found::Blank {
            while out.iter().any(|(_, m)| *m == next) {
                next += 1;
            }
            out.push((d.clone(), next));
        }
    }
    out.sort_by_key(|(_, n)| *n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(found: &[(&str, Found)]) -> Result<Vec<(String, u32)>, String> {
        let found: Vec<(PathBuf, Found)> = found
            .iter()
            .map(|(d, f)| (PathBuf::from(d), f.clone()))
            .collect();
        assign(&found)
            .map(|v| {
                v.into_iter()
                    .map(|(d, n)| (d.display().to_string(), n))
                    .collect()
            })
            .map_err(|r| match r {
                Refusal::Refused(m) | Refusal::Usage(m) => m,
            })
    }

    #[test]
    fn indexes_come_from_the_tokens_and_blank_disks_take_the_free_ones() {
        use Found::*;
        let a = "/dev/nvme1n1";
        let b = "/dev/nvme2n1";
        let c = "/dev/nvme3n1";
        // rows: what each disk holds -> (disk, index) in index order
        type Row<'a> = (Vec<(&'a str, Found)>, Vec<(&'a str, u32)>);
        let rows: Vec<Row<'_>> = vec![
            // First boot: in the order listed, from 1.
            (vec![(a, Blank), (b, Blank)], vec![(a, 1), (b, 2)]),
            // Reboot with the disks probed the other way round: each keeps
            // its own index.
            (vec![(a, Index(2)), (b, Index(1))], vec![(b, 1), (a, 2)]),
            // A disk added blank beside them takes the first free index.
            (
                vec![(a, Index(2)), (b, Blank), (c, Index(3))],
                vec![(b, 1), (a, 2), (c, 3)],
            ),
            // A half-made volume keeps the index it was made with.
            (vec![(a, Blank), (b, Index(1))], vec![(b, 1), (a, 2)]),
            (vec![], vec![]),
        ];
        for (found, want) in rows {
            let want: Vec<(String, u32)> = want.into_iter().map(|(d, n)| (d.into(), n)).collect();
            assert_eq!(run(&found), Ok(want), "{found:?}");
        }
    }

    #[test]
    fn a_disk_gives_its_index_from_its_token() {
        use crate::luks::token::{Token, TokenState};
        use crate::plan::tests::{header, with_sig};
        let ours = |state, disk, slots| {
            let mut t = Token::formatting("u");
            t.state = state;
            t.disk = disk;
            header(
                TokenFound::Present {
                    id: 0,
                    token: Box::new(t),
                },
                slots,
            )
        };
        assert_eq!(found(&Content::blank()), Found::Blank);
        assert_eq!(found(&ours(TokenState::Ready, Some(3), 1)), Found::Index(3));
        // Killed before its key slot: still disk 3.
        assert_eq!(
            found(&ours(TokenState::Formatting, Some(3), 0)),
            Found::Index(3)
        );
        let other = |c: &Content| match found(c) {
            Found::Other(w) => w,
            f => panic!("{f:?}"),
        };
        assert_eq!(
            other(&ours(TokenState::Ready, None, 1)),
            "a secretfs volume made without --each-disk"
        );
        assert!(other(&crate::plan::set_tests::member("s", 0, 2, Some("xfs"))).contains("set s"));
        assert!(other(&with_sig(crate::plan::tests::sig("xfs"))).contains("xfs"));
    }

    #[test]
    fn anything_else_on_a_disk_or_one_index_twice_refuses_all() {
        use Found::*;
        let e = run(&[
            ("/dev/nvme1n1", Blank),
            ("/dev/nvme2n1", Other("member 1 of set s".into())),
            ("/dev/nvme3n1", Other("an ext4 filesystem".into())),
        ])
        .unwrap_err();
        assert!(e.contains("/dev/nvme2n1 holds member 1 of set s"), "{e}");
        assert!(e.contains("/dev/nvme3n1 holds an ext4 filesystem"), "{e}");
        assert!(e.contains("nothing was changed"), "{e}");
        let e = run(&[("/dev/nvme1n1", Index(1)), ("/dev/nvme2n1", Index(1))]).unwrap_err();
        assert!(
            e.contains("/dev/nvme1n1 and /dev/nvme2n1 both hold the volume of disk 1"),
            "{e}"
        );
    }
}
