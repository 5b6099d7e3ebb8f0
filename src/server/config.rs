//! Server configuration: a TOML file, then `VOLTEX_*` environment overrides, then
//! command-line flags (applied by the binary).
//!
//! Every field has an embedded default, so `voltex serve` with no file runs on SQLite
//! in `./voltex-data/` and an in-process MQTT broker. Unknown TOML fields are an error
//! naming the field, so a typo never silently falls back to a default.
//!
//! The market's rules come from two optional tables, `[intraday_rules]` (the
//! continuous books) and `[day_ahead_rules]` (the call auction); each field left out
//! keeps its default ([`MarketRules::intraday_default`],
//! [`MarketRules::day_ahead_default`]). Prices and quantities are decimal strings, as
//! in the API, converted exactly: an off-grid or inconsistent value is refused with the
//! field's name, never rounded. The rules apply to products listed after a restart;
//! each listed product keeps the rules it was listed with (they are in the journal).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;
use voltex_market::{MarketRules, Price, Qty};

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

/// Overrides of one market's rules (a TOML table); a field left out keeps the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketRulesOverrides {
    /// Price tick, EUR/MWh (e.g. `"0.01"`).
    pub tick_eur_per_mwh: Option<String>,
    /// Lowest limit price, EUR/MWh.
    pub price_min_eur_per_mwh: Option<String>,
    /// Highest limit price, EUR/MWh.
    pub price_max_eur_per_mwh: Option<String>,
    /// Lot size, MW (e.g. `"0.1"`); a whole number of kW.
    pub lot_mw: Option<String>,
    /// Largest quantity of one order (of one curve, in the auction), MW; a whole
    /// number of lots.
    pub qty_max_mw: Option<String>,
    /// Trading (curve submission, in the auction) closes this many seconds before
    /// delivery starts.
    pub gate_closure_lead_s: Option<i64>,
}

