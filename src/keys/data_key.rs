//! Data keys kept in the LUKS2 header (`up --kms-key`): every volume gets
//! its own random passphrase, made by KMS GenerateDataKey; its ciphertext
//! goes into the volume's secretfs token and its plaintext only into a
//! locked [`Passphrase`]. Re-opening decrypts the token's ciphertext with
//! KMS. No S3 object is involved. A striped set is one volume: it gets one
//! data key, whose record every member's token carries, so a boot makes
//! one Decrypt for the whole set ([`Scope::Set`]). Sets made before that
//! hold a data key per member ([`Scope::Volume`]) and keep opening;
//! `rotate` moves them to one key.
//!
//! The encryption context binds each ciphertext to its owner ([`Owner`]):
//! it holds [`CONTEXT_VOLUME`] = the volume's LUKS UUID, or for a set's key
//! [`CONTEXT_SET`] = the set's id, which the caller takes from the member's
//! own token, never from the record (a ciphertext copied into another
//! volume's or set's header does not decrypt), with `--bind-instance`
//! also [`CONTEXT_INSTANCE`] = the instance's ARN from IMDSv2 (the volume
//! opens only on the instance that made it; a key policy can require it to
//! equal `${ec2:SourceInstanceARN}`), plus the operator's
//! `--encryption-context` pairs, which must be given again on every `up`.
//!
//! The operator's settings pin the key, not the header: `up --kms-key K`
//! has KMS decrypt only under K (Decrypt's KeyId is K, so a ciphertext
//! made under any other key is refused by KMS itself, alias or not), and
//! refuses before any call a header that names another key than a
//! configured key ARN or key id (`--kms-key`, `--kms-key-id`), or that is
//! not bound to the instance when `--bind-instance` is set. A header planted under a key someone else
//! controls is thus never opened, whatever the instance role may decrypt.

use std::collections::BTreeMap;

use anyhow::Result;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tracing::info;

use std::collections::HashMap;
use std::time::Instant;

use aws_config::SdkConfig;

use super::aws::{
    self, chain, classify, http_client, open_ciphertext, retry, take_plaintext, Attempt,
    AwsOptions, Sdk, Service,
};
use super::rewrap::re_encrypt;
use super::Passphrase;
use crate::error::key_unavailable;

/// Encryption-context key that names the volume (its LUKS UUID).
pub const CONTEXT_VOLUME: &str = "secretfs:volume";
/// Encryption-context key that names a striped set (its id), for the one
/// data key of all its members.
pub const CONTEXT_SET: &str = "secretfs:set";
/// Encryption-context key that names the instance by its ARN
/// (`--bind-instance`).
pub const CONTEXT_INSTANCE: &str = "secretfs:instance";
/// Prefix of the context keys secretfs sets itself.
pub const CONTEXT_RESERVED: &str = "secretfs:";
/// Length of a data key: 64 random bytes, used as the key-slot passphrase
/// (PBKDF2 under `--pbkdf auto`: it needs no stretching).
pub const DATA_KEY_BYTES: usize = 64;

/// Whose data key a record is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One volume's (a single volume, or a member of a set made before
    /// sets had one key): the context names its LUKS UUID.
    #[default]
    Volume,
    /// A whole set's, the same record in every member's token: the
    /// context names the set's id.
    Set,
}

impl Scope {
    pub fn is_volume(&self) -> bool {
        *self == Scope::Volume
    }
}

/// What a data key's encryption context names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner<'a> {
    /// A volume, by its LUKS UUID.
    Volume(&'a str),
    /// A striped set, by its id.
    Set(&'a str),
}

impl Owner<'_> {
    /// The scope a record made for this owner has.
    pub fn scope(self) -> Scope {
        match self {
            Owner::Volume(_) => Scope::Volume,
            Owner::Set(_) => Scope::Set,
        }
    }

    /// The context pair that names the owner.
    fn pair(self) -> (&'static str, String) {
        match self {
            Owner::Volume(u) => (CONTEXT_VOLUME, u.to_string()),
            Owner::Set(s) => (CONTEXT_SET, s.to_string()),
        }
    }
}

