//! `voltex certs`: the platform's CA for QUIC mutual TLS, on disk.
//!
//! `voltex certs init --dir DIR` writes `ca.pem`, `ca.key`, `server.pem` and `server.key`
//! (the platform's server certificate for `--server-name`s); `voltex certs issue-device ID
//! --dir DIR` writes `devices/ID.pem` and `devices/ID.key`, signed by the CA in DIR. The
//! certificate logic is `voltex_dispatch::transport::certs`; this file only does files.
//! Private keys are written with mode 0600 and never overwritten without `--force`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use voltex_dispatch::DeviceId;
use voltex_dispatch::transport::certs::{self, CaFiles};

/// `voltex certs` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum CertsCommand {
    /// Create the platform CA and the platform's server certificate in DIR.
    Init(InitArgs),
    /// Issue a device's client certificate (common name = device id), signed by the CA.
    IssueDevice(IssueDeviceArgs),
}

/// Arguments of `voltex certs init`.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Directory for the CA and server files.
    #[arg(long, default_value = "certs")]
    dir: PathBuf,
    /// DNS names or IPs of the platform's server certificate (repeatable).
    #[arg(
        long = "server-name",
        default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()]
    )]
    server_names: Vec<String>,
    /// Replace an existing CA (every device certificate it signed stops being trusted).
    #[arg(long)]
    force: bool,
}

/// Arguments of `voltex certs issue-device`.
#[derive(clap::Args, Debug)]
pub struct IssueDeviceArgs {
    /// Device id (1..=64 characters of [A-Za-z0-9._-]).
    id: String,
    /// Directory holding the CA (`voltex certs init`).
    #[arg(long, default_value = "certs")]
    dir: PathBuf,
    /// Replace an existing certificate of this device.
    #[arg(long)]
    force: bool,
}

/// Runs a `voltex certs` subcommand.
pub fn run(command: &CertsCommand) -> Result<()> {
    match command {
        CertsCommand::Init(args) => init(args),
        CertsCommand::IssueDevice(args) => issue_device(args),
    }
}

fn init(args: &InitArgs) -> Result<()> {
    let ca_key = args.dir.join("ca.key");
    if ca_key.exists() && !args.force {
        bail!(
            "{} exists; pass --force to replace the CA",
            ca_key.display()
        );
    }
    fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let ca = certs::init_ca("Voltex platform CA")?;
    let server = certs::issue_server(&ca, &args.server_names)?;
    write(&args.dir.join("ca.pem"), &ca.cert_pem, false)?;
    write(&ca_key, &ca.key_pem, true)?;
    write(&args.dir.join("server.pem"), &server.cert_pem, false)?;
    write(&args.dir.join("server.key"), &server.key_pem, true)?;
    println!(
        "CA and server certificate ({}) written to {}",
        args.server_names.join(", "),
        args.dir.display()
    );
    Ok(())
}

fn issue_device(args: &IssueDeviceArgs) -> Result<()> {
    let device = DeviceId::new(args.id.clone())?;
    let ca = CaFiles {
        cert_pem: read(&args.dir.join("ca.pem"))?,
        key_pem: read(&args.dir.join("ca.key"))?,
    };
    let devices = args.dir.join("devices");
    let cert_path = devices.join(format!("{device}.pem"));
    if cert_path.exists() && !args.force {
        bail!("{} exists; pass --force to re-issue", cert_path.display());
    }
    fs::create_dir_all(&devices).with_context(|| format!("creating {}", devices.display()))?;
    let issued = certs::issue_device(&ca, &device)?;
    write(&cert_path, &issued.cert_pem, false)?;
    write(
        &devices.join(format!("{device}.key")),
        &issued.key_pem,
        true,
    )?;
    println!(
        "device certificate for {device} written to {}",
        devices.display()
    );
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (run `voltex certs init` first?)",
            path.display()
        )
    })
}

fn write(path: &Path, contents: &str, private: bool) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
