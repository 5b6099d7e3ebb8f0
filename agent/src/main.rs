//! `voltex-agent`: the battery agent binary.
//!
//! Reads the TOML config (see `voltex_agent::config`), opens the local SQLite store,
//! builds the driver (simulated by default, GPIO with feature `pi`) and the transport
//! (MQTT or QUIC from `voltex_dispatch::transport`), and runs
//! `voltex_agent::runtime::Runtime` on a single-threaded tokio runtime until SIGINT or
//! SIGTERM (or `--run-for-s`). Exits non-zero on a fatal store or transport error so a
//! supervisor (systemd) restarts it; restart is crash-safe by design.
//!
//! `voltex-agent csr --device-id ID --key-out FILE` makes the device's QUIC key pair
//! and prints a certificate signing request for the platform
//! (`POST /api/v1/devices/{id}/certificate` with `{"csr_pem": ...}`); the private key
//! is written (mode 0600, never over an existing file) and never leaves the device.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use voltex_agent::config::{AgentConfig, DriverKind, TransportKind};
use voltex_agent::driver::BatteryDriver;
use voltex_agent::driver::sim::SimulatedBattery;
use voltex_agent::runtime::{AgentLink, Runtime, RuntimeConfig, SystemClock};
use voltex_agent::store::sqlite::SqliteStore;
use voltex_dispatch::transport::{
    MqttConfig, MqttTls, QuicDeviceConfig, ReconnectPolicy, mqtt_device, quic_device,
};

/// The Voltex battery agent.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Config file (TOML).
    #[arg(long, short, default_value = "/etc/voltex-agent/agent.toml")]
    config: PathBuf,
    /// Run the clocks this many times faster than real time (measurements, demos).
    #[arg(long, default_value_t = 1)]
    time_scale: u32,
    /// Stop after this many real seconds (measurements).
    #[arg(long)]
    run_for_s: Option<u64>,
    /// A one-off command instead of running the agent.
    #[command(subcommand)]
    command: Option<AgentCommand>,
}

#[derive(Subcommand, Debug)]
enum AgentCommand {
    /// Make this device's QUIC key pair and print a certificate signing request (PEM)
    /// for the platform to sign; the private key goes to --key-out only.
    Csr {
        /// The device id (the certificate's common name).
        #[arg(long)]
        device_id: String,
        /// Where to write the private key (PKCS#8 PEM, mode 0600; must not exist).
        #[arg(long)]
        key_out: PathBuf,
        /// Where to write the request; standard output if absent.
        #[arg(long)]
        csr_out: Option<PathBuf>,
    },
}

