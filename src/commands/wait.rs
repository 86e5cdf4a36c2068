//! `secretfs wait`: block until the volume is open and mounted, for
//! scripts that must not start before it (units use `Requires=` instead).
//! Read-only: it looks as `status` does, once a second.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use tracing::info;

use super::status;
use crate::cli::WaitArgs;
use crate::config;
use crate::signals;

/// How often the volume is looked at.
const POLL: Duration = Duration::from_millis(500);

/// `secretfs wait`.
pub fn run(args: &WaitArgs) -> Result<()> {
    let v = config::volume(&args.volume, None, false)?;
    signals::install();
    let root = Path::new("/");
    let deadline = Instant::now() + args.timeout;
    let mut said = false;
    loop {
        let r = status::report(root, &v.name)?;
        let Some(not_up) = r.not_up() else {
            info!("{} is up", v.name);
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(anyhow::Error::new(not_up).context(format!(
                "waited {} for volume {}",
                humantime::format_duration(args.timeout),
                v.name
            )));
        }
        if let Some(s) = signals::caught() {
            anyhow::bail!("interrupted by {s} while waiting for volume {}", v.name);
        }
        if !said {
            info!(
                "waiting up to {} for volume {}: {not_up}",
                humantime::format_duration(args.timeout),
                v.name
            );
            said = true;
        }
        std::thread::sleep(POLL);
    }
}
