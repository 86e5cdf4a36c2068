//! The example IAM and KMS key policies (`examples/*.json`), checked on
//! their text. moto does not evaluate key policies or IAM conditions, so
//! nothing in the suite shows AWS enforcing them; what is checked here:
//!
//! - every example passes parliament, the IAM policy linter (installed by
//!   `scripts/setup` into `.cache/venv`; run through
//!   `tests/support/parliament_lint.py`), with no finding at any severity;
//!   without parliament the test fails, it never skips;
//! - in each key mode's key policy, every statement that lets a principal
//!   use the key names one role and carries the encryption-context
//!   conditions the README describes (with data keys: the caller's own
//!   instance), none allows grants or replicas, ReEncrypt only to another
//!   key, and the account root may administer the key (change its policy
//!   included) but not use it;
//! - each key mode has an IAM policy whose KMS statements name keys, not
//!   `*`, with exactly the conditions of the key policy's statement for the
//!   same actions;
//! - the KMS operations the source calls are the ones the policies grant,
//!   and the README links every example.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use secretfs::keys::data_key::{CONTEXT_INSTANCE, CONTEXT_VOLUME};

use crate::common::aws::shebang_python;

/// The context pair the examples require (`--encryption-context
/// purpose=secretfs`, as the shipped user data sets it).
const PURPOSE: (&str, &str) = ("purpose", "secretfs");

/// The account of the examples (a placeholder).
const ACCOUNT_ROOT: &str = "arn:aws:iam::123456789012:root";

/// KMS actions that use the key, or hand its use to someone else.
const USE: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "DeriveSharedSecret",
    "Sign",
    "Verify",
    "GenerateMac",
    "VerifyMac",
    "CreateGrant",
    "ReplicateKey",
];

/// Of those, the ones no statement may allow: a grant's operations are
/// not bound by the key policy's conditions, and a replica in another
/// Region has a key policy of its own.
const NEVER: &[&str] = &["CreateGrant", "ReplicateKey"];

/// A key mode and its two example policies.
struct Mode {
    name: &'static str,
    key_policy: &'static str,
    iam_policy: &'static str,
    /// The encryption-context keys secretfs sends in this mode.
    context_keys: &'static [&'static str],
    /// Whether the context names the instance (`--bind-instance`).
    instance: bool,
    /// The KMS actions the commands of this mode call.
    calls: &'static [&'static str],
}

const MODES: [Mode; 2] = [
    Mode {
        name: "S3 blob (--wrapped-key)",
        key_policy: "examples/kms-key-policy.json",
        iam_policy: "examples/iam-policy.json",
        context_keys: &[PURPOSE.0],
        instance: false,
        // seal; up and check-key; rewrap --wrapped-key
        calls: &[
            "GenerateDataKeyWithoutPlaintext",
            "Encrypt",
            "Decrypt",
            "ReEncryptFrom",
            "ReEncryptTo",
        ],
    },
    Mode {
        name: "data keys (--kms-key)",
        key_policy: "examples/kms-key-policy-data-keys.json",
        iam_policy: "examples/iam-policy-data-keys.json",
        context_keys: &[PURPOSE.0, CONTEXT_VOLUME, CONTEXT_INSTANCE],
        instance: true,
        // up and rotate; rewrap
        calls: &["GenerateDataKey", "Decrypt", "ReEncryptFrom", "ReEncryptTo"],
    },
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn read_json(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `examples/*.json`, by name.
fn example_policies() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .map(|n| format!("examples/{n}"))
        .collect();
    v.sort();
    v
}

/// A policy's statements (one object or a list).
fn statements(p: &Value) -> Vec<&Value> {
    match &p["Statement"] {
        Value::Array(v) => v.iter().collect(),
        s @ Value::Object(_) => vec![s],
        other => panic!("Statement is {other}"),
    }
}

/// A string or a list of strings.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(v) => v
            .iter()
            .map(|s| s.as_str().expect("a string").to_owned())
            .collect(),
        Value::Null => Vec::new(),
        other => panic!("expected a string or a list of strings: {other}"),
    }
}

/// A key policy names a Principal in every statement, an IAM policy in none.
fn is_key_policy(rel: &str, p: &Value) -> bool {
    let with: Vec<bool> = statements(p)
        .iter()
        .map(|s| s.get("Principal").is_some() || s.get("NotPrincipal").is_some())
        .collect();
    assert!(
        with.iter().all(|&w| w) || with.iter().all(|&w| !w),
        "{rel}: some statements name a principal and some do not"
    );
    with[0]
}

/// The principals a statement names.
fn principals(s: &Value) -> Vec<String> {
    match &s["Principal"] {
        Value::String(p) => vec![p.clone()],
        Value::Object(m) => m.values().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// IAM's action match: case-insensitive, `*` and `?` wildcards.
fn glob(pattern: &str, action: &str) -> bool {
    fn m(p: &[u8], a: &[u8]) -> bool {
        match (p.first(), a.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], a) || (!a.is_empty() && m(p, &a[1..])),
            (Some(b'?'), Some(_)) => m(&p[1..], &a[1..]),
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => m(&p[1..], &a[1..]),
            _ => false,
        }
    }
    m(pattern.as_bytes(), action.as_bytes())
}

