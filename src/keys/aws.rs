//! S3 and KMS: fetching and unwrapping the passphrase, and sealing one.
//!
//! All AWS calls run inside one short-lived current-thread tokio runtime;
//! the caller gets the passphrase back on its own thread (libcryptsetup is
//! single-threaded). The SDK's own retries are off: every call is retried
//! here, with jittered exponential backoff, until the `--timeout` deadline,
//! so a boot storm or a network that is not up yet is ridden out, while an
//! answer that cannot change (access denied, no such key, wrong encryption
//! context) fails at once with exit 4.

use std::collections::{BTreeMap, HashMap};
use std::error::Error as StdError;
use std::future::Future;
use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kms::primitives::Blob;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use tracing::{debug, info, warn};
use zeroize::Zeroize;

use super::{blob, KeyOrigin, KeySource, Passphrase};
use crate::error::{key_unavailable, refused};
use crate::parse::BlobLocation;

/// Longest single attempt of one call.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// First backoff; doubled after each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Backoff ceiling.
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// What a failed attempt means for the next one.
#[derive(Debug)]
pub enum Attempt {
    /// May succeed later (throttling, 5xx, network, credentials not yet).
    Retry(String),
    /// Will not change; fail now with exit 4.
    Fatal(String),
}

/// A KMS ciphertext blob in S3 or a file, decrypted with KMS.
pub struct KmsWrappedKey {
    pub location: BlobLocation,
    pub opts: AwsOptions,
}

impl KeySource for KmsWrappedKey {
    fn describe(&self) -> String {
        format!("KMS-wrapped key {}", self.location)
    }
    fn origin(&self) -> KeyOrigin {
        KeyOrigin::Kms
    }
    fn fetch(&self, _first_format: bool) -> Result<Passphrase> {
        block_on(unwrap_key(&self.location, &self.opts))
    }
}

/// Settings for S3 and KMS calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsOptions {
    pub kms_key_id: Option<String>,
    pub encryption_context: std::collections::BTreeMap<String, String>,
    pub expected_bucket_owner: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    /// Plain http to a remote endpoint allowed (`--allow-http`): the
    /// endpoint the SDK resolves from the AWS profile is checked too.
    pub allow_http: bool,
    pub timeout: Duration,
}

/// Runs a future on a fresh current-thread runtime that ends with it, or
/// with SIGTERM/SIGINT when [`crate::signals`] handles them.
pub fn block_on<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    let interrupted = async {
        loop {
            if let Some(s) = crate::signals::caught() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async {
            tokio::select! {
                r = f => r,
                s = interrupted => Err(anyhow::anyhow!(
                    "interrupted by {s} while getting the key; nothing was written"
                )),
            }
        })
}

/// Fetches the blob and decrypts it, all within `opts.timeout`.
pub async fn unwrap_key(location: &BlobLocation, opts: &AwsOptions) -> Result<Passphrase> {
    let deadline = Instant::now() + opts.timeout;
    let sdk = Sdk::new(opts);
    let ciphertext = fetch_ciphertext(&sdk, deadline, location).await?;
    info!(
        source = %location,
        ciphertext_bytes = ciphertext.len(),
        "wrapped key fetched; asking KMS to decrypt it"
    );
    let p = retry(
        deadline,
        opts.timeout,
        &format!("decrypting {location} with KMS"),
        || sdk.decrypt(&ciphertext, location),
    )
    .await?;
    info!(source = %location, "KMS decrypted the key ({} bytes)", p.len());
    Ok(p)
}

/// The ciphertext of the blob at `location` (S3 or a file, raw or
/// base64), fetched by `deadline`; a blob that cannot be a KMS ciphertext
/// is exit 4.
pub(super) async fn fetch_ciphertext(
    sdk: &Sdk<'_>,
    deadline: Instant,
    location: &BlobLocation,
) -> Result<Vec<u8>> {
    let stored = match location {
        BlobLocation::File(p) => read_blob_file(p)?,
        BlobLocation::S3 { bucket, key } => {
            retry(
                deadline,
                sdk.opts.timeout,
                &format!("fetching {location}"),
                || sdk.get_object(bucket, key),
            )
            .await?
        }
    };
    match blob::decode(&stored) {
        Ok(c) => Ok(c),
        Err(m) => key_unavailable(format!("{location}: {m}")),
    }
}

