//! The node's identity as OTLP resource attributes: `service.name`, `host.name`, `host.id`,
//! configured labels and `cloud.*`. Every batch the agent sends carries them.

use opentelemetry_proto::tonic::common::v1::KeyValue;

use crate::config::NodeConfig;
use crate::sample::otlp::kv_str;

/// Build the node's resource attributes from the configuration and the machine.
pub fn node_resource(node: &NodeConfig) -> Vec<KeyValue> {
    let host_name = node
        .host_name
        .clone()
        .or_else(|| sysinfo::System::host_name().ok())
        .unwrap_or_else(|| "unknown".into());
    let host_id = node.host_id.clone().or_else(machine_id);
    let mut attrs = vec![
        kv_str("service.name", "stoker-agent"),
        kv_str("service.version", env!("CARGO_PKG_VERSION")),
        kv_str("host.name", &host_name),
    ];
    if let Some(id) = host_id {
        attrs.push(kv_str("host.id", &id));
    }
    let cloud = &node.cloud;
    for (key, value) in [
        ("cloud.provider", &cloud.provider),
        ("cloud.platform", &cloud.platform),
        ("cloud.region", &cloud.region),
        ("cloud.availability_zone", &cloud.availability_zone),
        ("cloud.account.id", &cloud.account_id),
        ("cloud.resource_id", &cloud.resource_id),
    ] {
        if let Some(value) = value {
            attrs.push(kv_str(key, value));
        }
    }
    for (key, value) in &node.labels {
        attrs.push(kv_str(key, value));
    }
    attrs
}

/// The systemd/D-Bus machine id, the `host.id` OpenTelemetry recommends on Linux.
fn machine_id() -> Option<String> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CloudConfig;
    use crate::sample::otlp::attr_str;

    #[test]
    fn configured_identity_labels_and_cloud_are_attached() {
        let node = NodeConfig {
            host_name: Some("n1".into()),
            host_id: Some("id-1".into()),
            labels: [("pool".to_string(), "a100".to_string())].into(),
            cloud: CloudConfig {
                provider: Some("aws".into()),
                region: Some("eu-west-1".into()),
                ..Default::default()
            },
        };
        let attrs = node_resource(&node);
        assert_eq!(attr_str(&attrs, "service.name"), Some("stoker-agent"));
        assert_eq!(attr_str(&attrs, "host.name"), Some("n1"));
        assert_eq!(attr_str(&attrs, "host.id"), Some("id-1"));
        assert_eq!(attr_str(&attrs, "pool"), Some("a100"));
        assert_eq!(attr_str(&attrs, "cloud.provider"), Some("aws"));
        assert_eq!(attr_str(&attrs, "cloud.region"), Some("eu-west-1"));
        assert_eq!(attr_str(&attrs, "cloud.availability_zone"), None);
    }
}