/// Whether `s` allows `kms:{action}`.
fn allows(s: &Value, action: &str) -> bool {
    s["Effect"] == "Allow"
        && strings(&s["Action"])
            .iter()
            .any(|a| glob(a, &format!("kms:{action}")))
}

/// What is missing from the conditions of a statement that lets someone
/// use a key of `mode`.
fn context_problems(s: &Value, mode: &Mode) -> Vec<String> {
    let c = &s["Condition"];
    let mut problems = Vec::new();
    let purpose = format!("kms:EncryptionContext:{}", PURPOSE.0);
    if c["StringEquals"][&purpose] != PURPOSE.1 {
        problems.push(format!("no StringEquals {purpose} = {}", PURPOSE.1));
    }
    let keys: BTreeSet<String> =
        strings(&c["ForAllValues:StringEquals"]["kms:EncryptionContextKeys"])
            .into_iter()
            .collect();
    let expected: BTreeSet<String> = mode.context_keys.iter().map(|k| k.to_string()).collect();
    if keys != expected {
        problems.push(format!(
            "ForAllValues:StringEquals kms:EncryptionContextKeys is {keys:?}, not the context secretfs sends ({expected:?})"
        ));
    }
    if mode.instance {
        let instance = format!("kms:EncryptionContext:{CONTEXT_INSTANCE}");
        if c["StringEquals"][&instance] != "${ec2:SourceInstanceARN}" {
            problems.push(format!(
                "no StringEquals {instance} = ${{ec2:SourceInstanceARN}}: a key is not confined to its instance"
            ));
        }
        let volume = format!("kms:EncryptionContext:{CONTEXT_VOLUME}");
        if c["Null"][&volume] != "false" {
            problems.push(format!("no Null {volume} = false"));
        }
    }
    let from = allows(s, "ReEncryptFrom");
    let to = allows(s, "ReEncryptTo");
    if from || to {
        if !(from && to) {
            problems.push(
                "ReEncryptFrom without ReEncryptTo or the other way round: the same policy serves the old key and the new one"
                    .into(),
            );
        }
        if c["Bool"]["kms:ReEncryptOnSameKey"] != "false" {
            problems.push(
                "no Bool kms:ReEncryptOnSameKey = false: a ReEncrypt on the same key can rewrite the context"
                    .into(),
            );
        }
    }
    problems
}

/// The parliament script; panics when it is not installed.
fn parliament() -> PathBuf {
    let path = std::env::var_os("SECRETFS_PARLIAMENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache/venv/bin/parliament"));
    if !path.is_file() {
        panic!(
            "parliament not installed: run scripts/setup (looked for {}; SECRETFS_PARLIAMENT overrides)",
            path.display()
        );
    }
    path
}