impl std::fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Volume(u) => write!(f, "volume {u}"),
            Owner::Set(s) => write!(f, "set {s}"),
        }
    }
}

/// What a volume's token records of its data key (none of it secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// The ARN of the KMS key that wraps it (pinned on Decrypt).
    pub kms_key: String,
    /// The KMS ciphertext, base64.
    pub ciphertext: String,
    /// Whether the context holds the instance's ARN (`--bind-instance`).
    #[serde(default)]
    pub instance: bool,
    /// The names (never the values) of the operator's
    /// `--encryption-context` pairs it was made with, so that a refusal
    /// can say which pair is missing. Absent in records made before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_keys: Option<Vec<String>>,
    /// Whose key it is: absent (one volume's) in records made before sets
    /// had one key.
    #[serde(default, skip_serializing_if = "Scope::is_volume")]
    pub scope: Scope,
}

/// Makes and opens the data keys of `up --kms-key`.
pub struct DataKeys {
    pub kms_key: String,
    pub bind_instance: bool,
    pub opts: AwsOptions,
    instance: std::sync::OnceLock<String>,
    /// The plaintexts KMS decrypted in this run, by owner and ciphertext:
    /// the members of a set carry one record, and a boot asks KMS once.
    /// Zeroed when the keys are dropped.
    opened: std::sync::Mutex<HashMap<(String, String), Passphrase>>,
}

impl DataKeys {
    pub fn new(kms_key: String, bind_instance: bool, opts: AwsOptions) -> DataKeys {
        DataKeys {
            kms_key,
            bind_instance,
            opts,
            instance: std::sync::OnceLock::new(),
            opened: Default::default(),
        }
    }

    /// For volumes that exist (`rotate`, `rewrap`): each token names the
    /// KMS key that wraps its data key and whether it is bound.
    pub fn for_existing(opts: AwsOptions) -> DataKeys {
        DataKeys::new(String::new(), false, opts)
    }

    /// Names the key mode for log lines.
    pub fn describe(&self) -> String {
        format!(
            "a data key in each volume's header (one per set), wrapped by KMS key {}{}",
            self.kms_key,
            if self.bind_instance {
                " and bound to this instance"
            } else {
                ""
            }
        )
    }

    /// A new data key for `owner`.
    pub fn make(&self, owner: Owner<'_>) -> Result<(Passphrase, WrappedKey)> {
        self.make_under(owner, &self.kms_key, self.bind_instance)
    }

    /// A new data key for `owner` wrapped by `kms_key`, bound to this
    /// instance if `bind_instance` (a rotation keeps the volume's binding).
    pub fn make_under(
        &self,
        owner: Owner<'_>,
        kms_key: &str,
        bind_instance: bool,
    ) -> Result<(Passphrase, WrappedKey)> {
        let ctx = self.context(owner, bind_instance)?;
        let k = aws::block_on(new_data_key(&self.opts, kms_key, DATA_KEY_BYTES, &ctx))?;
        info!(owner = %owner, kms_key = %k.key_arn, "KMS made the data key");
        let wrapped = WrappedKey {
            kms_key: k.key_arn,
            ciphertext: base64::engine::general_purpose::STANDARD.encode(&k.ciphertext),
            instance: bind_instance,
            context_keys: Some(self.context_keys()),
            scope: owner.scope(),
        };
        Ok((k.pass, wrapped))
    }

    /// The record of `owner`'s data key re-wrapped by `new_key` (KMS
    /// ReEncrypt with the same context: the plaintext stays inside KMS).
    pub fn rewrap(&self, owner: Owner<'_>, w: &WrappedKey, new_key: &str) -> Result<WrappedKey> {
        let ciphertext = self.ciphertext(owner, w)?;
        let ctx = self.context(owner, w.instance)?;
        let r = aws::block_on(re_encrypt(
            &Sdk::new(&self.opts),
            Instant::now() + self.opts.timeout,
            &ciphertext,
            Some(&w.kms_key),
            &ctx,
            new_key,
            &format!("the data key of {owner}"),
        ))?;
        info!(owner = %owner, from = %w.kms_key, kms_key = %r.key_arn, "KMS re-wrapped the data key");
        Ok(WrappedKey {
            kms_key: r.key_arn,
            ciphertext: base64::engine::general_purpose::STANDARD.encode(&r.ciphertext),
            instance: w.instance,
            context_keys: w.context_keys.clone(),
            scope: w.scope,
        })
    }

