#!/usr/bin/env python3
"""Prepares and inspects a local moto server for the secretfs tests.

  moto_setup.py --endpoint http://127.0.0.1:PORT [setup]
      creates a symmetric KMS key with alias/secretfs-test, a second key, and
      the bucket secretfs-test; prints
      {"key_id", "key_arn", "alias", "other_key_id", "other_key_arn", "bucket"}.

  moto_setup.py --endpoint URL decrypt --file PATH [--context K=V]... [--key-id ID]
      KMS-decrypts the blob in PATH (raw, or base64 of it); prints
      {"key_id": <ARN of the key that encrypted it>, "plaintext_b64": ...,
      "plaintext_hex": ...}.

  moto_setup.py --endpoint URL encrypt --plaintext-file PATH [--key-id ID]
                [--context K=V]... (--out PATH | --bucket B --key K) [--base64]
      KMS-encrypts the file's bytes (default key: alias/secretfs-test) and
      writes the ciphertext blob (or its base64) to a file or an S3 object;
      prints {"key_id": ..., "bytes": n}.

  moto_setup.py --endpoint URL get --bucket B --key K --out PATH
  moto_setup.py --endpoint URL put --bucket B --key K --file PATH
  moto_setup.py --endpoint URL head --bucket B --key K
  moto_setup.py --endpoint URL delete --bucket B --key K
      S3 object helpers; head prints {"exists": bool, "size": n}.

  moto_setup.py --endpoint URL disable-key --key-id ID
  moto_setup.py --endpoint URL create-key --description TEXT
      disables a key (prints {"key_state"}); makes another symmetric key
      (prints {"key_id", "key_arn"}).

Only ever talks to the given endpoint, which must be on 127.0.0.1/localhost,
with dummy credentials (moto accepts any) in us-east-1.
"""

import argparse
import base64
import binascii
import json
import sys
import urllib.parse

import boto3
import botocore.config
import botocore.exceptions

REGION = "us-east-1"
ALIAS = "alias/secretfs-test"
BUCKET = "secretfs-test"


