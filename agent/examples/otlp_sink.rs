//! A minimal OTLP/gRPC metrics receiver for benchmarks and hardware checks: it accepts every
//! export and, on SIGTERM/SIGINT (or after `--seconds N`), prints how many requests and points
//! arrived and the last value of every series whose metric name starts with `--show PREFIX`.
//!
//! `cargo run --release -p stoker-agent --example otlp_sink -- --listen 127.0.0.1:4417 --show hw.`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};

#[derive(Default)]
struct Seen {
    requests: u64,
    points: u64,
    /// Series key (name{attrs}) → (unit, last value).
    last: BTreeMap<String, (String, f64)>,
}

#[derive(Clone)]
struct Sink {
    seen: Arc<Mutex<Seen>>,
    show: Option<String>,
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let req = request.into_inner();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.requests += 1;
        for rm in &req.resource_metrics {
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    let points = match &m.data {
                        Some(Data::Gauge(g)) => &g.data_points,
                        Some(Data::Sum(s)) => &s.data_points,
                        _ => continue,
                    };
                    seen.points += points.len() as u64;
                    let Some(prefix) = &self.show else { continue };
                    if !m.name.starts_with(prefix.as_str()) {
                        continue;
                    }
                    for p in points {
                        let attrs: Vec<String> = p
                            .attributes
                            .iter()
                            .map(|kv| {
                                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                    Some(any_value::Value::StringValue(s)) => s.clone(),
                                    Some(any_value::Value::IntValue(i)) => i.to_string(),
                                    Some(other) => format!("{other:?}"),
                                    None => String::new(),
                                };
                                format!("{}={v}", kv.key)
                            })
                            .collect();
                        let value = match p.value {
                            Some(Value::AsDouble(v)) => v,
                            Some(Value::AsInt(v)) => v as f64,
                            None => f64::NAN,
                        };
                        let key = format!("{}{{{}}}", m.name, attrs.join(","));
                        seen.last.insert(key, (m.unit.clone(), value));
                    }
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut listen: SocketAddr = "127.0.0.1:4417".parse()?;
    let mut show = None;
    let mut seconds = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().unwrap_or_default().parse()?,
            "--show" => show = args.next(),
            "--seconds" => seconds = Some(args.next().unwrap_or_default().parse::<u64>()?),
            other => anyhow::bail!("unknown argument {other}; see the module docs"),
        }
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = Sink { seen: seen.clone(), show };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("otlp_sink: listening on {}", listener.local_addr()?);
    let stop = async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
        let limit = tokio::time::sleep(Duration::from_secs(seconds.unwrap_or(u64::MAX / 4)));
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            () = limit => {}
        }
    };
    tonic::transport::Server::builder()
        .add_service(MetricsServiceServer::new(sink))
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), stop)
        .await?;
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    println!("requests {} points {}", seen.requests, seen.points);
    for (key, (unit, value)) in &seen.last {
        println!("{key} {value} {unit}");
    }
    Ok(())
}