    /// Proves that `w`, a data key just made or re-wrapped and not yet
    /// recorded, opens as `up` will open it at every boot: KMS Decrypt
    /// pinned to its key, with the volume's context. Returns its
    /// plaintext, which [`DataKeys::open`] then takes from memory (the
    /// other members of a set); a refusal (exit 4) names the permission
    /// the role lacks.
    pub fn prove(&self, owner: Owner<'_>, w: &WrappedKey, what: &str) -> Result<Passphrase> {
        self.decrypt_record(owner, w, &w.kms_key, "the new data key")
            .inspect(|p| self.remember(owner, w, p))
            .or_else(|e| {
                key_unavailable(format!(
                "{what} of {owner} stopped before any change: the new data key does not \
                 decrypt under KMS key {} ({}); `up` needs kms:Decrypt on that key with the \
                 encryption context of the {owner} at every boot: grant it to this role (and enable the \
                 key), then run it again. The old data key still opens the volume",
                w.kms_key,
                aws::kms_said(&e)
            ))
            })
    }

    /// KMS's plaintext of `w`, the record of `owner`'s data key (`what`,
    /// "the data key", names it), decrypted under `key` with the owner's
    /// context.
    fn decrypt_record(
        &self,
        owner: Owner<'_>,
        w: &WrappedKey,
        key: &str,
        what: &str,
    ) -> Result<Passphrase> {
        let ciphertext = self.ciphertext(owner, w)?;
        let ctx = self.context(owner, w.instance)?;
        aws::block_on(open_ciphertext(
            &Sdk::new(&self.opts),
            Instant::now() + self.opts.timeout,
            &ciphertext,
            Some(key),
            &ctx,
            &format!("{what} of {owner}"),
            Service::KmsDataKey,
        ))
    }

    /// The ciphertext of a token's record.
    fn ciphertext(&self, owner: Owner<'_>, w: &WrappedKey) -> Result<Vec<u8>> {
        match base64::engine::general_purpose::STANDARD.decode(&w.ciphertext) {
            Ok(c) => Ok(c),
            Err(_) => key_unavailable(format!(
                "the data key in the header of {owner} is not base64: the header is damaged"
            )),
        }
    }

    /// The data key of `owner`, from its token's record: decrypted by KMS
    /// once per run, then from memory (every member of a set carries the
    /// same record).
    pub fn open(&self, owner: Owner<'_>, w: &WrappedKey) -> Result<Passphrase> {
        let pin = self.pinned(owner, w)?;
        if let Some(p) = self.opened().get(&Self::opened_id(owner, w)) {
            return Ok(Passphrase::from_slice(p.expose()));
        }
        let p = self
            .decrypt_record(owner, w, pin, "the data key")
            .map_err(|e| {
                let e = match self.cause(w, aws::kms_error_code(&e)) {
                    Some(cause) => e.context(format!("{owner}: {cause}")),
                    None => e,
                };
                if pin == w.kms_key {
                    e
                } else {
                    e.context(format!(
                        "decrypting under the configured kms-key {pin} (the header of {owner} \
                     names KMS key {})",
                        w.kms_key
                    ))
                }
            })?;
        info!(owner = %owner, "KMS decrypted the data key");
        self.remember(owner, w, &p);
        Ok(p)
    }