#[test]
fn every_example_policy_passes_parliament() {
    let parliament = parliament();
    let python = shebang_python(&parliament).unwrap_or_else(|| {
        panic!(
            "{} names no Python on its #! line: run scripts/setup",
            parliament.display()
        )
    });
    let files = example_policies();
    for m in &MODES {
        for f in [m.key_policy, m.iam_policy] {
            assert!(files.iter().any(|x| x == f), "{f} is missing");
        }
    }
    let mut findings = Vec::new();
    for f in &files {
        // parliament --minimum_severity INFO [--config FILE], through its
        // library (see parliament_lint.py).
        let mut cmd = Command::new(&python);
        cmd.current_dir(root())
            .arg("tests/support/parliament_lint.py");
        if is_key_policy(f, &read_json(f)) {
            cmd.args(["--config", "tests/support/parliament-key-policy.yaml"]);
        }
        let out = cmd
            .arg(f)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.trim().is_empty() {
            findings.push(format!(
                "{f}: parliament exited {:?}:\n{stdout}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        findings.is_empty(),
        "parliament's findings on the example policies:\n{}",
        findings.join("\n")
    );
}

#[test]
fn the_key_policies_let_only_named_roles_use_the_key_and_only_with_the_context() {
    let mut problems = Vec::new();
    for m in &MODES {
        let p = read_json(m.key_policy);
        assert!(
            is_key_policy(m.key_policy, &p),
            "{}: no Principal",
            m.key_policy
        );
        let all = statements(&p);
        for (i, s) in all.iter().enumerate() {
            let at = format!("{} statement {i} ({})", m.key_policy, s["Sid"]);
            for inverted in ["NotAction", "NotPrincipal", "NotResource"] {
                if s.get(inverted).is_some() {
                    problems.push(format!("{at}: {inverted} grants what it does not name"));
                }
            }
            let uses: Vec<&str> = USE.iter().copied().filter(|a| allows(s, a)).collect();
            if uses.is_empty() {
                continue;
            }
            for a in uses.iter().filter(|a| NEVER.contains(a)) {
                problems.push(format!(
                    "{at}: allows kms:{a}, which escapes the conditions"
                ));
            }
            let who = principals(s);
            if who.len() != 1 || !who[0].contains(":role/") {
                problems.push(format!(
                    "{at}: lets {who:?} use the key ({uses:?}); only one named role may"
                ));
            }
            for e in context_problems(s, m) {
                problems.push(format!("{at}: {e}"));
            }
        }
        // The account administers the key (the policy itself included, so
        // it is never locked out) and uses it through no statement above.
        match all
            .iter()
            .find(|s| s["Effect"] == "Allow" && principals(s) == [ACCOUNT_ROOT])
        {
            Some(admin) if allows(admin, "PutKeyPolicy") => {}
            _ => problems.push(format!(
                "{}: no statement lets {ACCOUNT_ROOT} kms:PutKeyPolicy",
                m.key_policy
            )),
        }
        for c in m.calls {
            if !all.iter().any(|s| allows(s, c)) {
                problems.push(format!(
                    "{}: no statement allows kms:{c}, which {} calls",
                    m.key_policy, m.name
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn each_key_mode_has_an_iam_policy_that_grants_no_more_than_its_key_policy() {
    let mut problems = Vec::new();
    for m in &MODES {
        let iam = read_json(m.iam_policy);
        assert!(
            !is_key_policy(m.iam_policy, &iam),
            "{}: an IAM policy names no Principal",
            m.iam_policy
        );
        let key = read_json(m.key_policy);
        let mut granted = BTreeSet::new();
        for (i, s) in statements(&iam).iter().enumerate() {
            let at = format!("{} statement {i} ({})", m.iam_policy, s["Sid"]);
            let actions = strings(&s["Action"]);
            if !actions.iter().any(|a| glob("kms:*", a)) {
                continue;
            }
            for r in strings(&s["Resource"]) {
                if !r.starts_with("arn:aws:kms:") || r.contains('*') {
                    problems.push(format!("{at}: Resource {r} is not one key's ARN"));
                }
            }
            for e in context_problems(s, m) {
                problems.push(format!("{at}: {e}"));
            }
            let set: BTreeSet<&String> = actions.iter().collect();
            let twin = statements(&key).into_iter().find(|k| {
                k["Effect"] == "Allow"
                    && strings(&k["Action"]).iter().collect::<BTreeSet<_>>() == set
            });
            match twin {
                Some(k) if k["Condition"] == s["Condition"] => {}
                Some(_) => problems.push(format!(
                    "{at}: its conditions differ from the key policy's statement for {actions:?}"
                )),
                None => problems.push(format!(
                    "{at}: {} has no statement for {actions:?}",
                    m.key_policy
                )),
            }
            granted.extend(actions);
        }
        if granted.is_empty() {
            problems.push(format!("{}: grants no KMS action", m.iam_policy));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `kms.<operation>()` calls in `src/`, as KMS action names
/// (`generate_data_key` → `GenerateDataKey`; ReEncrypt is authorized as
/// ReEncryptFrom on the old key and ReEncryptTo on the new).
fn kms_calls_in(dir: &Path, into: &mut BTreeSet<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            kms_calls_in(&path, into);
            continue;
        }
        if path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        for (at, _) in text.match_indices("kms") {
            if text[..at].chars().next_back().is_some_and(word) {
                continue;
            }
            let Some(rest) = text[at + 3..].trim_start().strip_prefix('.') else {
                continue;
            };
            let op: String = rest.chars().take_while(|&c| word(c)).collect();
            if op.is_empty() || !rest[op.len()..].starts_with("()") {
                continue;
            }
            let camel: String = op
                .split('_')
                .map(|p| p[..1].to_uppercase() + &p[1..])
                .collect();
            if camel == "ReEncrypt" {
                into.insert("ReEncryptFrom".into());
                into.insert("ReEncryptTo".into());
            } else {
                into.insert(camel);
            }
        }
    }
}

#[test]
fn the_policies_grant_the_kms_operations_the_source_calls() {
    let mut called = BTreeSet::new();
    kms_calls_in(&root().join("src"), &mut called);
    let granted: BTreeSet<String> = MODES
        .iter()
        .flat_map(|m| m.calls.iter().map(|c| c.to_string()))
        .collect();
    assert_eq!(
        called, granted,
        "the KMS operations in src/ and the ones the example policies grant differ"
    );
}

#[test]
fn the_readme_links_every_example_policy_and_names_none_that_is_missing() {
    let readme = read("README.md");
    for f in example_policies() {
        assert!(
            readme.contains(&format!("]({f})")),
            "README.md does not link {f}"
        );
    }
    let mut texts = vec![("README.md".to_owned(), readme)];
    for dir in ["doc", "userdata"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = e.unwrap().path();
            if path.is_file() {
                let rel = format!("{dir}/{}", path.file_name().unwrap().to_string_lossy());
                texts.push((rel.clone(), read(&rel)));
            }
        }
    }
    for (name, text) in &texts {
        for (at, _) in text.match_indices("examples/") {
            let file: String = text[at..]
                .chars()
                .take_while(|&c| c.is_ascii_alphanumeric() || "/._-".contains(c))
                .collect();
            let file = file.trim_end_matches('.');
            if file.ends_with(".json") {
                assert!(
                    root().join(file).is_file(),
                    "{name} names {file}, which does not exist"
                );
            }
        }
    }
}
