//! Synthetic configuration files: every key parsed, every mistake named with its key and line.

use super::*;

const FULL: &str = r#"apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: weft
  namespace: default
spec:
  tracing:
    samplingRate: "1"
  workflow:
    maxConcurrentWorkflowInvocations: 2
    maxConcurrentActivityInvocations: 3
    globalMaxConcurrentWorkflowInvocations: 20
    globalMaxConcurrentActivityInvocations: 40
    workflowConcurrencyLimits:
      - name: nightly
        maxConcurrent: 1
    activityConcurrencyLimits:
      - name: charge
        maxConcurrent: 1
      - name: email
        maxConcurrent: 5
    stateRetentionPolicy:
      anyTerminal: 24h
      completed: 2s
      failed: 1h30m
"#;

fn err(text: &str) -> String {
    parse(text, "c.yaml").unwrap_err().to_string()
}

fn wrap(workflow: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec:\n  workflow:\n{}",
        workflow
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    )
}

#[test]
fn parses_every_key() {
    let p = parse(FULL, "c.yaml").unwrap();
    let w = &p.workflow;
    assert_eq!(w.max_concurrent_workflow_invocations, Some(2));
    assert_eq!(w.max_concurrent_activity_invocations, Some(3));
    assert_eq!(w.global_max_concurrent_workflow_invocations, Some(20));
    assert_eq!(w.global_max_concurrent_activity_invocations, Some(40));
    assert_eq!(
        w.workflow_concurrency_limits,
        vec![NameLimit {
            name: "nightly".into(),
            max_concurrent: 1
        }]
    );
    assert_eq!(w.activity_concurrency_limits.len(), 2);
    assert_eq!(w.activity_concurrency_limits[1].max_concurrent, 5);
    let r = w.state_retention_policy;
    assert_eq!(r.any_terminal, Some(Duration::from_secs(86400)));
    assert_eq!(r.completed, Some(Duration::from_secs(2)));
    assert_eq!(r.failed, Some(Duration::from_secs(5400)));
    assert_eq!(r.terminated, None);
    assert!(p.ignored_sections.is_empty());
    let t = p.tracing.unwrap();
    assert_eq!(t.sampling_rate, Some(SamplingRate::ALWAYS));
    assert_eq!(t.otel, None);
}

#[test]
fn unset_means_unlimited() {
    let p = parse(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec: {}\n",
        "c.yaml",
    )
    .unwrap();
    assert_eq!(p.workflow, WorkflowConfig::default());
    let p = parse(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\n",
        "c.yaml",
    )
    .unwrap();
    assert!(p.workflow.state_retention_policy.is_empty());
}

#[test]
fn unknown_workflow_key_is_named_with_its_line() {
    let e = err(&wrap(
        "maxConcurrentActivityInvocations: 3\nmaxConcurrentActivites: 3",
    ));
    assert!(e.contains("maxConcurrentActivites"), "{e}");
    assert!(e.contains("line 6"), "{e}");
    assert!(e.starts_with("c.yaml: "), "{e}");
}

#[test]
fn unknown_spec_and_top_level_keys_are_refused() {
    let e = err("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec:\n  workflows: {}\n");
    assert!(e.contains("workflows") && e.contains("line 4"), "{e}");
    let e = err("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspecs: {}\n");
    assert!(e.contains("specs") && e.contains("line 3"), "{e}");
}

#[test]
fn negative_and_zero_limits_are_refused() {
    let e = err(&wrap("maxConcurrentWorkflowInvocations: -1"));
    assert!(e.contains("maxConcurrentWorkflowInvocations"), "{e}");
    assert!(e.contains("at least 1") && e.contains("line 5"), "{e}");
    let e = err(&wrap("globalMaxConcurrentActivityInvocations: 0"));
    assert!(e.contains("globalMaxConcurrentActivityInvocations"), "{e}");
    let e = err(&wrap("maxConcurrentActivityInvocations: lots"));
    assert!(e.contains("maxConcurrentActivityInvocations"), "{e}");
    let e = err(&wrap(
        "activityConcurrencyLimits:\n  - name: charge\n    maxConcurrent: -2",
    ));
    assert!(
        e.contains("activityConcurrencyLimits") && e.contains("maxConcurrent"),
        "{e}"
    );
    assert!(e.contains("line 7"), "{e}");
}

