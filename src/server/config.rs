//! Server configuration: a TOML file, then `VOLTEX_*` environment overrides, then
//! command-line flags (applied by the binary).
//!
//! Every field has an embedded default, so `voltex serve` with no file runs on SQLite
//! in `./voltex-data/` and an in-process MQTT broker. Unknown TOML fields are an error
//! naming the field, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`ServerConfig`] (message names line and field).
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (line, column, field).
        message: String,
    },
    /// An environment variable holds an unusable value.
    #[error("invalid environment variable {name}: {message}")]
    Env {
        /// Variable name.
        name: &'static str,
        /// Why.
        message: String,
    },
    /// A value is out of its allowed range.
    #[error("invalid config value {field}: {message}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// Why.
        message: String,
    },
}

/// Longest MQTT client id accepted in the configuration.
pub const MQTT_CLIENT_ID_LEN_MAX: usize = 64;

/// Everything `voltex serve` needs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTP listen address of the API, WebSocket streams, metrics and dashboard.
    pub http_addr: SocketAddr,
    /// Directory of the engine journal, the platform CA and the SQLite file.
    pub data_dir: PathBuf,
    /// Database URL; `None` means `sqlite://{data_dir}/voltex.db`.
    pub database_url: Option<String>,
    /// External MQTT broker (`mqtt://host:port`); `None` starts the embedded broker.
    pub mqtt_url: Option<String>,
    /// The platform's MQTT client id. Its persistent session is keyed by it, so it
    /// must be stable across restarts of one deployment and distinct between
    /// deployments sharing a broker (a broker disconnects the older of two clients
    /// with one id). 1 to 64 printable ASCII characters, no `/`, `+` or `#`.
    pub mqtt_client_id: String,
    /// Port of the embedded MQTT broker (0: pick a free one).
    pub embedded_mqtt_port: u16,
    /// QUIC listen address for devices (port 0: pick a free one).
    pub quic_addr: SocketAddr,
    /// Directory holding the CA (`ca.pem`, `ca.key`, as `voltex certs init` writes
    /// them) from which the server issues device certificates
    /// (`POST /api/v1/devices/{id}/certificate`). `None`: the server holds no CA key
    /// and that endpoint answers 503 (`voltex up` uses its own per-run CA). An
    /// issuing CA online is a risk to weigh: prefer an intermediate CA here.
    pub device_ca_dir: Option<PathBuf>,
    /// HS256 secret for JWT bearer tokens; `None` generates a random one per run
    /// (fine for `voltex up`, useless for tokens issued offline).
    pub jwt_secret: Option<String>,
    /// Orders per second one account may submit (token bucket refill rate).
    pub rate_limit_orders_per_s: u32,
    /// Burst size of the per-account token bucket.
    pub rate_limit_burst: u32,
    /// Hourly intraday products listed ahead of now.
    pub intraday_hours_ahead: u32,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("voltex-data"),
            database_url: None,
            mqtt_url: None,
            mqtt_client_id: "voltex-platform".into(),
            embedded_mqtt_port: 0,
            quic_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            device_ca_dir: None,
            jwt_secret: None,
            rate_limit_orders_per_s: 2_000,
            rate_limit_burst: 4_000,
            intraday_hours_ahead: 24,
        }
    }
}

impl ServerConfig {
    /// Reads `path` (TOML).
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ServerConfig::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text; the error message names line and field.
    ///
    /// # Errors
    /// The parser's message.
    pub fn from_toml(text: &str) -> Result<ServerConfig, String> {
        toml::from_str(text).map_err(|error| error.to_string())
    }

