//! `secretfs swap`: encrypted swap space with an ephemeral key, made anew
//! every boot. The same observe → plan → execute as `up` (the plan puts
//! swap space inside and enables it, instead of ext4 and a mount); `--off`
//! is `down` of the swap mapping (swapoff, close, detach).

use anyhow::Result;

use crate::cli::SwapArgs;
use crate::config;
use crate::settings::Volume;

/// `secretfs swap`.
pub fn run(args: &SwapArgs) -> Result<()> {
    if args.off {
        let v = Volume {
            name: config::swap_name(args)?,
            mount: None,
            json: args.json,
            each_disk: false,
        };
        return super::down::take_down(&v);
    }
    super::up::bring_up(config::swap(args)?)
}