/// The SDK configuration, loaded once and shared by the S3 and KMS calls
/// (one region and credentials lookup), and loaded again after a failure
/// that may have come from it (instance metadata not answering yet).
pub(super) struct Sdk<'a> {
    opts: &'a AwsOptions,
    cfg: std::sync::Mutex<Option<SdkConfig>>,
}

impl<'a> Sdk<'a> {
    pub(super) fn new(opts: &'a AwsOptions) -> Self {
        Sdk {
            opts,
            cfg: std::sync::Mutex::new(None),
        }
    }

    pub(super) async fn config(&self) -> Result<SdkConfig, Attempt> {
        if let Some(c) = self.cfg.lock().expect("sdk config lock").clone() {
            return Ok(c);
        }
        let c = sdk_config(self.opts).await?;
        *self.cfg.lock().expect("sdk config lock") = Some(c.clone());
        Ok(c)
    }

    /// Passes a result through, forgetting the configuration on a
    /// retryable failure so the next attempt resolves it afresh.
    pub(super) fn check<T>(&self, r: Result<T, Attempt>) -> Result<T, Attempt> {
        if matches!(r, Err(Attempt::Retry(_))) {
            *self.cfg.lock().expect("sdk config lock") = None;
        }
        r
    }

    /// Runs one call (`f` gets the configuration, resolved again after a
    /// retryable failure), retried until `deadline`; `what` names it.
    pub(super) async fn call<T, F, Fut>(&self, deadline: Instant, what: &str, f: F) -> Result<T>
    where
        F: Fn(SdkConfig) -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        retry(deadline, self.opts.timeout, what, || async {
            let cfg = self.config().await?;
            self.check(f(cfg).await)
        })
        .await
    }

    pub(super) async fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>, Attempt> {
        let cfg = self.config().await?;
        self.check(get_object(&cfg, self.opts, bucket, key).await)
    }

    async fn decrypt(&self, ciphertext: &[u8], from: &BlobLocation) -> Result<Passphrase, Attempt> {
        let cfg = self.config().await?;
        let what = from.to_string();
        let o = self.opts;
        self.check(
            decrypt(
                &cfg,
                o.kms_key_id.as_deref(),
                &o.encryption_context,
                ciphertext,
                &what,
                Service::Kms,
            )
            .await,
        )
    }

    pub(super) async fn head_object(&self, bucket: &str, key: &str) -> Result<bool, Attempt> {
        let cfg = self.config().await?;
        self.check(head_object(&cfg, self.opts, bucket, key).await)
    }

    pub(super) async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        data: &[u8],
    ) -> Result<(), Attempt> {
        let cfg = self.config().await?;
        self.check(put_object(&cfg, self.opts, bucket, key, data).await)
    }

    async fn encrypt(&self, kms_key: &str, plain: Plain<'_>) -> Result<(Vec<u8>, String), Attempt> {
        let cfg = self.config().await?;
        self.check(encrypt(&cfg, self.opts, kms_key, plain).await)
    }
}

/// What `seal` wraps.
#[derive(Clone, Copy)]
pub enum Plain<'a> {
    /// A passphrase the user gave: sent to KMS Encrypt.
    Given(&'a Passphrase),
    /// A new random passphrase of this many bytes, made inside KMS
    /// (GenerateDataKeyWithoutPlaintext): its plaintext never reaches this
    /// host.
    Generated(usize),
}

impl Plain<'_> {
    fn len(self) -> usize {
        match self {
            Plain::Given(p) => p.len(),
            Plain::Generated(n) => n,
        }
    }
}

fn read_blob_file(p: &std::path::Path) -> Result<Vec<u8>> {
    let f = match std::fs::File::open(p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return key_unavailable(format!(
                "wrapped key file {} does not exist: check --wrapped-key or run `secretfs seal`",
                p.display()
            ))
        }
        Err(e) => {
            return Err(e).with_context(|| format!("opening wrapped key file {}", p.display()))
        }
    };
    let meta = f
        .metadata()
        .with_context(|| format!("examining wrapped key file {}", p.display()))?;
    if meta.is_file() {
        crate::perm::check("wrapped key file", p, &meta, "600").or_else(key_unavailable)?;
    }
    let mut buf = Vec::new();
    f.take(blob::MAX_STORED as u64 + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading wrapped key file {}", p.display()))?;
    Ok(buf)
}