def client(service, endpoint):
    return boto3.session.Session(
        aws_access_key_id="AKIAMOTOSETUPEXAMPLE",
        aws_secret_access_key="motosetupdummysecretmotosetupdummysecret",
        region_name=REGION,
    ).client(
        service,
        endpoint_url=endpoint,
        config=botocore.config.Config(
            retries={"max_attempts": 2, "mode": "standard"},
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def parse_context(pairs):
    ctx = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"--context needs K=V, got {pair!r}")
        k, v = pair.split("=", 1)
        ctx[k] = v
    return ctx


def cmd_setup(args):
    kms = client("kms", args.endpoint)
    s3 = client("s3", args.endpoint)
    key = kms.create_key(Description="secretfs test key", KeyUsage="ENCRYPT_DECRYPT",
                         KeySpec="SYMMETRIC_DEFAULT")["KeyMetadata"]
    kms.create_alias(AliasName=ALIAS, TargetKeyId=key["KeyId"])
    other = kms.create_key(Description="secretfs test key (other)", KeyUsage="ENCRYPT_DECRYPT",
                           KeySpec="SYMMETRIC_DEFAULT")["KeyMetadata"]
    s3.create_bucket(Bucket=BUCKET)
    print(json.dumps({
        "key_id": key["KeyId"],
        "key_arn": key["Arn"],
        "alias": ALIAS,
        "other_key_id": other["KeyId"],
        "other_key_arn": other["Arn"],
        "bucket": BUCKET,
    }))


def cmd_decrypt(args):
    with open(args.file, "rb") as f:
        blob = f.read()
    try:
        decoded = base64.b64decode(blob.strip(), validate=True)
        if decoded:
            blob = decoded
    except (binascii.Error, ValueError):
        pass
    kw = {"CiphertextBlob": blob}
    ctx = parse_context(args.context)
    if ctx:
        kw["EncryptionContext"] = ctx
    if args.key_id:
        kw["KeyId"] = args.key_id
    out = client("kms", args.endpoint).decrypt(**kw)
    print(json.dumps({
        "key_id": out["KeyId"],
        "plaintext_b64": base64.b64encode(out["Plaintext"]).decode(),
        "plaintext_hex": out["Plaintext"].hex(),
    }))


def cmd_encrypt(args):
    with open(args.plaintext_file, "rb") as f:
        plaintext = f.read()
    kw = {"KeyId": args.key_id, "Plaintext": plaintext}
    ctx = parse_context(args.context)
    if ctx:
        kw["EncryptionContext"] = ctx
    out = client("kms", args.endpoint).encrypt(**kw)
    blob = out["CiphertextBlob"]
    if args.base64:
        blob = base64.b64encode(blob) + b"\n"
    if args.out:
        with open(args.out, "wb") as f:
            f.write(blob)
    elif args.bucket and args.key:
        client("s3", args.endpoint).put_object(Bucket=args.bucket, Key=args.key, Body=blob)
    else:
        raise SystemExit("encrypt needs --out, or --bucket and --key")
    print(json.dumps({"key_id": out["KeyId"], "bytes": len(blob)}))


def cmd_get(args):
    body = client("s3", args.endpoint).get_object(Bucket=args.bucket, Key=args.key)["Body"].read()
    with open(args.out, "wb") as f:
        f.write(body)
    print(json.dumps({"bytes": len(body)}))


def cmd_put(args):
    with open(args.file, "rb") as f:
        body = f.read()
    client("s3", args.endpoint).put_object(Bucket=args.bucket, Key=args.key, Body=body)
    print(json.dumps({"bytes": len(body)}))


def cmd_head(args):
    try:
        out = client("s3", args.endpoint).head_object(Bucket=args.bucket, Key=args.key)
        print(json.dumps({"exists": True, "size": out["ContentLength"]}))
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            print(json.dumps({"exists": False, "size": 0}))
        else:
            raise


def cmd_delete(args):
    client("s3", args.endpoint).delete_object(Bucket=args.bucket, Key=args.key)
    print(json.dumps({"deleted": args.key}))


def cmd_disable_key(args):
    kms = client("kms", args.endpoint)
    kms.disable_key(KeyId=args.key_id)
    print(json.dumps({"key_state": kms.describe_key(KeyId=args.key_id)["KeyMetadata"]["KeyState"]}))


def cmd_create_key(args):
    key = client("kms", args.endpoint).create_key(Description="secretfs test: " + args.description)
    print(json.dumps({"key_id": key["KeyMetadata"]["KeyId"], "key_arn": key["KeyMetadata"]["Arn"]}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", required=True)
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("setup")
    d = sub.add_parser("decrypt")
    d.add_argument("--file", required=True)
    d.add_argument("--context", action="append")
    d.add_argument("--key-id")
    e = sub.add_parser("encrypt")
    e.add_argument("--plaintext-file", required=True)
    e.add_argument("--key-id", default=ALIAS)
    e.add_argument("--context", action="append")
    e.add_argument("--out")
    e.add_argument("--bucket")
    e.add_argument("--key")
    e.add_argument("--base64", action="store_true")
    g = sub.add_parser("get")
    g.add_argument("--bucket", default=BUCKET)
    g.add_argument("--key", required=True)
    g.add_argument("--out", required=True)
    u = sub.add_parser("put")
    u.add_argument("--bucket", default=BUCKET)
    u.add_argument("--key", required=True)
    u.add_argument("--file", required=True)
    h = sub.add_parser("head")
    h.add_argument("--bucket", default=BUCKET)
    h.add_argument("--key", required=True)
    x = sub.add_parser("delete")
    x.add_argument("--bucket", default=BUCKET)
    x.add_argument("--key", required=True)
    c = sub.add_parser("create-key")
    c.add_argument("--description", required=True)
    k = sub.add_parser("disable-key")
    k.add_argument("--key-id", required=True)
    args = p.parse_args()

    host = urllib.parse.urlsplit(args.endpoint).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        p.error(f"refusing a non-loopback endpoint: {args.endpoint}")

    {
        None: cmd_setup,
        "setup": cmd_setup,
        "decrypt": cmd_decrypt,
        "encrypt": cmd_encrypt,
        "get": cmd_get,
        "put": cmd_put,
        "head": cmd_head,
        "delete": cmd_delete,
        "disable-key": cmd_disable_key,
        "create-key": cmd_create_key,
    }[args.cmd](args)


if __name__ == "__main__":
    try:
        main()
    except botocore.exceptions.ClientError as exc:
        err = exc.response.get("Error", {})
        print(f"moto_setup: {err.get('Code')}: {err.get('Message')}", file=sys.stderr)
        sys.exit(1)
