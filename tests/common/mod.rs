#![allow(dead_code)]
//! Helpers shared by the integration tests.

pub mod aws;
pub mod guest;
pub mod vm;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use aws::{FakeImds, Moto};
use vm::VmSpec;

/// What a guest reaches at 169.254.170.100:4566 (KMS and S3).
pub const GUEST_ENDPOINT: &str = "http://169.254.170.100:4566";

/// Local AWS for VM tests: moto for KMS and S3, and an EC2-like IMDSv2
/// (instance-role credentials that moto accepts, region us-east-1). moto's
/// own IMDS emulation omits the token TTL header the AWS SDK requires, so
/// the fake stands in.
pub struct LocalAws {
    pub moto: Moto,
    pub imds: FakeImds,
}

impl LocalAws {
    pub fn start() -> LocalAws {
        LocalAws {
            moto: Moto::start(),
            imds: FakeImds::start("ok"),
        }
    }

    /// Seals a fresh random passphrase into `s3://<bucket>/<key>` with the
    /// host binary (`secretfs seal`) under `context` (`K=V`); returns the
    /// URI. The plaintext is never seen by the test.
    pub fn seal(&self, key: &str, context: &str) -> String {
        let uri = self.moto.s3_uri(key);
        let out = aws::secretfs_cmd(&self.moto.endpoint())
            .args([
                "seal",
                "--kms-key",
                &self.moto.alias,
                "--to",
                &uri,
                "--encryption-context",
                context,
            ])
            .output()
            .expect("running secretfs seal");
        assert!(
            out.status.success(),
            "seal failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        uri
    }

    /// Wires a VM spec to moto (the endpoint) and the fake IMDS
    /// (169.254.169.254), and exports `AWS_ENDPOINT_URL` to the script.
    pub fn attach(&self, spec: &mut VmSpec) {
        spec.endpoint_port = Some(self.moto.port);
        spec.imds_port = Some(self.imds.port);
        spec.env
            .push(("AWS_ENDPOINT_URL".into(), GUEST_ENDPOINT.into()));
    }
}

/// The binary of the release archive for `arch` (x86_64 or aarch64, from
/// scripts/release, which scripts/test runs before the VM tiers), written
/// into `dir`; and its SHA-256.
pub fn release_binary(arch: &str, dir: &Path) -> (PathBuf, String) {
    let name = format!("secretfs-{}-{arch}-linux-gnu", env!("CARGO_PKG_VERSION"));
    let archive = aws::manifest_dir().join(format!("dist/{name}.tar.gz"));
    assert!(
        archive.is_file(),
        "{} missing: run scripts/release first (scripts/test does)",
        archive.display()
    );
    let out = Command::new("tar")
        .arg("-xzOf")
        .arg(&archive)
        .arg(format!("{name}/secretfs"))
        .output()
        .expect("running tar");
    assert!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = dir.join(format!("secretfs-{arch}"));
    fs::write(&bin, &out.stdout).unwrap_or_else(|e| panic!("writing {}: {e}", bin.display()));
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let sum = {
        use sha2::Digest;
        aws::hex(&sha2::Sha256::digest(&out.stdout))
    };
    (bin, sum)
}