/// Calls `attempt` until it succeeds, fails for good, or the deadline.
pub async fn retry<T, F, Fut>(
    deadline: Instant,
    budget: Duration,
    what: &str,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut last = String::from("no attempt was made");
    for n in 1u32.. {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        match tokio::time::timeout(
            remaining.min(ATTEMPT_TIMEOUT + Duration::from_secs(5)),
            attempt(),
        )
        .await
        {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(Attempt::Fatal(m))) => return key_unavailable(format!("{what}: {m}")),
            Ok(Err(Attempt::Retry(m))) => last = m,
            Err(_) => last = "the attempt timed out".into(),
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        // "Equal jitter": half fixed, half random, so a fleet that booted
        // together spreads out but no client retries in a tight loop.
        let half = backoff / 2;
        let pause = (half + half.mul_f64(fastrand::f64())).min(remaining);
        warn!(
            "{what}: {last}; retrying in {:.1}s (attempt {n})",
            pause.as_secs_f64()
        );
        tokio::time::sleep(pause).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    key_unavailable(format!(
        "{what}: gave up after the --timeout of {}; last error: {last}",
        humantime::format_duration(budget)
    ))
}

/// The HTTP client of every call: rustls with ring, no system OpenSSL.
pub(super) fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Loads the SDK configuration: region, credentials chain, endpoint.
async fn sdk_config(opts: &AwsOptions) -> Result<SdkConfig, Attempt> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );
    if let Some(r) = &opts.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(u) = &opts.endpoint_url {
        loader = loader.endpoint_url(u);
    }
    let cfg = loader.load().await;
    // The profile's endpoint_url reaches only the SDK: the flags and the
    // variables were checked by `config`, this is checked here, before
    // any request goes to it.
    if let Some(u) = cfg.endpoint_url().filter(|_| !opts.allow_http) {
        if !crate::parse::cleartext_is_local(u.trim()) {
            return Err(Attempt::Fatal(format!(
                "the AWS profile's endpoint_url {u} is plain http to a remote host: the key would \
                 cross the network in the clear; use https:// in the profile, or pass --allow-http \
                 (allow-http = true) if the path is otherwise protected"
            )));
        }
    }
    if cfg.region().is_none() {
        // On EC2 the region comes from instance metadata, which may not
        // answer yet this early in boot.
        return Err(Attempt::Retry(
            "no AWS region (none in --region, AWS_REGION or the profile, and instance metadata did not answer)".into(),
        ));
    }
    Ok(cfg)
}

fn custom_endpoint(cfg: &SdkConfig, service_env: &str) -> bool {
    cfg.endpoint_url().is_some() || std::env::var_os(service_env).is_some()
}

fn s3_client(cfg: &SdkConfig) -> aws_sdk_s3::Client {
    // Path-style addressing only against a custom endpoint (emulators);
    // real S3 and VPC endpoints want virtual-hosted style.
    let path_style = custom_endpoint(cfg, "AWS_ENDPOINT_URL_S3");
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(cfg)
            .force_path_style(path_style)
            .build(),
    )
}

