//! OpenTelemetry trace export of the real `voltex serve` process (cargo feature `otlp`):
//! with `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` pointing at a collector, the API's
//! `request` span of a call arrives there as OTLP/HTTP protobuf, named `request`, with
//! the call's correlation id and route as attributes and `service.name = voltex` on its
//! resource; and SIGTERM stops the server cleanly (exit status 0) after flushing the
//! spans still queued.
//!
//! The collector is a loopback HTTP endpoint in this test that keeps every body posted
//! to `/v1/traces`; bodies are decoded with the OTLP protobuf types.
//!
//! Run with `cargo test --features otlp --test otlp_export` (`.ci/run` does).
#![cfg(feature = "otlp")]

mod support;

use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use tokio::sync::mpsc;
use voltex::telemetry::TRACES_ENDPOINT_ENV;

const SECRET: &str = "otlp-test-secret-0123456789abcdef-xyz";
const CORRELATION_ID: &str = "otlp-test-correlation-4711";
/// Hang guard for waits on the process: not a performance expectation.
const GUARD: Duration = Duration::from_secs(120);

fn string_value(value: Option<&AnyValue>) -> Option<&str> {
    match value?.value.as_ref()? {
        any_value::Value::StringValue(text) => Some(text),
        _ => None,
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| string_value(kv.value.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_request_spans_over_otlp_and_flushes_them_on_sigterm() {
    // The collector.
    let (bodies_tx, mut bodies) = mpsc::unbounded_channel::<Bytes>();
    let collector = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let bodies_tx = bodies_tx.clone();
            async move {
                let _ = bodies_tx.send(body);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind collector");
    let collector_addr = listener.local_addr().expect("collector address");
    tokio::spawn(async move { axum::serve(listener, collector).await });

    // The server, exporting to it.
    let data_dir = tempfile::tempdir().expect("tempdir");
    let traces_endpoint = format!("http://{collector_addr}/v1/traces");
    let (mut child, base) = support::spawn_serve(
        data_dir.path(),
        SECRET,
        &[
            ("RUST_LOG", "info,sqlx=warn"),
            (TRACES_ENDPOINT_ENV, &traces_endpoint),
        ],
    );

    let response = reqwest::Client::new()
        .get(format!("{base}/api/v1/products"))
        .header("x-correlation-id", CORRELATION_ID)
        .send()
        .await
        .expect("GET products");
    assert_eq!(response.status().as_u16(), 200);

    // SIGTERM, as a service manager stops it: a clean exit, spans flushed first.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -TERM");
    let exit = tokio::time::timeout(GUARD, tokio::task::spawn_blocking(move || child.wait()))
        .await
        .expect("voltex serve exits after SIGTERM")
        .expect("wait task")
        .expect("wait");
    assert!(
        exit.success(),
        "a clean exit on SIGTERM, not death by signal: {exit:?}"
    );

    // Everything the process exported arrived before it exited.
    let mut n_spans = 0;
    let mut ours = Vec::new();
    while let Ok(body) = bodies.try_recv() {
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
        for resource_spans in &request.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|resource| attribute(&resource.attributes, "service.name"));
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    n_spans += 1;
                    if attribute(&span.attributes, "correlation_id") == Some(CORRELATION_ID) {
                        ours.push((
                            span.name.clone(),
                            attribute(&span.attributes, "route").map(str::to_string),
                            service.map(str::to_string),
                        ));
                    }
                }
            }
        }
    }
    assert!(n_spans > 0, "the collector received spans");
    assert_eq!(
        ours,
        vec![(
            "request".to_string(),
            Some("/api/v1/products".to_string()),
            Some("voltex".to_string())
        )],
        "one request span with our correlation id, its route and the service name"
    );
}
