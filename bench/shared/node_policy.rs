//! The per-node policy the policy benchmarks evaluate (`policy-bench` and `cluster-bench`), so
//! both time the same rules: p95 latency and mean GPU busy as targets, a saturated-GPU step and
//! a panic window, each reading one node's series.

/// Node `n`'s policy as YAML; `interval` (e.g. `1s`) when the policy's default will not do.
pub fn node_policy_yaml(n: usize, interval: Option<&str>) -> String {
    let interval = interval.map(|i| format!("  interval: {i}\n")).unwrap_or_default();
    format!(
        r#"apiVersion: stoker/v1
kind: Policy
metadata: {{name: node-{n}}}
spec:
  target: {{name: pool-{n}, min: 1, max: 64, actuator: kubernetes, kubernetes: {{namespace: infer, deployment: pool-{n}}}}}
{interval}  scale:
    metrics:
      - name: p95-latency
        signal: {{metric: inference.request.duration, stat: p95, window: 30s, where: {{host.name: node-{n}}}}}
        target: {{value: 0.100}}
      - name: gpu-busy
        signal: {{metric: hw.gpu.utilization, stat: mean, window: 60s, where: {{host.name: node-{n}}}}}
        target: {{value: 0.60}}
    steps:
      - name: gpu-saturated
        when: {{signal: {{metric: hw.gpu.utilization, stat: min, window: 30s, where: {{host.name: node-{n}}}, gte: 0.95}}}}
        for: 30s
        change: {{pods: 2}}
    panic: {{window: 10s, threshold: 2.0}}
"#
    )
}