async fn get_object(
    cfg: &SdkConfig,
    opts: &AwsOptions,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, Attempt> {
    let s3 = s3_client(cfg);
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_expected_bucket_owner(opts.expected_bucket_owner.clone())
        .send()
        .await
        .map_err(|e| classify(&e, &format!("s3://{bucket}/{key}"), Service::S3))?;
    if let Some(len) = out.content_length() {
        if len > blob::MAX_STORED as i64 {
            return Err(too_large(bucket, key, &format!("{len} bytes")));
        }
    }
    read_capped(out.body, bucket, key).await
}

/// The body of an object, refused as soon as it passes
/// [`blob::MAX_STORED`] bytes: its `Content-Length` may be absent or
/// wrong, so the bytes are counted as they arrive.
async fn read_capped(
    mut body: aws_sdk_s3::primitives::ByteStream,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, Attempt> {
    let mut buf = Vec::new();
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| Attempt::Retry(format!("reading the object body: {e}")))?
    {
        if buf.len() + chunk.len() > blob::MAX_STORED {
            let over = format!("more than {} bytes", blob::MAX_STORED);
            return Err(too_large(bucket, key, &over));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// An object too large to be a wrapped key (`size` says how large).
fn too_large(bucket: &str, key: &str, size: &str) -> Attempt {
    Attempt::Fatal(format!(
        "s3://{bucket}/{key} is {size}; a KMS ciphertext is under {} bytes: is it the right object? \
         check --wrapped-key",
        blob::MAX_CIPHERTEXT
    ))
}

pub(super) async fn decrypt(
    cfg: &SdkConfig,
    key_id: Option<&str>,
    ctx: &BTreeMap<String, String>,
    ciphertext: &[u8],
    what: &str,
    svc: Service,
) -> Result<Passphrase, Attempt> {
    let kms = aws_sdk_kms::Client::new(cfg);
    let ctx: HashMap<String, String> = ctx.clone().into_iter().collect();
    let mut out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(ciphertext))
        .set_encryption_context((!ctx.is_empty()).then_some(ctx))
        .set_key_id(key_id.map(str::to_owned))
        .send()
        .await
        .map_err(|e| classify(&e, what, svc))?;
    take_plaintext(out.plaintext.take())
}

/// KMS's plaintext of `ciphertext` (wrapped by `key` if given, bound to
/// `ctx`; `what` names it, `svc` picks the hint of a refusal), retried
/// until `deadline`.
pub(super) async fn open_ciphertext(
    sdk: &Sdk<'_>,
    deadline: Instant,
    ciphertext: &[u8],
    key: Option<&str>,
    ctx: &BTreeMap<String, String>,
    what: &str,
    svc: Service,
) -> Result<Passphrase> {
    sdk.call(
        deadline,
        &format!("decrypting {what} with KMS"),
        |cfg| async move { decrypt(&cfg, key, ctx, ciphertext, what, svc).await },
    )
    .await
}

/// KMS's plaintext, moved into a locked buffer; the SDK's copy is zeroed.
pub(super) fn take_plaintext(blob: Option<Blob>) -> Result<Passphrase, Attempt> {
    let mut plain = blob
        .ok_or_else(|| Attempt::Fatal("KMS returned no plaintext".into()))?
        .into_inner();
    let p = Passphrase::from_slice(&plain);
    plain.zeroize();
    if p.is_empty() || p.len() > super::MAX_PASSPHRASE {
        return Err(Attempt::Fatal(format!(
            "KMS returned a {}-byte plaintext; expected 1 to {}",
            p.len(),
            super::MAX_PASSPHRASE
        )));
    }
    Ok(p)
}

/// Which service an error came from, for the operator's hint.
#[derive(Clone, Copy)]
pub(super) enum Service {
    S3,
    Kms,
    /// KMS, for a data key in a header: the caller names the likely cause
    /// from the token ([`super::data_key`]), so no blob hint.
    KmsDataKey,
}

/// Error codes that mean "try again later".
const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "KMSInternalException",
    "KMSInternal",
    "DependencyTimeoutException",
    "KeyUnavailableException",
];

pub(super) fn classify<E>(
    err: &SdkError<E, aws_smithy_runtime_api::http::Response>,
    what: &str,
    svc: Service,
) -> Attempt
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let e = ctx.err();
            let code = e.code().unwrap_or("");
            let msg = e.message().unwrap_or("");
            let said = if code.is_empty() {
                format!("HTTP {status}")
            } else if msg.is_empty() {
                format!("{code} (HTTP {status})")
            } else {
                format!("{code}: {msg} (HTTP {status})")
            };
            if status >= 500 || status == 429 || RETRYABLE_CODES.contains(&code) {
                return Attempt::Retry(said);
            }
            Attempt::Fatal(format!("{said}; {}", hint(svc, code, status, what)))
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            // Instance metadata that answers but refuses a session token
            // (IMDS disabled, or IMDSv2 forbidden by the hop limit) will not
            // change its mind: fail now instead of at the deadline.
            let mut source: Option<&(dyn StdError + 'static)> = Some(err);
            while let Some(e) = source {
                if let Some(t) = e.downcast_ref::<aws_config::imds::client::error::TokenError>() {
                    return Attempt::Fatal(format!(
                        "instance metadata refused a session token ({t}): allow IMDSv2 on the instance \
                         (and a hop limit of 2 in containers), or give credentials another way"
                    ));
                }
                source = e.source();
            }
            let mut source: Option<&(dyn StdError + 'static)> = Some(err);
            while let Some(e) = source {
                if let Some(c) = e.downcast_ref::<CredentialsError>() {
                    return match c {
                        CredentialsError::CredentialsNotLoaded(_) => Attempt::Fatal(
                            "no AWS credentials: on EC2 attach an instance role (and allow IMDSv2), \
                             elsewhere set AWS_PROFILE or AWS_ACCESS_KEY_ID"
                                .into(),
                        ),
                        CredentialsError::InvalidConfiguration(_) => {
                            Attempt::Fatal(format!("invalid AWS credentials configuration: {}", chain(c)))
                        }
                        _ => Attempt::Retry(format!("AWS credentials not available yet: {}", chain(c))),
                    };
                }
                source = e.source();
            }
            Attempt::Retry(format!("cannot reach the service: {}", chain(err)))
        }
        _ => Attempt::Fatal(chain(err)),
    }
}

/// KMS error codes a caller may explain further from what it knows (the
/// key's record, the settings).
const EXPLAINED_KMS_CODES: &[&str] = &[
    "InvalidCiphertextException",
    "DisabledException",
    "KMSInvalidStateException",
    "NotFoundException",
    "AccessDeniedException",
];

/// The KMS error code of a failed call's error, as [`classify`] put it at
/// the head of its message, when it is one of [`EXPLAINED_KMS_CODES`].
pub(super) fn kms_error_code(e: &anyhow::Error) -> Option<&'static str> {
    let text = format!("{e:#}");
    EXPLAINED_KMS_CODES
        .iter()
        .copied()
        .find(|c| text.contains(&format!("{c}: ")) || text.contains(&format!("{c} (HTTP")))
}

