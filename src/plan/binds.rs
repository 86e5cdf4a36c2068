//! The bind mounts of a Kubernetes node's volume (`setup-local-disks`):
//! the directories EKS's own script moves onto its array, bound from
//! `DIR/0/<store>` over their usual paths.
//!
//! | observed for a directory                      | steps                                |
//! |-----------------------------------------------|--------------------------------------|
//! | bound from the volume already                 | nothing                              |
//! | not bound, not on the volume yet, path a dir  | copy it onto the volume, bind        |
//! | not bound, not on the volume yet, no path     | make both directories, bind          |
//! | not bound, on the volume (a reboot)           | make the path if missing, bind (no copy: the volume's copy is the live one) |
//! | path is not a directory                       | refuse (exit 3), nothing done        |
//!
//! The services that use a directory to bind are stopped first if they
//! are running and started again after the last bind; after a failure
//! they stay stopped, so they never write to the root disk instead.

use std::path::{Path, PathBuf};

use super::{refuse, Refusal};

/// A directory bound onto the volume, and the service that uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindDir {
    /// Where the service expects it.
    pub path: &'static str,
    /// Its directory on the volume (the last part of `path`, as EKS's
    /// script names it).
    pub store: &'static str,
    /// The unit that must not run while it moves.
    pub unit: &'static str,
}

/// kubelet's state.
pub const KUBELET: BindDir = BindDir {
    path: "/var/lib/kubelet",
    store: "kubelet",
    unit: "kubelet.service",
};
/// containerd's images and containers.
pub const CONTAINERD: BindDir = BindDir {
    path: "/var/lib/containerd",
    store: "containerd",
    unit: "containerd.service",
};
/// The SOCI snapshotter's store.
pub const SOCI: BindDir = BindDir {
    path: "/var/lib/soci-snapshotter-grpc",
    store: "soci-snapshotter-grpc",
    unit: "soci-snapshotter.service",
};
/// The pods' logs (written by kubelet).
pub const POD_LOGS: BindDir = BindDir {
    path: "/var/log/pods",
    store: "pods",
    unit: "kubelet.service",
};

/// What the path of a directory to bind is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    Missing,
    Dir,
    /// A file, a link, anything else.
    Other,
}

/// One directory to bind, as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindSeen {
    pub dir: BindDir,
    /// Its path is a bind mount of `store` on the volume already.
    pub bound: bool,
    /// `store` exists on the volume.
    pub stored: bool,
    pub path: PathKind,
}

/// One step, carrying its operands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindStep {
    /// `systemctl stop` the units (running ones only).
    StopUnits(Vec<String>),
    /// Copy `from` (with owners, modes, links, attributes) to `to` on the
    /// volume, through a temporary name so a copy cut short is never
    /// taken for a finished one.
    Copy { from: PathBuf, to: PathBuf },
    /// Make a directory (and its parents).
    MakeDir { path: PathBuf },
    /// Bind `from` over `to`.
    Bind { from: PathBuf, to: PathBuf },
    /// `systemctl start` the units stopped above.
    StartUnits(Vec<String>),
}