impl MarketRulesOverrides {
    /// `base` with these overrides applied, checked ([`MarketRules::validate`]).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `table.field` for a value that is not an exact
    /// decimal in its unit, and `table` for rules that are inconsistent as a whole.
    pub fn apply(
        &self,
        table: &'static str,
        base: MarketRules,
    ) -> Result<MarketRules, ConfigError> {
        let invalid = |field: &'static str, message: String| ConfigError::Invalid {
            field,
            message: format!("[{table}] {field}: {message}"),
        };
        let decimal = |field: &'static str, text: &str| {
            Decimal::from_str(text.trim())
                .map_err(|error| invalid(field, format!("{text:?} is not a decimal ({error})")))
        };
        let price = |field: &'static str, text: &str| {
            Price::from_decimal(decimal(field, text)?)
                .map_err(|error| invalid(field, error.to_string()))
        };
        let mut rules = base;
        if let Some(text) = &self.tick_eur_per_mwh {
            rules.tick = price("tick_eur_per_mwh", text)?;
        }
        if let Some(text) = &self.price_min_eur_per_mwh {
            rules.price_min = price("price_min_eur_per_mwh", text)?;
        }
        if let Some(text) = &self.price_max_eur_per_mwh {
            rules.price_max = price("price_max_eur_per_mwh", text)?;
        }
        if let Some(text) = &self.lot_mw {
            let kw = decimal("lot_mw", text)?
                .checked_mul(Decimal::from(1000))
                .filter(|kw| kw.fract().is_zero())
                .and_then(|kw| i64::try_from(kw).ok())
                .ok_or_else(|| {
                    invalid("lot_mw", format!("{text} MW is not a whole number of kW"))
                })?;
            rules.lot_kw = kw;
        }
        if let Some(text) = &self.qty_max_mw {
            let mw = decimal("qty_max_mw", text)?;
            // Lots of the (possibly overridden) lot size; the cap itself is what is set.
            let unbounded = MarketRules {
                qty_max: Qty(i64::MAX),
                ..rules.clone()
            };
            rules.qty_max = unbounded
                .qty_from_mw(mw)
                .map_err(|error| invalid("qty_max_mw", error.to_string()))?;
        }
        if let Some(lead_s) = self.gate_closure_lead_s {
            rules.gate_closure_lead_s = lead_s;
        }
        rules.validate().map_err(|error| ConfigError::Invalid {
            field: table,
            message: error.to_string(),
        })?;
        Ok(rules)
    }
}

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
    /// Rules of the continuous intraday books (`[intraday_rules]`).
    pub intraday_rules: MarketRulesOverrides,
    /// Rules of the day-ahead call auction (`[day_ahead_rules]`). Tick and lot must
    /// equal the intraday ones: positions add awards and trades in the same units.
    pub day_ahead_rules: MarketRulesOverrides,
    /// One daily day-ahead gate, `"HH:MM"` UTC on the day before delivery, for every
    /// hour of the (UTC) delivery day, as the day-ahead markets hold it (EPEX: 12:00
    /// CET): one block family can then span the day. `None` (the default): each hour's
    /// auction closes `[day_ahead_rules] gate_closure_lead_s` before it. Hours listed
    /// after their gate hold no auction, so list two days ahead
    /// (`intraday_hours_ahead = 48`).
    pub day_ahead_gate_utc: Option<String>,
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
            intraday_rules: MarketRulesOverrides::default(),
            day_ahead_rules: MarketRulesOverrides::default(),
            day_ahead_gate_utc: None,
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
        self.day_ahead_market_rules()?;
        self.day_ahead_gate_s()?;
        Ok(())
    }

    /// The daily day-ahead gate in seconds after 00:00 UTC (`None`: none configured).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `day_ahead_gate_utc` unless it is `"HH:MM"` with
    /// `HH` in 00..=23 and `MM` in 00..=59.
    pub fn day_ahead_gate_s(&self) -> Result<Option<i64>, ConfigError> {
        let Some(text) = &self.day_ahead_gate_utc else {
            return Ok(None);
        };
        let invalid = || ConfigError::Invalid {
            field: "day_ahead_gate_utc",
            message: format!("{text:?} is not a UTC time of day \"HH:MM\""),
        };
        let (hours, minutes) = text.trim().split_once(':').ok_or_else(invalid)?;
        let two_digits = |field: &str, max: i64| {
            (field.len() == 2 && field.bytes().all(|b| b.is_ascii_digit()))
                .then(|| field.parse::<i64>().ok())
                .flatten()
                .filter(|value| *value <= max)
        };
        let hours = two_digits(hours, 23).ok_or_else(invalid)?;
        let minutes = two_digits(minutes, 59).ok_or_else(invalid)?;
        Ok(Some(hours * 3600 + minutes * 60))
    }

    /// The intraday books' rules in effect.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn intraday_market_rules(&self) -> Result<MarketRules, ConfigError> {
        self.intraday_rules
            .apply("intraday_rules", MarketRules::intraday_default())
    }

    /// The day-ahead auction's rules in effect.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field, or `day_ahead_rules` when its tick or
    /// lot differs from the intraday one.
    pub fn day_ahead_market_rules(&self) -> Result<MarketRules, ConfigError> {
        let intraday = self.intraday_market_rules()?;
        let day_ahead = self
            .day_ahead_rules
            .apply("day_ahead_rules", MarketRules::day_ahead_default())?;
        if (intraday.tick, intraday.lot_kw) != (day_ahead.tick, day_ahead.lot_kw) {
            return Err(ConfigError::Invalid {
                field: "day_ahead_rules",
                message: format!(
                    "tick and lot must equal the intraday ones (positions add awards and \
                     trades): day-ahead tick {} EUR/MWh, lot {} kW; intraday tick {} EUR/MWh, \
                     lot {} kW",
                    day_ahead.tick.to_decimal(),
                    day_ahead.lot_kw,
                    intraday.tick.to_decimal(),
                    intraday.lot_kw
                ),
            });
        }
        Ok(day_ahead)
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
    fn market_rules_tables_override_the_defaults_exactly() {
        let config = ServerConfig::from_toml(
            "[intraday_rules]\n\
             qty_max_mw = \"50\"\n\
             gate_closure_lead_s = 600\n\
             [day_ahead_rules]\n\
             price_min_eur_per_mwh = \"-150\"\n\
             price_max_eur_per_mwh = \"3000.5\"\n\
             gate_closure_lead_s = 3600\n",
        )
        .unwrap();
        config.validate().unwrap();
        let intraday = config.intraday_market_rules().unwrap();
        assert_eq!(
            intraday,
            MarketRules {
                qty_max: Qty(500),
                gate_closure_lead_s: 600,
                ..MarketRules::intraday_default()
            }
        );
        let day_ahead = config.day_ahead_market_rules().unwrap();
        assert_eq!(
            day_ahead,
            MarketRules {
                price_min: Price(-15_000),
                price_max: Price(300_050),
                gate_closure_lead_s: 3600,
                ..MarketRules::day_ahead_default()
            }
        );
        let defaults = ServerConfig::default();
        assert_eq!(
            defaults.day_ahead_market_rules().unwrap(),
            MarketRules::day_ahead_default()
        );
    }

    #[test]
    fn the_example_config_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/voltex.example.toml");
        let example = ServerConfig::from_file(&path).unwrap();
        example.validate().unwrap();
        let defaults = ServerConfig::default();
        assert_eq!(
            example.intraday_market_rules().unwrap(),
            defaults.intraday_market_rules().unwrap()
        );
        assert_eq!(
            example.day_ahead_market_rules().unwrap(),
            defaults.day_ahead_market_rules().unwrap()
        );
        assert_eq!(
            (
                example.http_addr,
                example.rate_limit_burst,
                example.intraday_hours_ahead
            ),
            (
                defaults.http_addr,
                defaults.rate_limit_burst,
                defaults.intraday_hours_ahead
            )
        );
    }

    #[test]
    fn bad_market_rules_are_refused_naming_the_field() {
        let cases = [
            // (TOML, field named in the error)
            (
                "[day_ahead_rules]\ntick_eur_per_mwh = \"0.001\"\n",
                "tick_eur_per_mwh",
            ),
            (
                "[day_ahead_rules]\nprice_max_eur_per_mwh = \"lots\"\n",
                "price_max_eur_per_mwh",
            ),
            ("[intraday_rules]\nlot_mw = \"0.0005\"\n", "lot_mw"),
            ("[intraday_rules]\nqty_max_mw = \"0.25\"\n", "qty_max_mw"),
            ("[intraday_rules]\nqty_max_mw = \"-1\"\n", "qty_max_mw"),
            // Limits off the tick grid, inverted limits, negative lead: the table.
            (
                "[day_ahead_rules]\nprice_max_eur_per_mwh = \"3000.05\"\ntick_eur_per_mwh = \"0.1\"\n",
                "day_ahead_rules",
            ),
            (
                "[day_ahead_rules]\nprice_min_eur_per_mwh = \"5000\"\n",
                "day_ahead_rules",
            ),
            (
                "[intraday_rules]\ngate_closure_lead_s = -1\n",
                "intraday_rules",
            ),
            // Tick or lot that differ between the markets.
            ("[day_ahead_rules]\nlot_mw = \"1\"\n", "day_ahead_rules"),
            (
                "[intraday_rules]\ntick_eur_per_mwh = \"0.03\"\n",
                "day_ahead_rules",
            ),
        ];
        for (text, field) in cases {
            let config = ServerConfig::from_toml(text).unwrap();
            match config.validate() {
                Err(ConfigError::Invalid {
                    field: named,
                    message,
                }) => {
                    assert!(
                        named == field || message.contains(field),
                        "{text:?}: named {named}, {message}"
                    );
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let error = ServerConfig::from_toml("[day_ahead_rules]\nprice_cap = \"1\"\n").unwrap_err();
        assert!(error.contains("price_cap"), "{error}");
    }

    #[test]
    fn the_daily_day_ahead_gate_is_a_utc_time_of_day() {
        let gate = |text: &str| {
            ServerConfig::from_toml(&format!("day_ahead_gate_utc = {text:?}\n"))
                .unwrap()
                .day_ahead_gate_s()
                .unwrap()
        };
        assert_eq!(gate("11:00"), Some(39_600));
        assert_eq!(gate("00:00"), Some(0));
        assert_eq!(gate("23:59"), Some(86_340));
        assert_eq!(ServerConfig::default().day_ahead_gate_s().unwrap(), None);
        for bad in [
            "24:00", "11:60", "11", "1:00", "11:0", "ab:cd", "-1:00", "11:00:00", "",
        ] {
            let config =
                ServerConfig::from_toml(&format!("day_ahead_gate_utc = {bad:?}\n")).unwrap();
            assert!(
                matches!(
                    config.validate(),
                    Err(ConfigError::Invalid {
                        field: "day_ahead_gate_utc",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
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