/// A failed call in a few words for a message that explains it itself:
/// KMS's error code when it is a known one, else the whole chain.
pub(super) fn kms_said(e: &anyhow::Error) -> String {
    match kms_error_code(e) {
        Some(code) => format!("KMS answered {code}"),
        None => format!("{e:#}"),
    }
}

pub(super) fn chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn hint(svc: Service, code: &str, status: u16, what: &str) -> String {
    match (svc, code) {
        (Service::S3, "NoSuchKey") => format!("{what} does not exist: check --wrapped-key, or create it with `secretfs seal`"),
        (Service::S3, "NoSuchBucket") => format!("the bucket of {what} does not exist: check --wrapped-key"),
        (Service::S3, _) if status == 403 || code == "AccessDenied" => format!(
            "access to {what} denied: the role needs s3:GetObject on it, and --expected-bucket-owner must own the bucket"
        ),
        (Service::Kms, "InvalidCiphertextException") => "KMS cannot decrypt this blob: the --encryption-context differs \
            from the one it was sealed with, or the blob is corrupted or not a KMS ciphertext"
            .into(),
        (Service::Kms, "IncorrectKeyException") => "the blob was not encrypted under --kms-key-id".into(),
        (Service::Kms, "NotFoundException") => "the KMS key does not exist (or is in another region)".into(),
        (Service::Kms, "DisabledException") => "the KMS key is disabled: enable it".into(),
        (Service::Kms, "KMSInvalidStateException") => {
            "the KMS key is not usable (pending deletion or import?): check it in KMS".into()
        }
        (Service::Kms, _) if status == 403 || code.contains("AccessDenied") => {
            "KMS denied the call: the role needs kms:Decrypt on the key (with this encryption context), \
             and --kms-key-id must be the key the blob was sealed under"
                .into()
        }
        (Service::KmsDataKey, _) => format!("KMS refused {what}"),
        _ => format!("while reading {what}"),
    }
}

/// What `seal` wrote.
#[derive(Debug, serde::Serialize)]
pub struct Sealed {
    /// Where the blob went.
    pub to: String,
    /// The key KMS encrypted under (its ARN, as KMS reports it).
    pub key_id: String,
    /// Size of the ciphertext blob.
    pub blob_bytes: usize,
    /// Size of the sealed passphrase.
    pub passphrase_bytes: usize,
}

