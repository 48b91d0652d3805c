//! CURVE on the command line: `ndbridge keygen`, the key options of `collect`, `send` and
//! `tail`, and the rule that a collector listening beyond loopback uses CURVE unless told
//! `--insecure`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use ndbridge::{Allowlist, KeyPair, Link, PublicKey};

#[derive(Args)]
pub(crate) struct KeygenArgs {
    /// The key's name: the collector stores a publisher's records under it, and an allowlist
    /// lists it as the file NAME.key.
    pub(crate) name: String,
    /// Directory for NAME.key (the public key, to give to peers) and NAME.key_secret (both
    /// keys, mode 0600, to keep private).
    #[arg(long, default_value = ".")]
    pub(crate) dir: PathBuf,
}

/// Writes a new key pair; prints where, and the public key.
pub(crate) fn keygen(args: &KeygenArgs) -> Result<()> {
    let bad = args.name.is_empty()
        || args.name.starts_with('.')
        || args.name.contains(['/', '\0'])
        || args.name.chars().any(char::is_control);
    if bad {
        bail!(
            "key name {:?}: expected a file name (not empty, no '/', not starting with '.')",
            args.name
        );
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let pair = KeyPair::generate()?;
    let (public, secret) = pair.save(&args.dir, &args.name)?;
    println!("public key {} -> {}", pair.public(), public.display());
    println!("secret key -> {} (keep it private)", secret.display());
    Ok(())
}

/// The collector's CURVE options.
#[derive(Args)]
pub(crate) struct ServerKeyArgs {
    /// The collector's secret key file (NAME.key_secret from `ndbridge keygen`): with it, every
    /// socket of the collector (input and forward) takes only peers whose public key is in
    /// --allow, and encrypts what crosses. Publishers and subscribers are given NAME.key.
    #[arg(long, requires = "allow", value_name = "FILE")]
    pub(crate) curve_secret: Option<PathBuf>,
    /// Directory of the public keys allowed in (one NAME.key per publisher or subscriber): a
    /// publisher's records are stored and counted under its key's NAME, whatever source its
    /// header names.
    #[arg(long, requires = "curve_secret", value_name = "DIR")]
    pub(crate) allow: Option<PathBuf>,
    /// Listen on an address beyond loopback without CURVE: anyone who reaches the port can send
    /// records under any source and read every record forwarded.
    #[arg(long)]
    pub(crate) insecure: bool,
}

impl ServerKeyArgs {
    /// The collector's key pair and allowlist, when CURVE is asked for.
    pub(crate) fn load(&self) -> Result<Option<(KeyPair, Allowlist)>> {
        let (Some(secret), Some(allow)) = (&self.curve_secret, &self.allow) else {
            return Ok(None);
        };
        let pair = KeyPair::load(secret).context("reading --curve-secret")?;
        let list = Allowlist::load(allow).context("reading --allow")?;
        if list.is_empty() {
            bail!(
                "--allow {}: expected at least one public key file NAME.key, found none \
                 (make them with ndbridge keygen)",
                allow.display()
            );
        }
        Ok(Some((pair, list)))
    }

    /// Refuses listening beyond loopback without CURVE unless `--insecure`, and warns when
    /// `--insecure` lets it.
    pub(crate) fn check_exposure<'a>(
        &self,
        addresses: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        if self.curve_secret.is_some() {
            return Ok(());
        }
        let exposed: Vec<&str> = addresses.into_iter().filter(|a| !is_loopback(a)).collect();
        if exposed.is_empty() {
            return Ok(());
        }
        if !self.insecure {
            bail!(
                "listening on {} without CURVE would let anyone who reaches it send and read \
                 records: give --curve-secret FILE --allow DIR (keys from ndbridge keygen), or \
                 --insecure to do it anyway",
                exposed.join(", ")
            );
        }
        tracing::warn!(
            "--insecure: listening on {} without CURVE; anyone who reaches it can send records \
             under any source and read every record forwarded",
            exposed.join(", ")
        );
        Ok(())
    }
}

/// True for addresses only this machine reaches ([`Link::of`] finds them local); also for an
/// address without a transport, which nothing can listen on (binding it fails, saying what it
/// lacks).
fn is_loopback(address: &str) -> bool {
    !address.contains("://") || Link::of(address) == Link::Local
}

/// A publisher's or subscriber's CURVE options.
#[derive(Args)]
pub(crate) struct ClientKeyArgs {
    /// The collector's public key file (its NAME.key): with it, the connection is authenticated
    /// and encrypted with CURVE.
    #[arg(long, requires = "curve_secret", value_name = "FILE")]
    pub(crate) curve_server: Option<PathBuf>,
    /// This peer's secret key file (NAME.key_secret from `ndbridge keygen`); the collector must
    /// list its NAME.key.
    #[arg(long, requires = "curve_server", value_name = "FILE")]
    pub(crate) curve_secret: Option<PathBuf>,
}

impl ClientKeyArgs {
    /// The server's public key and this peer's key pair, when CURVE is asked for.
    pub(crate) fn load(&self) -> Result<Option<(PublicKey, KeyPair)>> {
        let (Some(server), Some(secret)) = (&self.curve_server, &self.curve_secret) else {
            return Ok(None);
        };
        Ok(Some((
            PublicKey::load(server).context("reading --curve-server")?,
            KeyPair::load(secret).context("reading --curve-secret")?,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_addresses_are_told_from_exposed_ones() {
        for local in [
            "tcp://127.0.0.1:5555",
            "tcp://localhost:*",
            "tcp://[::1]:5",
            "ipc:///tmp/x",
            "ws://127.0.0.1:80/ndbridge",
            "127.0.0.1:5555",
        ] {
            assert!(is_loopback(local), "{local}");
        }
        for exposed in [
            "tcp://0.0.0.0:5555",
            "tcp://*:5555",
            "tcp://10.0.0.1:1",
            "tcp://eth0:1",
        ] {
            assert!(!is_loopback(exposed), "{exposed}");
        }
    }
}