    /// What KMS decrypted in this run, by [`DataKeys::opened_id`].
    fn opened(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Passphrase>> {
        self.opened.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn opened_id(owner: Owner<'_>, w: &WrappedKey) -> (String, String) {
        (owner.to_string(), w.ciphertext.clone())
    }

    /// Keeps `p`, `owner`'s data key `w` as KMS decrypted it, for this run.
    fn remember(&self, owner: Owner<'_>, w: &WrappedKey, p: &Passphrase) {
        self.opened().insert(
            Self::opened_id(owner, w),
            Passphrase::from_slice(p.expose()),
        );
    }

    /// The key Decrypt is pinned to for `w`: the configured `--kms-key-id`
    /// if given, else `--kms-key` (for `rotate` and `rewrap`, which
    /// configure neither, the token's). Refuses, before any call, a token
    /// naming another key than a configured key ARN or key id (an alias is
    /// left to KMS, which refuses a ciphertext of another key under the
    /// pinned KeyId), and an unbound token when `--bind-instance` is set.
    fn pinned<'a>(&'a self, owner: Owner<'_>, w: &'a WrappedKey) -> Result<&'a str> {
        if self.kms_key.is_empty() {
            return Ok(&w.kms_key);
        }
        let id = self.opts.kms_key_id.as_deref();
        for (what, key) in [("kms-key", Some(self.kms_key.as_str())), ("kms-key-id", id)] {
            let Some(key) = key else { continue };
            if same_key(key, &w.kms_key) == Some(false) {
                return key_unavailable(format!(
                    "the header of {owner} says KMS key {} wraps its data key, not the \
                     configured {what} {key}: refused, the header is unchanged (planted under \
                     another key? re-wrapped with `rewrap`? then set {what} to the new key)",
                    w.kms_key
                ));
            }
        }
        if self.bind_instance && !w.instance {
            return key_unavailable(format!(
                "the data key of {owner} is not bound to an instance, but bind-instance is set: \
                 refused, the header is unchanged (made without --bind-instance? a header planted by \
                 someone else?)"
            ));
        }
        Ok(id.unwrap_or(&self.kms_key))
    }

    /// The names of the operator's context pairs, sorted.
    fn context_keys(&self) -> Vec<String> {
        self.opts.encryption_context.keys().cloned().collect()
    }

    /// The likely cause of KMS's refusal `code` to decrypt `w`, from what
    /// its record and the settings say (None: KMS's own words suffice).
    fn cause(&self, w: &WrappedKey, code: Option<&str>) -> Option<String> {
        match code? {
            "InvalidCiphertextException" => {
                let mut causes = Vec::new();
                if w.instance {
                    causes.push(
                        "its data key is bound to the instance that made it (the header records \
                         --bind-instance): on another instance, or one whose ARN differs, KMS refuses \
                         it, and the data stays sealed to that instance"
                            .to_string(),
                    );
                }
                let given = self.context_keys();
                match &w.context_keys {
                    Some(made) if *made != given => causes.push(format!(
                        "the --encryption-context differs: it was made with the keys [{}], this run \
                         gives [{}]; give the same pairs as when it was made",
                        made.join(", "),
                        given.join(", ")
                    )),
                    Some(made) if !made.is_empty() => causes.push(format!(
                        "a value of the --encryption-context differs from when it was made (keys \
                         [{}]), or the data key was copied from another volume's header",
                        made.join(", ")
                    )),
                    Some(_) => causes.push(
                        "the data key was copied from another volume's header (its context names \
                         the volume), or the header is damaged"
                            .into(),
                    ),
                    None => causes.push(
                        "the --encryption-context differs from when it was made, or the data key \
                         was copied from another volume's header"
                            .into(),
                    ),
                }
                Some(causes.join("; or "))
            }
            "DisabledException" => Some(format!(
                "KMS key {} that wraps its data key is disabled: enable it (aws kms enable-key)",
                w.kms_key
            )),
            "KMSInvalidStateException" => Some(format!(
                "KMS key {} that wraps its data key is not usable (pending deletion? cancel it)",
                w.kms_key
            )),
            "NotFoundException" => Some(format!(
                "KMS key {} that wraps its data key does not exist in this account and region",
                w.kms_key
            )),
            "AccessDeniedException" => Some(format!(
                "this role may not decrypt under KMS key {}{}: it needs kms:Decrypt on it with the \
                 volume's encryption context",
                w.kms_key,
                if w.instance {
                    " (the volume is bound to its instance: a key policy may allow only that instance)"
                } else {
                    ""
                }
            )),
            _ => None,
        }
    }