/// Has KMS wrap `plain` under `kms_key` (encrypt a given passphrase, or
/// generate one inside KMS) and stores the blob at `to`.
pub async fn seal(
    plain: Plain<'_>,
    kms_key: &str,
    to: &BlobLocation,
    opts: &AwsOptions,
    force: bool,
) -> Result<Sealed> {
    let deadline = Instant::now() + opts.timeout;
    let sdk = Sdk::new(opts);
    if !force {
        refuse_existing(&sdk, to, deadline, opts.timeout).await?;
    }
    let (blob, key_id) = retry(
        deadline,
        opts.timeout,
        &format!("encrypting with KMS key {kms_key}"),
        || sdk.encrypt(kms_key, plain),
    )
    .await?;
    match to {
        BlobLocation::File(p) => write_private(p, &blob, force)?,
        BlobLocation::S3 { bucket, key } => {
            retry(deadline, opts.timeout, &format!("writing {to}"), || {
                sdk.put_object(bucket, key, &blob)
            })
            .await?
        }
    }
    info!(to = %to, key_id = %key_id, "sealed a {}-byte passphrase into a {}-byte KMS blob", plain.len(), blob.len());
    Ok(Sealed {
        to: to.to_string(),
        key_id,
        blob_bytes: blob.len(),
        passphrase_bytes: plain.len(),
    })
}

/// Refuses (exit 3) to replace the blob at `to` if one exists.
pub(super) async fn refuse_existing(
    sdk: &Sdk<'_>,
    to: &BlobLocation,
    deadline: Instant,
    budget: Duration,
) -> Result<()> {
    let exists = match to {
        BlobLocation::File(p) => p.exists(),
        BlobLocation::S3 { bucket, key } => {
            retry(deadline, budget, &format!("checking {to}"), || {
                sdk.head_object(bucket, key)
            })
            .await?
        }
    };
    if exists {
        return refused(format!(
            "{to} already exists; a volume sealed with it would become unopenable if it were replaced \
             (pass --force to replace it anyway)"
        ));
    }
    Ok(())
}

/// Writes `data` to the file `p`, mode 0600; `force` replaces a file
/// there, but never through a symbolic link, nor anything but a regular
/// file.
pub(super) fn write_private(p: &std::path::Path, data: &[u8], force: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create_new(!force)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p);
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return refused(format!(
                "{} is a symbolic link: give the path of the file itself, or remove the link",
                p.display()
            ))
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", p.display())),
    };
    let meta = f
        .metadata()
        .with_context(|| format!("examining {}", p.display()))?;
    if !meta.is_file() {
        return refused(format!(
            "{} is not a regular file: give the path of a file to write the blob to",
            p.display()
        ));
    }
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting mode 0600 on {}", p.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {}", p.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", p.display()))
}

async fn head_object(
    cfg: &SdkConfig,
    opts: &AwsOptions,
    bucket: &str,
    key: &str,
) -> Result<bool, Attempt> {
    let s3 = s3_client(cfg);
    match s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .set_expected_bucket_owner(opts.expected_bucket_owner.clone())
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(SdkError::ServiceError(ctx)) if ctx.raw().status().as_u16() == 404 => Ok(false),
        Err(e) => Err(classify(&e, &format!("s3://{bucket}/{key}"), Service::S3)),
    }
}

async fn put_object(
    cfg: &SdkConfig,
    opts: &AwsOptions,
    bucket: &str,
    key: &str,
    data: &[u8],
) -> Result<(), Attempt> {
    let s3 = s3_client(cfg);
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from(data.to_vec()))
        .content_type("application/octet-stream")
        .set_expected_bucket_owner(opts.expected_bucket_owner.clone())
        .send()
        .await
        .map_err(|e| classify(&e, &format!("s3://{bucket}/{key}"), Service::S3))?;
    debug!("wrote s3://{bucket}/{key}");
    Ok(())
}

