# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_secretfs_global_optspecs
    string join \n v/verbose q/quiet h/help V/version
end

function __fish_secretfs_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_secretfs_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_secretfs_using_subcommand
    set -l cmd (__fish_secretfs_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c secretfs -n "__fish_secretfs_needs_command" -s v -l verbose -d 'More log detail (-v debug, -vv trace); logs go to stderr'
complete -c secretfs -n "__fish_secretfs_needs_command" -s q -l quiet -d 'Log only errors'
complete -c secretfs -n "__fish_secretfs_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c secretfs -n "__fish_secretfs_needs_command" -s V -l version -d 'Print version'
complete -c secretfs -n "__fish_secretfs_needs_command" -f -a "up" -d 'Make the encrypted filesystem available (safe to run any number of times)'
complete -c secretfs -n "__fish_secretfs_needs_command" -f -a "down" -d 'Unmount, close the mapping and detach a loop device secretfs attached'
complete -c secretfs -n "__fish_secretfs_needs_command" -f -a "status" -d 'Show what is there: device, LUKS header, mapping, mount and usage; exits 6 unless the volume is open and mounted'
complete -c secretfs -n "__fish_secretfs_needs_command" -f -a "seal" -d 'Have KMS make a passphrase (or take one) and wrap it; store the blob'
complete -c secretfs -n "__fish_secretfs_needs_command" -f -a "check-key" -d 'Fetch and decrypt the wrapped key as `up` would, without using it'
complete -c secretfs -n "__fish_secretfs_needs_command" -f -a "rotate" -d 'Give the open volume a new data key without reformatting (one for a whole set): a new key slot per member, then the old one removed (volumes made with --kms-key; an interrupted rotation is finished)'
complete -c secretfs -n "__fish_secretfs_needs_command" -f -a "rewrap" -d 'Re-wrap under another KMS key with KMS ReEncrypt (the plaintext never reaches this host): the data keys in the open volume\'s headers, or a blob with --wrapped-key'
complete -c secretfs -n "__fish_secretfs_needs_command" -f -a "shred" -d 'Crypto-shred the volume: unmount, close, destroy every key slot and both LUKS2 headers on every device below it (irreversible)'
complete -c secretfs -n "__fish_secretfs_needs_command" -f -a "swap" -d 'Make encrypted swap space with an ephemeral key (made anew every boot) and enable it; `--off` disables and closes it'
complete -c secretfs -n "__fish_secretfs_needs_command" -f -a "wait" -d 'Wait until the volume is open and mounted (for scripts; exits 6 at the timeout)'
complete -c secretfs -n "__fish_secretfs_needs_command" -f -a "install-unit" -d 'Write the systemd unit, and a drop-in for each service that must not start without the volume; enable the unit'
complete -c secretfs -n "__fish_secretfs_needs_command" -f -a "setup-local-disks" -d 'The volume of a Kubernetes node, as EKS\'s setup-local-disks lays it out but encrypted: nodeadm runs it by that name (see install-unit --k8s-disks)'
complete -c secretfs -n "__fish_secretfs_needs_command" -f -a "generate" -d 'Write the man pages and shell completions under DIR'
complete -c secretfs -n "__fish_secretfs_needs_command" -f -a "member" -d 'Format or open one member of a set: the child process `up` starts for each (job and key on stdin, answer on stdout); not for people'
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l wrapped-key -d 'KMS-wrapped passphrase: s3://BUCKET/KEY or a file (raw or base64)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l passphrase-file -d 'Plaintext passphrase file, or - for stdin (one trailing newline is dropped)' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l kms-key -d 'Give each volume its own data key, made by KMS under this key (key id, ARN or alias/NAME) and kept wrapped in the volume\'s header: no S3 object' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l kms-key-id -d 'Pin the KMS key Decrypt may use (key id, ARN or alias/NAME)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l encryption-context -d 'KMS encryption context pair (repeatable); must match the one sealed' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l expected-bucket-owner -d 'Refuse the S3 object unless this account owns the bucket' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l region -d 'AWS region (default: the SDK\'s chain: env, profile, instance metadata)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l endpoint-url -d 'Endpoint for S3 and KMS calls (AWS_ENDPOINT_URL* also work)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l timeout -d 'Deadline for getting the key, retrying throttling and network errors [default: 5m]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l disk -d 'Raw block device to use (several times: one volume striped over all of them), or `auto`: every instance-store NVMe disk' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l no-disks -d 'With `--disk auto` on an instance without instance store: `error` (exit 5, the unit fails and services that require it do not start) or `ok` (exit 0, nothing done) [default: error]' -r -f -a "error\t'Exit 5: the unit fails, services that require it do not start'
ok\t'Exit 0 after one line: nothing to encrypt here'"
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l file -d 'Loop-backed file to use (created sparse, mode 0600, if absent)' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l size -d 'Size of the file to create (512M, 2G, 10T; powers of 1024)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l name -d 'Volume name: /dev/mapper/NAME [default: secretfs]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l mount -d 'Mount point, created if absent [default: /mnt/secretfs]' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l fs -d 'Filesystem of a new volume [default: ext4]; an existing volume keeps its own, and refuses a different --fs' -r -f -a "ext4\t'ext4'
xfs\t'XFS, as ScyllaDB requires and Cassandra recommends (needs xfsprogs)'"
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l mount-options -d 'Mount options, added to nodev,nosuid (unless they say dev or suid) [default: noatime]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l pbkdf -d 'Key-slot PBKDF [default: auto]' -r -f -a "auto\t'PBKDF2 (1000 iterations) for a KMS key, argon2id for a typed one'
pbkdf2\t'PBKDF2-SHA256 with 1000 iterations (for high-entropy keys)'
argon2id\t'argon2id, benchmarked by cryptsetup (for human passphrases)'"
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l config -d 'TOML file with the same settings; flags override it [default: /etc/secretfs/secretfs.toml if it exists]' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l bind-instance -d 'With --kms-key: bind new volumes\' data keys to this instance (its ARN, from instance metadata, joins the encryption context)'
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l ephemeral -d 'A random key that only this process and the kernel ever hold (no KMS, no key slot): the volume and its data are gone after a reboot or `down`, and the next `up` makes it anew. For scratch that must never outlive a boot'
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l allow-http -d 'Accept http:// endpoints on hosts other than loopback and link-local addresses (keys and credentials cross in the clear)'
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l each-disk -d 'One volume per disk instead of one striped over them all: the disk with index N (kept in its header, whatever the kernel names the disk) opens as NAME-diskN, mounted at DIR/N (from 1)'
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l mount-nonempty -d 'Mount even over a directory that is not empty (its files are hidden)'
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l force -d 'Allow formatting a device that holds foreign data (its signatures are erased first; never a mounted or held device)'
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l no-force -d 'Do not format foreign data, whatever the config file says'
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l wipe -d 'After a first format, overwrite the whole volume with zeros (slow)'
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l discard -d 'Pass discards (TRIM) through the encryption layer'
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l dry-run -d 'Observe and print the plan; change nothing and fetch no key'
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -l json -d 'Print one JSON object with the outcome on stdout'
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -s v -l verbose -d 'More log detail (-v debug, -vv trace); logs go to stderr'
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -s q -l quiet -d 'Log only errors'
complete -c secretfs -n "__fish_secretfs_using_subcommand up" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c secretfs -n "__fish_secretfs_using_subcommand down" -l name -d 'Volume name [default: the config\'s name, else secretfs]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand down" -l config -d 'TOML file to take the volume name from (as `up --config`)' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand down" -l mount -d 'Also unmount this directory if the volume is mounted there' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand down" -l json -d 'Print one JSON object with the outcome on stdout'
complete -c secretfs -n "__fish_secretfs_using_subcommand down" -s v -l verbose -d 'More log detail (-v debug, -vv trace); logs go to stderr'
complete -c secretfs -n "__fish_secretfs_using_subcommand down" -s q -l quiet -d 'Log only errors'
complete -c secretfs -n "__fish_secretfs_using_subcommand down" -s h -l help -d 'Print help'
complete -c secretfs -n "__fish_secretfs_using_subcommand status" -l name -d 'Volume name [default: the config\'s name, else secretfs]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand status" -l config -d 'TOML file to take the volume name from (as `up --config`)' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand status" -l json -d 'Print one JSON object on stdout'
complete -c secretfs -n "__fish_secretfs_using_subcommand status" -s v -l verbose -d 'More log detail (-v debug, -vv trace); logs go to stderr'
complete -c secretfs -n "__fish_secretfs_using_subcommand status" -s q -l quiet -d 'Log only errors'
complete -c secretfs -n "__fish_secretfs_using_subcommand status" -s h -l help -d 'Print help'
complete -c secretfs -n "__fish_secretfs_using_subcommand seal" -l kms-key -d 'KMS key to encrypt under (key id, ARN or alias/NAME)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand seal" -l to -d 'Where to write the ciphertext blob: s3://BUCKET/KEY or a file (0600)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand seal" -l passphrase-file -d 'Seal this passphrase (file, or - for stdin) instead of a random one' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand seal" -l kms-key-id -d 'Pin the KMS key Decrypt may use (key id, ARN or alias/NAME)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand seal" -l encryption-context -d 'KMS encryption context pair (repeatable); must match the one sealed' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand seal" -l expected-bucket-owner -d 'Refuse the S3 object unless this account owns the bucket' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand seal" -l region -d 'AWS region (default: the SDK\'s chain: env, profile, instance metadata)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand seal" -l endpoint-url -d 'Endpoint for S3 and KMS calls (AWS_ENDPOINT_URL* also work)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand seal" -l timeout -d 'Deadline for getting the key, retrying throttling and network errors [default: 5m]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand seal" -l force -d 'Overwrite an existing blob (a volume sealed with it becomes unopenable)'
complete -c secretfs -n "__fish_secretfs_using_subcommand seal" -l allow-http -d 'Accept http:// endpoints on hosts other than loopback and link-local addresses (keys and credentials cross in the clear)'
complete -c secretfs -n "__fish_secretfs_using_subcommand seal" -l json -d 'Print one JSON object on stdout'
complete -c secretfs -n "__fish_secretfs_using_subcommand seal" -s v -l verbose -d 'More log detail (-v debug, -vv trace); logs go to stderr'
complete -c secretfs -n "__fish_secretfs_using_subcommand seal" -s q -l quiet -d 'Log only errors'
complete -c secretfs -n "__fish_secretfs_using_subcommand seal" -s h -l help -d 'Print help'
complete -c secretfs -n "__fish_secretfs_using_subcommand check-key" -l wrapped-key -d 'KMS-wrapped passphrase: s3://BUCKET/KEY or a file (raw or base64)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand check-key" -l kms-key-id -d 'Pin the KMS key Decrypt may use (key id, ARN or alias/NAME)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand check-key" -l encryption-context -d 'KMS encryption context pair (repeatable); must match the one sealed' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand check-key" -l expected-bucket-owner -d 'Refuse the S3 object unless this account owns the bucket' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand check-key" -l region -d 'AWS region (default: the SDK\'s chain: env, profile, instance metadata)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand check-key" -l endpoint-url -d 'Endpoint for S3 and KMS calls (AWS_ENDPOINT_URL* also work)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand check-key" -l timeout -d 'Deadline for getting the key, retrying throttling and network errors [default: 5m]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand check-key" -l allow-http -d 'Accept http:// endpoints on hosts other than loopback and link-local addresses (keys and credentials cross in the clear)'
complete -c secretfs -n "__fish_secretfs_using_subcommand check-key" -l json -d 'Print one JSON object on stdout'
complete -c secretfs -n "__fish_secretfs_using_subcommand check-key" -s v -l verbose -d 'More log detail (-v debug, -vv trace); logs go to stderr'
complete -c secretfs -n "__fish_secretfs_using_subcommand check-key" -s q -l quiet -d 'Log only errors'
complete -c secretfs -n "__fish_secretfs_using_subcommand check-key" -s h -l help -d 'Print help'
complete -c secretfs -n "__fish_secretfs_using_subcommand rotate" -l name -d 'Volume name [default: the config\'s name, else secretfs]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rotate" -l config -d 'TOML file to take the volume name from (as `up --config`)' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand rotate" -l new-kms-key -d 'Make the new data keys under this KMS key [default: the key that wraps each member\'s data key now]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rotate" -l kms-key-id -d 'Pin the KMS key Decrypt may use (key id, ARN or alias/NAME)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rotate" -l encryption-context -d 'KMS encryption context pair (repeatable); must match the one sealed' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rotate" -l expected-bucket-owner -d 'Refuse the S3 object unless this account owns the bucket' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rotate" -l region -d 'AWS region (default: the SDK\'s chain: env, profile, instance metadata)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rotate" -l endpoint-url -d 'Endpoint for S3 and KMS calls (AWS_ENDPOINT_URL* also work)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rotate" -l timeout -d 'Deadline for getting the key, retrying throttling and network errors [default: 5m]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rotate" -l allow-http -d 'Accept http:// endpoints on hosts other than loopback and link-local addresses (keys and credentials cross in the clear)'
complete -c secretfs -n "__fish_secretfs_using_subcommand rotate" -l json -d 'Print one JSON object with the outcome on stdout'
complete -c secretfs -n "__fish_secretfs_using_subcommand rotate" -s v -l verbose -d 'More log detail (-v debug, -vv trace); logs go to stderr'
complete -c secretfs -n "__fish_secretfs_using_subcommand rotate" -s q -l quiet -d 'Log only errors'
complete -c secretfs -n "__fish_secretfs_using_subcommand rotate" -s h -l help -d 'Print help'
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -l name -d 'Volume name [default: the config\'s name, else secretfs]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -l config -d 'TOML file to take the volume name from (as `up --config`)' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -l new-kms-key -d 'The KMS key to wrap under from now on (key id, ARN or alias/NAME)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -l wrapped-key -d 'Re-wrap this blob (s3://BUCKET/KEY or a file), not a volume\'s keys' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -l to -d 'Write the re-wrapped blob here [default: over the --wrapped-key]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -l kms-key-id -d 'Pin the KMS key Decrypt may use (key id, ARN or alias/NAME)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -l encryption-context -d 'KMS encryption context pair (repeatable); must match the one sealed' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -l expected-bucket-owner -d 'Refuse the S3 object unless this account owns the bucket' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -l region -d 'AWS region (default: the SDK\'s chain: env, profile, instance metadata)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -l endpoint-url -d 'Endpoint for S3 and KMS calls (AWS_ENDPOINT_URL* also work)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -l timeout -d 'Deadline for getting the key, retrying throttling and network errors [default: 5m]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -l force -d 'Replace an existing blob at --to'
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -l allow-http -d 'Accept http:// endpoints on hosts other than loopback and link-local addresses (keys and credentials cross in the clear)'
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -l json -d 'Print one JSON object with the outcome on stdout'
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -s v -l verbose -d 'More log detail (-v debug, -vv trace); logs go to stderr'
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -s q -l quiet -d 'Log only errors'
complete -c secretfs -n "__fish_secretfs_using_subcommand rewrap" -s h -l help -d 'Print help'
complete -c secretfs -n "__fish_secretfs_using_subcommand shred" -l name -d 'Volume name [default: the config\'s name, else secretfs]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand shred" -l config -d 'TOML file to take the volume name from (as `up --config`)' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand shred" -l disk -d 'Shred a closed volume on these raw block devices (each member of a set): each must hold a secretfs header (proven by its token) or read as blank already, as a set shredded in part does; anything else on any of them refuses the whole run' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand shred" -l file -d 'Shred a closed loop-backed volume in this file (as --disk)' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand shred" -l yes -d 'Do not ask: destroy the volume and its data'
complete -c secretfs -n "__fish_secretfs_using_subcommand shred" -l json -d 'Print one JSON object with the outcome on stdout'
complete -c secretfs -n "__fish_secretfs_using_subcommand shred" -s v -l verbose -d 'More log detail (-v debug, -vv trace); logs go to stderr'
complete -c secretfs -n "__fish_secretfs_using_subcommand shred" -s q -l quiet -d 'Log only errors'
complete -c secretfs -n "__fish_secretfs_using_subcommand shred" -s h -l help -d 'Print help'
complete -c secretfs -n "__fish_secretfs_using_subcommand swap" -l disk -d 'Raw block device for the swap space (never a member of a volume)' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand swap" -l file -d 'Loop-backed file for the swap space (created sparse, mode 0600, if absent)' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand swap" -l size -d 'Size of the file to create (512M, 2G; powers of 1024)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand swap" -l priority -d 'Swap priority, 0 to 32767: higher is used first [default: the kernel\'s]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand swap" -l name -d 'Mapping name [default: the config\'s, else secretfs-swap]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand swap" -l config -d 'TOML file whose [swap] section holds these settings' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand swap" -l discard -d 'Pass discards (TRIM) through the encryption layer and to swap'
complete -c secretfs -n "__fish_secretfs_using_subcommand swap" -l off -d 'Disable the swap space and close it (what it held is gone)'
complete -c secretfs -n "__fish_secretfs_using_subcommand swap" -l dry-run -d 'Observe and print the plan; change nothing'
complete -c secretfs -n "__fish_secretfs_using_subcommand swap" -l json -d 'Print one JSON object with the outcome on stdout'
complete -c secretfs -n "__fish_secretfs_using_subcommand swap" -s v -l verbose -d 'More log detail (-v debug, -vv trace); logs go to stderr'
complete -c secretfs -n "__fish_secretfs_using_subcommand swap" -s q -l quiet -d 'Log only errors'
complete -c secretfs -n "__fish_secretfs_using_subcommand swap" -s h -l help -d 'Print help'
complete -c secretfs -n "__fish_secretfs_using_subcommand wait" -l name -d 'Volume name [default: the config\'s name, else secretfs]' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand wait" -l config -d 'TOML file to take the volume name from (as `up --config`)' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand wait" -l timeout -d 'How long to wait before giving up (exit 6)' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand wait" -s v -l verbose -d 'More log detail (-v debug, -vv trace); logs go to stderr'
complete -c secretfs -n "__fish_secretfs_using_subcommand wait" -s q -l quiet -d 'Log only errors'
complete -c secretfs -n "__fish_secretfs_using_subcommand wait" -s h -l help -d 'Print help'
complete -c secretfs -n "__fish_secretfs_using_subcommand install-unit" -l requires -d 'A unit that must not start without the volume (repeatable; `NAME` means NAME.service): gets a drop-in with Requires= and After=' -r
complete -c secretfs -n "__fish_secretfs_using_subcommand install-unit" -l binary -d 'The binary the unit runs [default: this one]' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand install-unit" -l root -d 'Write into this system root (an image being built) and run no systemctl' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand install-unit" -l now -d 'Also start the unit now (`systemctl enable --now`)'
complete -c secretfs -n "__fish_secretfs_using_subcommand install-unit" -l swap -d 'Also write and enable secretfs-swap.service, which runs `secretfs swap` from the config\'s [swap] section on every boot'
complete -c secretfs -n "__fish_secretfs_using_subcommand install-unit" -l k8s-disks -d 'For an EKS or Karpenter node: link /usr/local/sbin/setup-local-disks to the binary (nodeadm finds it there first) and make nodeadm-run.service, kubelet.service and containerd.service require the volume'
complete -c secretfs -n "__fish_secretfs_using_subcommand install-unit" -s v -l verbose -d 'More log detail (-v debug, -vv trace); logs go to stderr'
complete -c secretfs -n "__fish_secretfs_using_subcommand install-unit" -s q -l quiet -d 'Log only errors'
complete -c secretfs -n "__fish_secretfs_using_subcommand install-unit" -s h -l help -d 'Print help'
complete -c secretfs -n "__fish_secretfs_using_subcommand setup-local-disks" -s d -l dir -d 'Where the volume is mounted, as DIR/0 (the config\'s mount must say so)' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand setup-local-disks" -l config -d 'The config file with the key settings [default: /etc/secretfs/secretfs.toml]' -r -F
complete -c secretfs -n "__fish_secretfs_using_subcommand setup-local-disks" -l no-bind-kubelet -d 'Do not bind /var/lib/kubelet onto the volume'
complete -c secretfs -n "__fish_secretfs_using_subcommand setup-local-disks" -l no-bind-containerd -d 'Do not bind /var/lib/containerd onto the volume'
complete -c secretfs -n "__fish_secretfs_using_subcommand setup-local-disks" -l no-bind-pods-logs -d 'Do not bind /var/log/pods onto the volume'
complete -c secretfs -n "__fish_secretfs_using_subcommand setup-local-disks" -l no-bind-soci -d 'Do not bind /var/lib/soci-snapshotter-grpc onto the volume'
complete -c secretfs -n "__fish_secretfs_using_subcommand setup-local-disks" -l no-bind-mounts -d 'Bind nothing: only the volume'
complete -c secretfs -n "__fish_secretfs_using_subcommand setup-local-disks" -s v -l verbose -d 'More log detail (-v debug, -vv trace); logs go to stderr'
complete -c secretfs -n "__fish_secretfs_using_subcommand setup-local-disks" -s q -l quiet -d 'Log only errors'
complete -c secretfs -n "__fish_secretfs_using_subcommand setup-local-disks" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c secretfs -n "__fish_secretfs_using_subcommand generate" -s v -l verbose -d 'More log detail (-v debug, -vv trace); logs go to stderr'
complete -c secretfs -n "__fish_secretfs_using_subcommand generate" -s q -l quiet -d 'Log only errors'
complete -c secretfs -n "__fish_secretfs_using_subcommand generate" -s h -l help -d 'Print help'
complete -c secretfs -n "__fish_secretfs_using_subcommand member" -s v -l verbose -d 'More log detail (-v debug, -vv trace); logs go to stderr'
complete -c secretfs -n "__fish_secretfs_using_subcommand member" -s q -l quiet -d 'Log only errors'
complete -c secretfs -n "__fish_secretfs_using_subcommand member" -s h -l help -d 'Print help'