/// The steps that bind `seen` from the volume mounted at `volume`;
/// `active` says whether a unit is running.
pub fn plan_binds(
    volume: &Path,
    seen: &[BindSeen],
    active: impl Fn(&str) -> bool,
) -> Result<Vec<BindStep>, Refusal> {
    let mut steps = Vec::new();
    let mut units: Vec<String> = Vec::new();
    for s in seen.iter().filter(|s| !s.bound) {
        let path = PathBuf::from(s.dir.path);
        let store = volume.join(s.dir.store);
        match (s.path, s.stored) {
            (PathKind::Other, _) => {
                return refuse(format!(
                    "{} is not a directory: it cannot be bound onto the volume; move it away \
                     or pass the matching --no-bind-* flag",
                    s.dir.path
                ))
            }
            (PathKind::Dir, false) => steps.push(BindStep::Copy {
                from: path.clone(),
                to: store.clone(),
            }),
            (PathKind::Missing, false) => {
                steps.push(BindStep::MakeDir {
                    path: store.clone(),
                });
                steps.push(BindStep::MakeDir { path: path.clone() });
            }
            (PathKind::Missing, true) => steps.push(BindStep::MakeDir { path: path.clone() }),
            (PathKind::Dir, true) => {}
        }
        steps.push(BindStep::Bind {
            from: store,
            to: path,
        });
        if !units.iter().any(|u| u == s.dir.unit) && active(s.dir.unit) {
            units.push(s.dir.unit.to_string());
        }
    }
    if !units.is_empty() {
        steps.insert(0, BindStep::StopUnits(units.clone()));
        steps.push(BindStep::StartUnits(units));
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(dir: BindDir, bound: bool, stored: bool, path: PathKind) -> BindSeen {
        BindSeen {
            dir,
            bound,
            stored,
            path,
        }
    }

    const VOL: &str = "/mnt/k8s-disks/0";

    #[test]
    fn the_bind_table() {
        let none = |_: &str| false;
        // Bound already: nothing, not even a stop of the running service.
        let p = plan_binds(
            Path::new(VOL),
            &[seen(KUBELET, true, true, PathKind::Dir)],
            |_| true,
        )
        .unwrap();
        assert!(p.is_empty(), "{p:?}");
        // First boot: copied, then bound.
        let p = plan_binds(
            Path::new(VOL),
            &[seen(KUBELET, false, false, PathKind::Dir)],
            none,
        )
        .unwrap();
        assert_eq!(
            p,
            [
                BindStep::Copy {
                    from: "/var/lib/kubelet".into(),
                    to: "/mnt/k8s-disks/0/kubelet".into()
                },
                BindStep::Bind {
                    from: "/mnt/k8s-disks/0/kubelet".into(),
                    to: "/var/lib/kubelet".into()
                }
            ]
        );
        // Nothing there yet: both made.
        let p = plan_binds(
            Path::new(VOL),
            &[seen(SOCI, false, false, PathKind::Missing)],
            none,
        )
        .unwrap();
        assert_eq!(
            p,
            [
                BindStep::MakeDir {
                    path: "/mnt/k8s-disks/0/soci-snapshotter-grpc".into()
                },
                BindStep::MakeDir {
                    path: "/var/lib/soci-snapshotter-grpc".into()
                },
                BindStep::Bind {
                    from: "/mnt/k8s-disks/0/soci-snapshotter-grpc".into(),
                    to: "/var/lib/soci-snapshotter-grpc".into()
                }
            ]
        );
        // A reboot: on the volume already, never copied over again.
        for path in [PathKind::Dir, PathKind::Missing] {
            let p =
                plan_binds(Path::new(VOL), &[seen(CONTAINERD, false, true, path)], none).unwrap();
            assert!(
                !p.iter().any(|s| matches!(s, BindStep::Copy { .. })),
                "{p:?}"
            );
            assert!(matches!(p.last(), Some(BindStep::Bind { .. })));
        }
        // Not a directory: refused.
        let e = plan_binds(
            Path::new(VOL),
            &[seen(POD_LOGS, false, false, PathKind::Other)],
            none,
        )
        .unwrap_err();
        assert!(e.to_string().contains("/var/log/pods is not a directory"));
    }

    /// Running services are stopped once before the first step and
    /// started after the last; kubelet, which uses two of them, once.
    #[test]
    fn running_services_are_stopped_around_the_moves() {
        let p = plan_binds(
            Path::new(VOL),
            &[
                seen(KUBELET, false, false, PathKind::Dir),
                seen(CONTAINERD, false, false, PathKind::Dir),
                seen(POD_LOGS, false, false, PathKind::Dir),
            ],
            |u| u != "containerd.service",
        )
        .unwrap();
        assert_eq!(
            p.first(),
            Some(&BindStep::StopUnits(vec!["kubelet.service".into()]))
        );
        assert_eq!(
            p.last(),
            Some(&BindStep::StartUnits(vec!["kubelet.service".into()]))
        );
        assert_eq!(p.len(), 8);
    }
}