async fn encrypt(
    cfg: &SdkConfig,
    opts: &AwsOptions,
    kms_key: &str,
    plain: Plain<'_>,
) -> Result<(Vec<u8>, String), Attempt> {
    let kms = aws_sdk_kms::Client::new(cfg);
    let ctx: HashMap<String, String> = opts.encryption_context.clone().into_iter().collect();
    let ctx = (!ctx.is_empty()).then_some(ctx);
    let (blob, key) = match plain {
        // The SDK takes the plaintext as an owned Vec and base64-encodes
        // it into the request body; neither copy is reachable from here
        // to zero (`lock_all_memory` keeps them out of swap).
        Plain::Given(pass) => {
            let out = kms
                .encrypt()
                .key_id(kms_key)
                .plaintext(Blob::new(pass.expose()))
                .set_encryption_context(ctx)
                .send()
                .await
                .map_err(|e| classify(&e, kms_key, Service::Kms))?;
            (out.ciphertext_blob, out.key_id)
        }
        Plain::Generated(n) => {
            let out = kms
                .generate_data_key_without_plaintext()
                .key_id(kms_key)
                .number_of_bytes(n as i32)
                .set_encryption_context(ctx)
                .send()
                .await
                .map_err(|e| classify(&e, kms_key, Service::Kms))?;
            (out.ciphertext_blob, out.key_id)
        }
    };
    let blob = blob
        .ok_or_else(|| Attempt::Fatal("KMS returned no ciphertext".into()))?
        .into_inner();
    Ok((blob, key.unwrap_or_else(|| kms_key.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code_of, EXIT_KEY_UNAVAILABLE};

    #[test]
    fn a_blob_file_others_can_change_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("wrapped.bin");
        std::fs::write(&p, [0x81u8; 200]).unwrap();
        let set = |mode| std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode));
        set(0o644).unwrap();
        assert_eq!(read_blob_file(&p).unwrap().len(), 200);
        set(0o666).unwrap();
        let e = read_blob_file(&p).unwrap_err();
        assert_eq!(exit_code_of(&e), EXIT_KEY_UNAVAILABLE);
        let m = format!("{e:#}");
        assert!(
            m.contains(&p.display().to_string()) && m.contains("0666") && m.contains("chmod 600"),
            "{m}"
        );
        set(0o644).unwrap();
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
            let m = format!("{:#}", read_blob_file(&p).unwrap_err());
            assert!(m.contains("uid 4242") && m.contains("chown"), "{m}");
        }
    }

    #[test]
    fn a_forced_write_replaces_a_file_but_not_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("wrapped.bin");
        std::fs::write(&p, b"old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"new", true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = d.path().join("link.bin");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = write_private(&link, b"new", true).unwrap_err();
        assert_eq!(exit_code_of(&e), crate::error::EXIT_REFUSED);
        assert!(format!("{e:#}").contains("symbolic link"), "{e:#}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn retry_gives_up_at_the_deadline_with_exit_4() {
        let start = Instant::now();
        let budget = Duration::from_millis(700);
        let r: Result<()> = block_on(retry(start + budget, budget, "test", || async {
            Err(Attempt::Retry("503".into()))
        }));
        let e = r.unwrap_err();
        assert_eq!(exit_code_of(&e), EXIT_KEY_UNAVAILABLE);
        assert!(format!("{e}").contains("last error: 503"), "{e}");
        let took = start.elapsed();
        assert!(
            took >= budget && took < budget + Duration::from_millis(500),
            "{took:?}"
        );
    }

    #[test]
    fn retry_stops_at_a_fatal_answer() {
        let mut calls = 0;
        let r: Result<()> = block_on(retry(
            Instant::now() + Duration::from_secs(30),
            Duration::from_secs(30),
            "t",
            || {
                calls += 1;
                async { Err(Attempt::Fatal("AccessDenied".into())) }
            },
        ));
        assert_eq!(calls, 1);
        assert_eq!(exit_code_of(&r.unwrap_err()), EXIT_KEY_UNAVAILABLE);
    }

    #[test]
    fn retry_recovers_after_transient_failures() {
        let mut calls = 0;
        let r = block_on(retry(
            Instant::now() + Duration::from_secs(30),
            Duration::from_secs(30),
            "t",
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(Attempt::Retry("throttled".into()))
                    } else {
                        Ok(n)
                    }
                }
            },
        ));
        assert_eq!(r.unwrap(), 3);
    }
}