    /// The encryption context for `owner`'s data key.
    fn context(&self, owner: Owner<'_>, with_instance: bool) -> Result<BTreeMap<String, String>> {
        let mut ctx = self.opts.encryption_context.clone();
        let (k, v) = owner.pair();
        ctx.insert(k.into(), v);
        if with_instance {
            let id = match self.instance.get() {
                Some(id) => id.clone(),
                None => {
                    let id = aws::block_on(instance_arn(&self.opts))?;
                    self.instance.get_or_init(|| id).clone()
                }
            };
            ctx.insert(CONTEXT_INSTANCE.into(), id);
        }
        Ok(ctx)
    }
}

/// Whether `configured` (a key ARN, key id or alias, as `--kms-key`
/// takes it) names the key whose ARN is `arn`; `None` for an alias, which
/// only KMS can resolve.
fn same_key(configured: &str, arn: &str) -> Option<bool> {
    if configured.starts_with("alias/") || configured.contains(":alias/") {
        None
    } else if configured.starts_with("arn:") {
        Some(configured == arn)
    } else {
        Some(arn.ends_with(&format!(":key/{configured}")))
    }
}

// The KMS and IMDS calls.

async fn generate_data_key(
    cfg: &SdkConfig,
    kms_key: &str,
    bytes: usize,
    ctx: &BTreeMap<String, String>,
) -> Result<DataKey, Attempt> {
    let kms = aws_sdk_kms::Client::new(cfg);
    let ctx: HashMap<String, String> = ctx.clone().into_iter().collect();
    let mut out = kms
        .generate_data_key()
        .key_id(kms_key)
        .number_of_bytes(bytes as i32)
        .set_encryption_context((!ctx.is_empty()).then_some(ctx))
        .send()
        .await
        .map_err(|e| classify(&e, kms_key, Service::Kms))?;
    let pass = take_plaintext(out.plaintext.take())?;
    let ciphertext = out
        .ciphertext_blob
        .take()
        .ok_or_else(|| Attempt::Fatal("KMS returned no ciphertext".into()))?
        .into_inner();
    Ok(DataKey {
        pass,
        ciphertext,
        key_arn: out.key_id.unwrap_or_else(|| kms_key.to_string()),
    })
}

/// A data key KMS made: the plaintext (locked), its ciphertext, and the
/// ARN of the KMS key that wraps it.
struct DataKey {
    pass: Passphrase,
    ciphertext: Vec<u8>,
    key_arn: String,
}

/// Has KMS make a data key of `bytes` random bytes under `kms_key`, bound
/// to `ctx`, within `opts.timeout`.
async fn new_data_key(
    opts: &AwsOptions,
    kms_key: &str,
    bytes: usize,
    ctx: &BTreeMap<String, String>,
) -> Result<DataKey> {
    Sdk::new(opts)
        .call(
            Instant::now() + opts.timeout,
            &format!("generating a data key with KMS key {kms_key}"),
            |cfg| async move { generate_data_key(&cfg, kms_key, bytes, ctx).await },
        )
        .await
}

/// This instance's ARN (`arn:PARTITION:ec2:REGION:ACCOUNT:instance/ID`,
/// the value IAM gives `ec2:SourceInstanceARN` for its role's requests),
/// from the instance identity document and the partition instance
/// metadata names (IMDSv2), within `opts.timeout`.
async fn instance_arn(opts: &AwsOptions) -> Result<String> {
    let deadline = Instant::now() + opts.timeout;
    let provider = aws_config::provider_config::ProviderConfig::without_region()
        .with_http_client(http_client());
    let imds = aws_config::imds::Client::builder()
        .configure(&provider)
        .build();
    retry(
        deadline,
        opts.timeout,
        "reading the instance identity from instance metadata",
        || async {
            let doc = imds
                .get("/latest/dynamic/instance-identity/document")
                .await
                .map_err(|e| Attempt::Retry(format!("instance metadata: {}", chain(&e))))?;
            let doc: String = doc.into();
            let partition = imds_partition(&imds).await?;
            instance_arn_of(&doc, partition.as_deref()).map_err(Attempt::Fatal)
        },
    )
    .await
}

