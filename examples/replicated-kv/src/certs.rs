//! `replicated-kv certs init|node`: a cluster CA and node certificates as PEM files.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Subcommand;
use datacake_node::certs::{ClusterCa, BACKDATE};

/// The CA certificate's file name in the `--out` / `--ca` directory.
const CA_CERT: &str = "ca.pem";
/// The CA key's file name in the `--out` / `--ca` directory.
const CA_KEY: &str = "ca-key.pem";

/// Certificates for a cluster, no OpenSSL needed.
#[derive(Debug, Subcommand)]
pub(crate) enum CertsCommand {
    /// Make a cluster CA: writes DIR/ca.pem (what every node trusts) and DIR/ca-key.pem
    /// (mode 0600; keep it off the nodes). Valid for ten years.
    Init {
        /// The cluster id the CA signs for (the servers' --cluster-id).
        #[arg(long, value_name = "NAME")]
        cluster: String,
        /// Directory to write into; created if missing. Existing files are not overwritten.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Issue a node certificate signed by the CA: writes DIR/node-ID.pem and
    /// DIR/node-ID-key.pem (mode 0600). It names `datacake://<cluster>/<ID>` and each --host,
    /// serves as a TLS server and client certificate, and can be the node's HTTPS certificate.
    Node {
        /// The node id.
        #[arg(long, value_name = "ID")]
        id: u32,
        /// A DNS name or IP address the node is reached at; repeat for several.
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// Directory holding ca.pem and ca-key.pem (from `certs init`).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Directory to write into; created if missing. Existing files are not overwritten.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// How many days the certificate is valid.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..))]
        days: u32,
    },
}

/// Runs a `certs` subcommand, printing the files written.
pub(crate) fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init { cluster, out } => {
            let ca = ClusterCa::generate(&cluster)?;
            create_dir(&out)?;
            // The key first: if it cannot be written, no orphan certificate is left.
            write_new(&out.join(CA_KEY), &ca.key_pem(), Secret::Yes)?;
            write_new(&out.join(CA_CERT), ca.cert_pem(), Secret::No)?;
        }
        CertsCommand::Node {
            id,
            hosts,
            ca,
            out,
            days,
        } => {
            let read = |name: &str| {
                let path = ca.join(name);
                std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))
            };
            let ca = ClusterCa::from_pem(&read(CA_CERT)?, &read(CA_KEY)?)
                .with_context(|| format!("cannot load the CA in {}", ca.display()))?;
            let now = SystemTime::now();
            let validity = Duration::from_secs(u64::from(days) * 24 * 60 * 60);
            let node = ca.issue_node_valid(id, &hosts, now - BACKDATE, now + validity)?;
            create_dir(&out)?;
            write_new(
                &out.join(format!("node-{id}-key.pem")),
                node.key_pem(),
                Secret::Yes,
            )?;
            write_new(
                &out.join(format!("node-{id}.pem")),
                node.cert_pem(),
                Secret::No,
            )?;
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// Whether a file holds a private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secret {
    Yes,
    No,
}

/// Writes `contents` to a new file at `path` (never over an existing one); a secret is
/// readable by its owner only, from the moment it exists.
fn write_new(path: &Path, contents: &str, secret: Secret) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret == Secret::Yes { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).with_context(|| {
        format!(
            "cannot create {} (an existing file is never overwritten)",
            path.display()
        )
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