#[test]
fn the_line_is_the_offending_key_not_its_mapping() {
    let e = err(&wrap(
        "maxConcurrentActivityInvocations: 3\nmaxConcurrentWorkflowInvocations: -1",
    ));
    assert!(e.contains("line 6"), "{e}");
    let e = err(&wrap(
        "stateRetentionPolicy:\n  completed: 2s\n  failed: soon",
    ));
    assert!(e.contains("failed") && e.contains("line 7"), "{e}");
}

#[test]
fn bad_name_limits_are_refused() {
    let e = err(&wrap(
        "activityConcurrencyLimits:\n  - name: a\n    maxConcurrent: 1\n  - name: a\n    maxConcurrent: 2",
    ));
    assert!(e.contains("listed twice"), "{e}");
    let e = err(&wrap("workflowConcurrencyLimits:\n  - name: a"));
    assert!(e.contains("maxConcurrent"), "{e}");
    let e = err(&wrap(
        "workflowConcurrencyLimits:\n  - name: a\n    maxConcurrent: 1\n    weight: 2",
    ));
    assert!(e.contains("weight"), "{e}");
}

#[test]
fn wrong_kind_or_version_is_refused() {
    let e = err("apiVersion: dapr.io/v1alpha1\nkind: Component\nspec: {}\n");
    assert!(
        e.contains("kind") && e.contains("Component") && e.contains("line 2"),
        "{e}"
    );
    let e = err("apiVersion: v1\nkind: Configuration\n");
    assert!(e.contains("apiVersion") && e.contains("line 1"), "{e}");
    let e = err("kind: Configuration\n");
    assert!(e.contains("apiVersion"), "{e}");
    let e = err("");
    assert!(e.contains("empty"), "{e}");
    let e = err("- just\n- a list\n");
    assert!(e.starts_with("c.yaml: "), "{e}");
}

#[test]
fn bad_durations_are_refused() {
    let e = err(&wrap("stateRetentionPolicy:\n  completed: 2 days"));
    assert!(e.contains("stateRetentionPolicy: completed"), "{e}");
    assert!(e.contains("line 6"), "{e}");
    let e = err(&wrap("stateRetentionPolicy:\n  failed: -1h"));
    assert!(e.contains("negative"), "{e}");
    let e = err(&wrap("stateRetentionPolicy:\n  done: 1h"));
    assert!(e.contains("done"), "{e}");
}

#[test]
fn limits_from_flags() {
    assert_eq!(parse_limit("3"), Ok(3));
    assert!(parse_limit("-3").is_err());
    assert!(parse_limit("0").is_err());
    assert!(parse_limit("x").is_err());
}

fn tracing_yaml(body: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec:\n  tracing:\n{}",
        body.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    )
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn tracing_section_resolves_to_an_exporter() {
    let p = parse(
        &tracing_yaml(
            "samplingRate: \"0.5\"\notel:\n  endpointAddress: collector:4317\n  isSecure: false\n  protocol: grpc\nzipkin:\n  endpointAddress: http://z\n",
        ),
        "c.yaml",
    )
    .unwrap();
    assert_eq!(p.ignored_sections, vec!["tracing.zipkin".to_string()]);
    let s = resolve_tracing(p.tracing.as_ref(), no_env, "app")
        .unwrap()
        .unwrap();
    assert_eq!(s.endpoint, "http://collector:4317");
    assert_eq!(s.protocol, OtlpProtocol::Grpc);
    assert_eq!(s.sampling_rate.get(), 0.5);
    assert_eq!(s.service_name, "app");

    let http = parse(
        &tracing_yaml("otel:\n  endpointAddress: c:4318\n  isSecure: true\n  protocol: http\n"),
        "c.yaml",
    )
    .unwrap();
    let s = resolve_tracing(http.tracing.as_ref(), no_env, "app")
        .unwrap()
        .unwrap();
    assert_eq!(s.endpoint, "https://c:4318/v1/traces");
    assert_eq!(s.protocol, OtlpProtocol::Http);
    assert_eq!(s.sampling_rate, SamplingRate::ALWAYS);
}