/// `voltex-agent csr`: see the module doc.
fn make_csr(device_id: &str, key_out: &PathBuf, csr_out: Option<&PathBuf>) -> anyhow::Result<()> {
    use std::io::Write;
    let device = voltex_dispatch::DeviceId::new(device_id.to_string())
        .with_context(|| format!("device id {device_id:?}"))?;
    let request = voltex_dispatch::transport::certs::device_csr(&device)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut key_file = options.open(key_out).with_context(|| {
        format!(
            "creating {} (an existing key is never replaced)",
            key_out.display()
        )
    })?;
    key_file
        .write_all(request.key_pem.as_bytes())
        .and_then(|()| key_file.sync_all())
        .with_context(|| format!("writing {}", key_out.display()))?;
    match csr_out {
        Some(path) => std::fs::write(path, &request.csr_pem)
            .with_context(|| format!("writing {}", path.display()))?,
        None => print!("{}", request.csr_pem),
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if let Some(AgentCommand::Csr {
        device_id,
        key_out,
        csr_out,
    }) = &args.command
    {
        return make_csr(device_id, key_out, csr_out.as_ref());
    }
    let config = AgentConfig::load(&args.config)?;
    // One thread: the agent is I/O-bound and must fit a Pi's budget.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(run(config, args))
}

fn read_pem(path: Option<&PathBuf>, what: &str) -> anyhow::Result<String> {
    let Some(path) = path else {
        bail!("platform.{what} is required");
    };
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn build_driver(config: &AgentConfig) -> anyhow::Result<Box<dyn BatteryDriver>> {
    match config.driver.kind {
        DriverKind::Simulated => {
            let spec = config.battery_spec()?;
            Ok(Box::new(SimulatedBattery::new(
                spec,
                config.battery.initial_soc_wh,
            )?))
        }
        #[cfg(feature = "pi")]
        DriverKind::Gpio => {
            let pins = config
                .driver
                .gpio
                .as_ref()
                .context("driver.gpio pins are required")?;
            Ok(Box::new(voltex_agent::driver::gpio::GpioDriver::new(
                pins,
                config.limits,
            )?))
        }
        #[cfg(not(feature = "pi"))]
        DriverKind::Gpio => bail!("driver kind \"gpio\" needs a build with --features pi"),
    }
}

async fn run(config: AgentConfig, args: Args) -> anyhow::Result<()> {
    let store = SqliteStore::open(&config.database)
        .await
        .with_context(|| format!("opening {}", config.database.display()))?;
    let driver = build_driver(&config)?;
    let timing = &config.timing;
    let reconnect = ReconnectPolicy {
        delay_min: Duration::from_millis(timing.reconnect_min_ms),
        delay_max: Duration::from_millis(timing.reconnect_max_ms),
        seed: Some(config.seed()),
    };
    let platform = &config.platform;
    match platform.transport {
        TransportKind::Mqtt => {
            let url = platform.mqtt_url.as_deref().context("platform.mqtt_url")?;
            let mut mqtt = MqttConfig::from_url(url)?;
            mqtt.reconnect = reconnect;
            if platform.ca_cert.is_some() {
                let client = match (&platform.client_cert, &platform.client_key) {
                    (Some(_), Some(_)) => Some((
                        read_pem(platform.client_cert.as_ref(), "client_cert")?,
                        read_pem(platform.client_key.as_ref(), "client_key")?,
                    )),
                    _ => None,
                };
                mqtt.tls = Some(MqttTls {
                    ca_cert_pem: read_pem(platform.ca_cert.as_ref(), "ca_cert")?,
                    client_cert_key_pem: client,
                });
            }
            let link = mqtt_device(mqtt, config.device_id.clone()).await?;
            run_with(config, args, store, driver, link).await
        }
        TransportKind::Quic => {
            let addr = platform
                .quic_addr
                .as_deref()
                .context("platform.quic_addr")?;
            let server_addr = addr
                .to_socket_addrs()
                .with_context(|| format!("resolving {addr}"))?
                .next()
                .with_context(|| format!("{addr} resolves to nothing"))?;
            let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
            let server_name = platform.quic_server_name.as_deref().unwrap_or(host);
            let mut quic = QuicDeviceConfig::new(
                server_addr,
                server_name,
                read_pem(platform.ca_cert.as_ref(), "ca_cert")?,
                read_pem(platform.client_cert.as_ref(), "client_cert")?,
                read_pem(platform.client_key.as_ref(), "client_key")?,
            );
            quic.reconnect = reconnect;
            let link = quic_device(quic).await?;
            run_with(config, args, store, driver, link).await
        }
    }
}

async fn run_with<L: AgentLink>(
    config: AgentConfig,
    args: Args,
    store: SqliteStore,
    driver: Box<dyn BatteryDriver>,
    link: L,
) -> anyhow::Result<()> {
    let timing = &config.timing;
    let runtime_config = RuntimeConfig {
        tick: Duration::from_millis(timing.tick_ms),
        telemetry_interval: Duration::from_secs(timing.telemetry_interval_s),
        heartbeat_interval: Duration::from_secs(timing.heartbeat_interval_s),
        resend_after: Duration::from_secs(60),
        emergency_file: config.emergency_stop.file.clone(),
        flush_messages_max: 64,
    };
    let clock = SystemClock::new(args.time_scale);
    let runtime = Runtime::start(
        config.core_config()?,
        store,
        driver,
        link,
        clock,
        runtime_config,
    )
    .await?;
    let run_for = args.run_for_s.map(Duration::from_secs);
    let shutdown = async move {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGTERM");
                    return std::future::pending().await;
                }
            };
        let timeout = async {
            match run_for {
                Some(duration) => tokio::time::sleep(duration).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
            () = timeout => {}
        }
    };
    let stats = runtime.run(shutdown).await?;
    tracing::info!(?stats, "exiting");
    Ok(())
}