/// The partition instance metadata names, or `None` where it serves none
/// (an older or emulated service): the region's partition is taken then.
async fn imds_partition(imds: &aws_config::imds::Client) -> Result<Option<String>, Attempt> {
    use aws_config::imds::client::error::ImdsError;
    match imds.get("/latest/meta-data/services/partition").await {
        Ok(p) => Ok(Some(p.into())),
        Err(ImdsError::ErrorResponse(r)) if r.response().status().as_u16() == 404 => Ok(None),
        Err(e) => Err(Attempt::Retry(format!("instance metadata: {}", chain(&e)))),
    }
}

/// The partition of each region prefix outside `aws`.
const PARTITIONS: [(&str, &str); 7] = [
    ("cn-", "aws-cn"),
    ("us-gov-", "aws-us-gov"),
    ("us-iso-", "aws-iso"),
    ("us-isob-", "aws-iso-b"),
    ("eu-isoe-", "aws-iso-e"),
    ("us-isof-", "aws-iso-f"),
    ("eusc-", "aws-eusc"),
];

/// The partition `region` is in.
fn partition_of(region: &str) -> &'static str {
    PARTITIONS
        .iter()
        .find(|(prefix, _)| region.starts_with(prefix))
        .map_or("aws", |(_, p)| p)
}