    /// Applies `VOLTEX_HTTP_ADDR`, `VOLTEX_DATA_DIR`, `VOLTEX_DATABASE_URL`,
    /// `VOLTEX_MQTT_URL`, `VOLTEX_MQTT_CLIENT_ID`, `VOLTEX_QUIC_ADDR` and
    /// `VOLTEX_JWT_SECRET` when set.
    ///
    /// # Errors
    /// [`ConfigError::Env`] for an unparsable address.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(value) = get("VOLTEX_HTTP_ADDR") {
            self.http_addr = value.parse().map_err(|error| ConfigError::Env {
                name: "VOLTEX_HTTP_ADDR",
                message: format!("{error}"),
            })?;
        }
        if let Some(value) = get("VOLTEX_QUIC_ADDR") {
            self.quic_addr = value.parse().map_err(|error| ConfigError::Env {
                name: "VOLTEX_QUIC_ADDR",
                message: format!("{error}"),
            })?;
        }
        if let Some(value) = get("VOLTEX_DATA_DIR") {
            self.data_dir = PathBuf::from(value);
        }
        if let Some(value) = get("VOLTEX_DATABASE_URL") {
            self.database_url = Some(value);
        }
        if let Some(value) = get("VOLTEX_MQTT_URL") {
            self.mqtt_url = Some(value);
        }
        if let Some(value) = get("VOLTEX_MQTT_CLIENT_ID") {
            self.mqtt_client_id = value;
        }
        if let Some(value) = get("VOLTEX_JWT_SECRET") {
            self.jwt_secret = Some(value);
        }
        Ok(())
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.rate_limit_orders_per_s == 0 || self.rate_limit_burst == 0 {
            return Err(ConfigError::Invalid {
                field: "rate_limit_orders_per_s",
                message: "rate limits must be positive".into(),
            });
        }
        if self.intraday_hours_ahead == 0 || self.intraday_hours_ahead > 24 * 7 {
            return Err(ConfigError::Invalid {
                field: "intraday_hours_ahead",
                message: "must be between 1 and 168".into(),
            });
        }
        let id = &self.mqtt_client_id;
        if id.is_empty()
            || id.len() > MQTT_CLIENT_ID_LEN_MAX
            || !id
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'+' | b'#'))
        {
            return Err(ConfigError::Invalid {
                field: "mqtt_client_id",
                message: format!(
                    "{id:?}: 1 to {MQTT_CLIENT_ID_LEN_MAX} printable ASCII characters, no '/', '+' or '#'"
                ),
            });
        }
        if let Some(secret) = &self.jwt_secret
            && secret.len() < 32
        {
            return Err(ConfigError::Invalid {
                field: "jwt_secret",
                message: "must be at least 32 bytes".into(),
            });
        }
        Ok(())
    }

    /// The database URL in effect (the embedded SQLite file by default).
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("voltex.db").display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_is_an_error_naming_it() {
        let error = ServerConfig::from_toml("http_adr = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(error.contains("http_adr"), "{error}");
    }

    #[test]
    fn env_overrides_file_values() {
        let mut config = ServerConfig::from_toml("http_addr = \"127.0.0.1:9000\"\n").unwrap();
        config
            .apply_env(|name| (name == "VOLTEX_HTTP_ADDR").then(|| "127.0.0.1:9100".to_string()))
            .unwrap();
        assert_eq!(config.http_addr.port(), 9100);
    }

    #[test]
    fn bad_env_address_is_typed() {
        let mut config = ServerConfig::default();
        let error = config
            .apply_env(|name| (name == "VOLTEX_QUIC_ADDR").then(|| "nowhere".to_string()))
            .unwrap_err();
        assert!(matches!(
            error,
            ConfigError::Env {
                name: "VOLTEX_QUIC_ADDR",
                ..
            }
        ));
    }

    #[test]
    fn short_jwt_secret_is_refused() {
        let config = ServerConfig {
            jwt_secret: Some("short".into()),
            ..ServerConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid {
                field: "jwt_secret",
                ..
            })
        ));
    }

    #[test]
    fn mqtt_client_id_comes_from_env_and_bad_ones_are_refused() {
        let mut config = ServerConfig::default();
        assert!(config.validate().is_ok());
        config
            .apply_env(|name| (name == "VOLTEX_MQTT_CLIENT_ID").then(|| "voltex-eu-1".to_string()))
            .unwrap();
        assert_eq!(config.mqtt_client_id, "voltex-eu-1");
        for bad in ["", "a b", "voltex/eu", "x+", "#", "é", &"x".repeat(65)] {
            let config = ServerConfig {
                mqtt_client_id: bad.to_string(),
                ..ServerConfig::default()
            };
            assert!(
                matches!(
                    config.validate(),
                    Err(ConfigError::Invalid {
                        field: "mqtt_client_id",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        let parsed = ServerConfig::from_toml("mqtt_client_id = \"platform-7\"\n").unwrap();
        assert_eq!(parsed.mqtt_client_id, "platform-7");
    }

    #[test]
    fn default_database_is_sqlite_in_data_dir() {
        let url = ServerConfig::default().database_url();
        assert!(
            url.starts_with("sqlite://") && url.contains("voltex.db"),
            "{url}"
        );
    }
}
