//! Trace export over OpenTelemetry (OTLP/HTTP, protobuf), behind the cargo feature
//! `otlp`.
//!
//! The server's spans (one `request` span per API call, carrying its route and
//! correlation id, with the events logged inside it) go to an OpenTelemetry collector
//! when the standard environment names one:
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the full URL of the traces endpoint, used as
//!   given (e.g. `http://collector:4318/v1/traces`);
//! - otherwise `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector's base URL, to which
//!   `/v1/traces` is appended, as the OTLP specification says.
//!
//! Neither set: nothing is exported and nothing is started. Set in a binary built
//! without the feature: the binary says so at start-up and runs without export.
//!
//! # Guarantees
//! - Export never blocks a request: spans are batched on the SDK's own thread (bounded
//!   queue; when it is full, spans are dropped and the SDK counts them), and a
//!   collector that is down costs failed exports, not latency.
//! - `OtlpExport::shutdown` flushes what is queued; the binary calls it after the
//!   command returns, so a server stopped by SIGINT or SIGTERM exports its last spans.

/// Environment variable with the full URL of the OTLP traces endpoint.
pub const TRACES_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// Environment variable with the collector's base URL (`/v1/traces` is appended).
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The traces endpoint named by the environment, if any (see the module doc).
pub fn traces_endpoint_from_env() -> Option<String> {
    traces_endpoint(
        std::env::var(TRACES_ENDPOINT_ENV).ok().as_deref(),
        std::env::var(ENDPOINT_ENV).ok().as_deref(),
    )
}

/// The traces endpoint from the two variables' values: the signal-specific one as given,
/// else the base one with `/v1/traces` appended; empty values count as unset.
pub fn traces_endpoint(traces: Option<&str>, base: Option<&str>) -> Option<String> {
    fn set(value: Option<&str>) -> Option<&str> {
        value.map(str::trim).filter(|v| !v.is_empty())
    }
    if let Some(traces) = set(traces) {
        return Some(traces.to_string());
    }
    set(base).map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
}

#[cfg(feature = "otlp")]
pub use export::{OtlpError, OtlpExport};

#[cfg(feature = "otlp")]
mod export {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::{Layer, Registry};

    /// Why trace export could not start or finish.
    #[derive(Debug, thiserror::Error)]
    pub enum OtlpError {
        /// The exporter could not be built (e.g. an unusable endpoint URL).
        #[error("OTLP exporter for {endpoint}: {reason}")]
        Exporter {
            /// The traces endpoint.
            endpoint: String,
            /// The exporter's error.
            reason: String,
        },
        /// Flushing or shutting down the exporter failed.
        #[error("OTLP shutdown: {0}")]
        Shutdown(String),
    }

    /// The running export: keep it for the process's life, then [`OtlpExport::shutdown`].
    #[derive(Debug)]
    pub struct OtlpExport {
        provider: SdkTracerProvider,
    }

    impl OtlpExport {
        /// Starts batch export to `traces_endpoint` (a full URL) and returns the layer
        /// that feeds it, for the binary's subscriber. `service_name` becomes the
        /// resource's `service.name`.
        ///
        /// # Errors
        /// [`OtlpError::Exporter`] if the exporter cannot be built.
        pub fn start(
            traces_endpoint: &str,
            service_name: &'static str,
        ) -> Result<(Box<dyn Layer<Registry> + Send + Sync>, OtlpExport), OtlpError> {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(traces_endpoint)
                .build()
                .map_err(|e| OtlpError::Exporter {
                    endpoint: traces_endpoint.to_string(),
                    reason: e.to_string(),
                })?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name(service_name).build())
                .build();
            let tracer = provider.tracer(service_name);
            let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
            Ok((layer, OtlpExport { provider }))
        }

        /// Exports what is queued and stops the exporter.
        ///
        /// # Errors
        /// [`OtlpError::Shutdown`] if the last export failed (e.g. the collector is down).
        pub fn shutdown(self) -> Result<(), OtlpError> {
            self.provider
                .shutdown()
                .map_err(|e| OtlpError::Shutdown(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::traces_endpoint;

    #[test]
    fn the_signal_endpoint_wins_and_the_base_gets_the_traces_path() {
        assert_eq!(
            traces_endpoint(Some("http://c:4318/custom"), Some("http://other:4318")),
            Some("http://c:4318/custom".into())
        );
        assert_eq!(
            traces_endpoint(None, Some("http://c:4318/")),
            Some("http://c:4318/v1/traces".into())
        );
        assert_eq!(
            traces_endpoint(Some("  "), Some("http://c:4318")),
            Some("http://c:4318/v1/traces".into())
        );
        assert_eq!(traces_endpoint(None, Some("")), None);
        assert_eq!(traces_endpoint(None, None), None);
    }
}