/// The instance ARN an identity document describes, in `partition` (as
/// instance metadata names it), else in its region's.
fn instance_arn_of(doc: &str, partition: Option<&str>) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_str(doc)
        .map_err(|e| format!("the instance identity document is not JSON: {e}"))?;
    let usable =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .filter(|s| usable(s))
            .ok_or_else(|| format!("the instance identity document has no usable {k}"))
    };
    let (id, region, account) = (field("instanceId")?, field("region")?, field("accountId")?);
    let partition = match partition.map(str::trim) {
        Some(p) if usable(p) => p,
        Some(p) => {
            return Err(format!(
                "instance metadata names {p:?} as the partition: not a partition name"
            ))
        }
        None => partition_of(region),
    };
    Ok(format!(
        "arn:{partition}:ec2:{region}:{account}:instance/{id}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_arn_comes_from_the_identity_document() {
        let doc = r#"{"instanceId": "i-0123456789abcdef0", "region": "eu-west-1", "accountId": "111122223333"}"#;
        assert_eq!(
            instance_arn_of(doc, None).unwrap(),
            "arn:aws:ec2:eu-west-1:111122223333:instance/i-0123456789abcdef0"
        );
        let cn = doc.replace("eu-west-1", "cn-north-1");
        assert!(instance_arn_of(&cn, None)
            .unwrap()
            .starts_with("arn:aws-cn:ec2:cn-north-1:"));
        let bad = doc.replace("111122223333", "1111:2222");
        assert!(instance_arn_of(&bad, None)
            .unwrap_err()
            .contains("accountId"));
        assert!(instance_arn_of("{}", None)
            .unwrap_err()
            .contains("instanceId"));
    }

    #[test]
    fn the_partition_of_the_instance_arn_follows_the_region() {
        let doc = |region: &str| {
            format!(
                r#"{{"instanceId": "i-0123456789abcdef0", "region": "{region}", "accountId": "111122223333"}}"#
            )
        };
        for (region, partition) in [
            ("us-east-1", "aws"),
            ("eu-west-1", "aws"),
            ("il-central-1", "aws"),
            ("cn-north-1", "aws-cn"),
            ("cn-northwest-1", "aws-cn"),
            ("us-gov-west-1", "aws-us-gov"),
            ("us-iso-east-1", "aws-iso"),
            ("us-isob-east-1", "aws-iso-b"),
            ("eu-isoe-west-1", "aws-iso-e"),
            ("us-isof-south-1", "aws-iso-f"),
            ("eusc-de-east-1", "aws-eusc"),
        ] {
            assert_eq!(
                instance_arn_of(&doc(region), None).unwrap(),
                format!("arn:{partition}:ec2:{region}:111122223333:instance/i-0123456789abcdef0"),
                "{region}"
            );
        }
        // The partition instance metadata names wins over the table.
        assert!(instance_arn_of(&doc("xx-new-1"), Some("aws-new\n"))
            .unwrap()
            .starts_with("arn:aws-new:ec2:xx-new-1:"));
        assert!(instance_arn_of(&doc("us-east-1"), Some("aws:x")).is_err());
    }

    /// Options with no pin, no context, no endpoint.
    fn opts() -> AwsOptions {
        AwsOptions {
            kms_key_id: None,
            encryption_context: BTreeMap::new(),
            expected_bucket_owner: None,
            region: None,
            endpoint_url: None,
            allow_http: false,
            timeout: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn the_configured_key_and_binding_pin_the_header() {
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/a";
        let rec = |kms_key: &str, instance| WrappedKey {
            kms_key: kms_key.into(),
            ciphertext: "AQID".into(),
            instance,
            context_keys: None,
            scope: Scope::Volume,
        };
        let up = DataKeys::new(arn.into(), false, opts());
        assert_eq!(
            up.pinned(Owner::Volume("u"), &rec(arn, false)).unwrap(),
            arn
        );
        // Another key's ARN in the header: refused before any call, exit 4.
        let other = "arn:aws:kms:eu-west-1:444455556666:key/b";
        let e = up
            .pinned(Owner::Volume("u"), &rec(other, false))
            .unwrap_err();
        assert!(
            format!("{e}").contains(other) && format!("{e}").contains(arn),
            "{e}"
        );
        assert_eq!(
            crate::error::exit_code_of(&e),
            crate::error::EXIT_KEY_UNAVAILABLE
        );
        // An alias: Decrypt is pinned to it, and KMS refuses another key.
        let alias = DataKeys::new("alias/secretfs".into(), false, opts());
        assert_eq!(
            alias
                .pinned(Owner::Volume("u"), &rec(other, false))
                .unwrap(),
            "alias/secretfs"
        );
        // bind-instance set: an unbound header is refused.
        let bound = DataKeys::new(arn.into(), true, opts());
        assert!(format!(
            "{}",
            bound
                .pinned(Owner::Volume("u"), &rec(arn, false))
                .unwrap_err()
        )
        .contains("not bound"));
        assert_eq!(
            bound.pinned(Owner::Volume("u"), &rec(arn, true)).unwrap(),
            arn
        );
        // A key id is compared with the ARN's last part; an alias ARN is
        // left to KMS.
        let by_id = DataKeys::new("a".into(), false, opts());
        assert_eq!(
            by_id.pinned(Owner::Volume("u"), &rec(arn, false)).unwrap(),
            "a"
        );
        assert!(by_id
            .pinned(Owner::Volume("u"), &rec(other, false))
            .is_err());
        let alias_arn = "arn:aws:kms:eu-west-1:111122223333:alias/k";
        let by_alias_arn = DataKeys::new(alias_arn.into(), false, opts());
        assert_eq!(
            by_alias_arn
                .pinned(Owner::Volume("u"), &rec(other, false))
                .unwrap(),
            alias_arn
        );
        // --kms-key-id pins too, and Decrypt goes under it.
        let mut pinned_opts = opts();
        pinned_opts.kms_key_id = Some(other.into());
        let both = DataKeys::new("alias/secretfs".into(), false, pinned_opts);
        assert_eq!(
            both.pinned(Owner::Volume("u"), &rec(other, false)).unwrap(),
            other
        );
        let e = both
            .pinned(Owner::Volume("u"), &rec(arn, false))
            .unwrap_err();
        assert!(
            format!("{e}").contains("not the configured kms-key-id"),
            "{e}"
        );
        // rotate and rewrap configure no key: the token's.
        let existing = DataKeys::for_existing(opts());
        assert_eq!(
            existing
                .pinned(Owner::Volume("u"), &rec(other, false))
                .unwrap(),
            other
        );
    }

    /// What a key refusal says of its cause, from the record and the
    /// settings: a row per case.
    #[test]
    fn a_refusal_names_its_likely_cause() {
        let mut opts = opts();
        opts.encryption_context.insert("team".into(), "db".into());
        let keys = DataKeys::new("alias/k".into(), false, opts);
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/k";
        let rec = |instance, made: Option<&[&str]>| WrappedKey {
            kms_key: arn.into(),
            ciphertext: "AQID".into(),
            instance,
            context_keys: made.map(|m| m.iter().map(|k| k.to_string()).collect()),
            scope: Scope::Volume,
        };
        let bad = Some("InvalidCiphertextException");
        let rows: [(WrappedKey, Option<&str>, &[&str]); 8] = [
            (
                rec(true, Some(&["team"])),
                bad,
                &["bound to the instance", "value of the --encryption-context"],
            ),
            (
                rec(false, Some(&["app", "team"])),
                bad,
                &["made with the keys [app, team], this run gives [team]"],
            ),
            (
                rec(false, Some(&[])),
                bad,
                &["made with the keys [], this run gives [team]"],
            ),
            (
                rec(false, Some(&["team"])),
                bad,
                &["a value of the --encryption-context differs", "[team]"],
            ),
            (
                rec(false, None),
                bad,
                &["--encryption-context differs from when it was made"],
            ),
            (
                rec(false, None),
                Some("DisabledException"),
                &[arn, "is disabled: enable it"],
            ),
            (
                rec(true, None),
                Some("AccessDeniedException"),
                &[arn, "kms:Decrypt", "bound to its instance"],
            ),
            (
                rec(false, None),
                Some("KMSInvalidStateException"),
                &[arn, "pending deletion"],
            ),
        ];
        for (w, code, says) in rows {
            let c = keys.cause(&w, code).expect("a cause");
            for s in says {
                assert!(c.contains(s), "{code:?} {w:?}: {c:?} lacks {s:?}");
            }
        }
        assert!(!keys
            .cause(&rec(false, Some(&["team"])), bad)
            .unwrap()
            .contains("bound"));
        assert_eq!(keys.cause(&rec(true, None), None), None);
        assert_eq!(
            keys.cause(&rec(true, None), Some("ThrottlingException")),
            None
        );
    }

    #[test]
    fn the_kms_code_is_read_from_the_head_of_classifys_message() {
        let e =
            anyhow::anyhow!("InvalidCiphertextException: (HTTP 400); KMS cannot decrypt this blob")
                .context("decrypting the data key of volume u with KMS");
        assert_eq!(aws::kms_error_code(&e), Some("InvalidCiphertextException"));
        let e = anyhow::anyhow!("DisabledException (HTTP 400); the KMS key is disabled");
        assert_eq!(aws::kms_error_code(&e), Some("DisabledException"));
        let e = anyhow::anyhow!("cannot reach the service: connection refused");
        assert_eq!(aws::kms_error_code(&e), None);
    }

    #[test]
    fn the_record_round_trips_and_defaults_to_unbound() {
        let w = WrappedKey {
            kms_key: "arn:aws:kms:eu-west-1:111122223333:key/k".into(),
            ciphertext: "AAEC".into(),
            instance: true,
            context_keys: Some(vec!["team".into()]),
            scope: Scope::Set,
        };
        let v = serde_json::to_value(&w).unwrap();
        assert_eq!(v["scope"], "set");
        assert_eq!(serde_json::from_value::<WrappedKey>(v).unwrap(), w);
        let old = serde_json::json!({"kms_key": "k", "ciphertext": "AA=="});
        let old = serde_json::from_value::<WrappedKey>(old).unwrap();
        assert!(!old.instance);
        assert_eq!(old.context_keys, None);
        // A record made before sets had one key is one volume's.
        assert_eq!(old.scope, Scope::Volume);
        let v = serde_json::to_value(&old).unwrap();
        assert!(v.get("context_keys").is_none() && v.get("scope").is_none());
    }

    #[test]
    fn the_context_names_the_volume_or_the_set() {
        let mut opts = opts();
        opts.encryption_context.insert("team".into(), "db".into());
        let keys = DataKeys::new("alias/k".into(), false, opts);
        let v = keys.context(Owner::Volume("u1"), false).unwrap();
        assert_eq!(v.get(CONTEXT_VOLUME).map(String::as_str), Some("u1"));
        assert_eq!(v.get(CONTEXT_SET), None);
        let s = keys.context(Owner::Set("s1"), false).unwrap();
        assert_eq!(s.get(CONTEXT_SET).map(String::as_str), Some("s1"));
        assert_eq!(s.get(CONTEXT_VOLUME), None);
        assert_eq!(s.get("team").map(String::as_str), Some("db"));
        assert_eq!(Owner::Set("s1").to_string(), "set s1");
    }
}