#[test]
fn tracing_is_off_without_an_endpoint_or_at_rate_zero() {
    assert_eq!(resolve_tracing(None, no_env, "app").unwrap(), None);
    let p = parse(
        &tracing_yaml("samplingRate: \"0\"\notel:\n  endpointAddress: c:4317\n"),
        "c.yaml",
    )
    .unwrap();
    assert_eq!(
        resolve_tracing(p.tracing.as_ref(), no_env, "app").unwrap(),
        None
    );
}

#[test]
fn otel_variables_override_the_file() {
    let p = parse(
        &tracing_yaml("samplingRate: \"1\"\notel:\n  endpointAddress: c:4317\n"),
        "c.yaml",
    )
    .unwrap();
    let env = |k: &str| match k {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://other:4318/".to_string()),
        "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".to_string()),
        "OTEL_TRACES_SAMPLER_ARG" => Some("0.25".to_string()),
        "OTEL_SERVICE_NAME" => Some("svc".to_string()),
        _ => None,
    };
    let s = resolve_tracing(p.tracing.as_ref(), env, "app")
        .unwrap()
        .unwrap();
    assert_eq!(s.endpoint, "http://other:4318/v1/traces");
    assert_eq!(s.protocol, OtlpProtocol::Http);
    assert_eq!(s.sampling_rate.get(), 0.25);
    assert_eq!(s.service_name, "svc");
    let bad = |k: &str| (k == "OTEL_TRACES_SAMPLER_ARG").then(|| "2".to_string());
    let e = resolve_tracing(p.tracing.as_ref(), bad, "app").unwrap_err();
    assert!(
        e.starts_with("OTEL_TRACES_SAMPLER_ARG: 2 is out of range"),
        "{e}"
    );
}

#[test]
fn bad_tracing_values_name_their_key_and_line() {
    let e = err(&tracing_yaml("samplingRate: \"lots\"\n"));
    assert!(
        e.contains("samplingRate: 'lots' is not a number") && e.contains("line 5"),
        "{e}"
    );
    let e = err(&tracing_yaml("samplingRate: \"1.5\"\n"));
    assert!(e.contains("samplingRate: 1.5 is out of range"), "{e}");
    let e = err(&tracing_yaml(
        "otel:\n  endpointAddress: c:4317\n  protocol: udp\n",
    ));
    assert!(
        e.contains("protocol: 'udp' is not supported") && e.contains("line 7"),
        "{e}"
    );
    let e = err(&tracing_yaml("otel:\n  isSecure: maybe\n"));
    assert!(e.contains("isSecure: 'maybe' is not true or false"), "{e}");
    let e = err(&tracing_yaml("otel:\n  endpoint: c:4317\n"));
    assert!(e.contains("endpoint"), "{e}");
}

#[test]
fn a_file_may_carry_access_policies_beside_the_configuration() {
    let text = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec:\n  workflow:\n    maxConcurrentActivityInvocations: 3\n---\napiVersion: dapr.io/v1alpha1\nkind: WorkflowAccessPolicy\nscopes: [appb]\nspec:\n  rules:\n    - callers: [{appID: appa}]\n      activities: [{name: bill}]\n";
    let p = parse(text, "cfg.yaml").unwrap();
    assert_eq!(p.workflow.max_concurrent_activity_invocations, Some(3));
    assert_eq!(p.access.len(), 1);
    assert!(p.access.allows(
        "appb",
        "appa",
        crate::Operation::Schedule,
        crate::Target::Activity("bill")
    ));
    // A policy-only file, and an error in the second document naming where it starts.
    let only = parse(
        &text[text
            .find("apiVersion: dapr.io/v1alpha1\nkind: Workflow")
            .unwrap()..],
        "p.yaml",
    )
    .unwrap();
    assert_eq!(only.access.len(), 1);
    let bad = text.replace("appID: appa", "app: appa");
    let e = parse(&bad, "cfg.yaml").unwrap_err().0;
    assert!(e.starts_with("cfg.yaml (document at line 7): "), "{e}");
}
