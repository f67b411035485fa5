//! Dapr's `WorkflowAccessPolicy` (1.18): which caller apps may schedule (and manage) which
//! workflows and activities of a target app. Parsed from YAML and evaluated without I/O.

use crate::ConfigError;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// The error type of a task or start an access policy denied (in the caller's history).
pub const DENIED_ERROR_TYPE: &str = "PermissionDenied";

/// An operation a caller performs on a target app's workflow or activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Schedule,
    Terminate,
    Raise,
    Pause,
    Resume,
    Purge,
    Get,
    Rerun,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Schedule => "schedule",
            Operation::Terminate => "terminate",
            Operation::Raise => "raise",
            Operation::Pause => "pause",
            Operation::Resume => "resume",
            Operation::Purge => "purge",
            Operation::Get => "get",
            Operation::Rerun => "rerun",
        }
    }
}

/// What a call names on the target app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Workflow(&'a str),
    Activity(&'a str),
}

impl Target<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Workflow(_) => "workflow",
            Target::Activity(_) => "activity",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Target::Workflow(n) | Target::Activity(n) => n,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Caller {
    #[serde(rename = "appID")]
    app_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowRule {
    name: String,
    operations: Vec<Operation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivityRule {
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    callers: Vec<Caller>,
    #[serde(default)]
    workflows: Vec<WorkflowRule>,
    #[serde(default)]
    activities: Vec<ActivityRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    #[serde(default)]
    rules: Vec<Rule>,
}

/// One `kind: WorkflowAccessPolicy` document.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyFile {
    api_version: String,
    kind: String,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<IgnoredAny>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    spec: PolicySpec,
}

/// One loaded policy: the target apps it covers (`scopes`; empty: every app) and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    scopes: Vec<String>,
    rules: Vec<Rule>,
}

impl AccessPolicy {
    fn covers(&self, target_app: &str) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|s| s == target_app)
    }
}

/// Every loaded policy. With none covering a target app, every call to it is allowed (Dapr's
/// "open by default"); with one, a cross-app call is allowed only if some rule of some
/// covering policy names the caller and matches the operation and the name. A self-call (caller
/// = target) is always allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicies {
    policies: Vec<AccessPolicy>,
}

impl AccessPolicies {
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether any policy covers `target_app` (only then is a caller's identity needed).
    pub fn governs(&self, target_app: &str) -> bool {
        self.policies.iter().any(|p| p.covers(target_app))
    }

    pub fn allows(&self, target_app: &str, caller_app: &str, op: Operation, t: Target) -> bool {
        if caller_app == target_app || !self.governs(target_app) {
            return true;
        }
        self.policies
            .iter()
            .filter(|p| p.covers(target_app))
            .flat_map(|p| &p.rules)
            .filter(|r| r.callers.iter().any(|c| c.app_id == caller_app))
            .any(|r| match t {
                Target::Workflow(name) => r
                    .workflows
                    .iter()
                    .any(|w| w.operations.contains(&op) && glob(&w.name, name)),
                Target::Activity(name) => {
                    op == Operation::Schedule && r.activities.iter().any(|a| glob(&a.name, name))
                }
            })
    }

    /// The error a denied call reports (in the caller's history for scheduled work).
    pub fn denial(target_app: &str, caller_app: &str, op: Operation, t: Target) -> String {
        format!(
            "access denied by workflow access policy: app '{caller_app}' may not {} {} '{}' on app '{target_app}'",
            op.as_str(),
            t.kind(),
            t.name()
        )
    }
}

/// Parses one `kind: WorkflowAccessPolicy` document (`source` prefixes errors).
pub(crate) fn parse_policy(text: &str, source: &str) -> Result<AccessPolicy, ConfigError> {
    let f: PolicyFile =
        serde_norway::from_str(text).map_err(|e| ConfigError(format!("{source}: {e}")))?;
    if f.api_version != "dapr.io/v1alpha1" {
        return Err(ConfigError(format!(
            "{source}: apiVersion must be dapr.io/v1alpha1, found '{}'",
            f.api_version
        )));
    }
    debug_assert_eq!(f.kind, "WorkflowAccessPolicy");
    for (i, r) in f.spec.rules.iter().enumerate() {
        if r.callers.is_empty() || r.callers.iter().any(|c| c.app_id.trim().is_empty()) {
            return Err(ConfigError(format!(
                "{source}: spec.rules[{i}].callers must name at least one caller, each with an appID"
            )));
        }
        if r.workflows.iter().any(|w| w.operations.is_empty()) {
            return Err(ConfigError(format!(
                "{source}: spec.rules[{i}].workflows[].operations must list at least one operation (e.g. [schedule])"
            )));
        }
    }
    Ok(AccessPolicy {
        scopes: f.scopes,
        rules: f.spec.rules,
    })
}

impl AccessPolicies {
    pub(crate) fn push(&mut self, p: AccessPolicy) {
        self.policies.push(p);
    }
}

/// Glob match as Dapr's policies use it: `*` any run, `?` one character, `[abc]` / `[a-z]` one
/// of a set (`[!a]` / `[^a]` negated). A malformed set matches its characters literally.
pub fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with one backtrack point for the last `*` (linear in practice).
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => match class(&p, pi, n[ni]) {
                    Some((true, next)) => {
                        pi = next;
                        ni += 1;
                        continue;
                    }
                    None if n[ni] == '[' => {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                    _ => {}
                },
                c if c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Matches `c` against the set starting at `p[at] == '['`: `(matched, index after ']')`, or
/// `None` if the set is not closed.
fn class(p: &[char], at: usize, c: char) -> Option<(bool, usize)> {
    let mut i = at + 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            hit |= (p[i]..=p[i + 2]).contains(&c);
            i += 3;
        } else {
            hit |= p[i] == c;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_dapr_documents_them() {
        for (p, n, want) in [
            ("OrderWF", "OrderWF", true),
            ("OrderWF", "OrderWF2", false),
            ("Report*", "ReportDaily", true),
            ("Report*", "Report", true),
            ("Report*", "Daily", false),
            ("*Report", "DailyReport", true),
            ("Generate*Report", "GenerateSalesReport", true),
            ("Generate*Report", "GenerateSales", false),
            ("b?ll", "bill", true),
            ("b?ll", "bll", false),
            ("[bc]ill", "cill", true),
            ("[bc]ill", "dill", false),
            ("[a-c]x", "bx", true),
            ("[!a]x", "ax", false),
            ("[!a]x", "bx", true),
            ("*", "", true),
            ("a*b*c", "aXbYbc", true),
            ("[unclosed", "[unclosed", true),
        ] {
            assert_eq!(glob(p, n), want, "{p} vs {n}");
        }
    }

    fn policies(yaml: &str) -> AccessPolicies {
        let mut all = AccessPolicies::default();
        all.push(parse_policy(yaml, "test").unwrap());
        all
    }

    const POLICY: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: WorkflowAccessPolicy
metadata:
  name: billing
scopes: [appb]
spec:
  rules:
    - callers:
        - appID: appa
      workflows:
        - name: "Ship*"
          operations: [schedule, terminate]
      activities:
        - name: bill
"#;

    #[test]
    fn a_policy_allows_only_what_a_rule_names() {
        let p = policies(POLICY);
        let s = Operation::Schedule;
        assert!(p.allows("appb", "appa", s, Target::Activity("bill")));
        assert!(!p.allows("appb", "appa", s, Target::Activity("refund")));
        assert!(!p.allows("appb", "appc", s, Target::Activity("bill")));
        assert!(p.allows("appb", "appa", s, Target::Workflow("ShipOrder")));
        assert!(p.allows(
            "appb",
            "appa",
            Operation::Terminate,
            Target::Workflow("ShipOrder")
        ));
        assert!(!p.allows(
            "appb",
            "appa",
            Operation::Purge,
            Target::Workflow("ShipOrder")
        ));
        // Self-calls, and apps no policy covers, are always allowed.
        assert!(p.allows("appb", "appb", s, Target::Activity("refund")));
        assert!(p.allows("appc", "appa", s, Target::Activity("anything")));
        assert!(AccessPolicies::default().allows("appb", "appx", s, Target::Activity("x")));
    }

    #[test]
    fn a_policy_without_rules_denies_every_cross_app_call() {
        let p = policies(
            "apiVersion: dapr.io/v1alpha1\nkind: WorkflowAccessPolicy\nmetadata: {name: x}\n",
        );
        assert!(p.governs("anyapp"));
        assert!(!p.allows(
            "anyapp",
            "other",
            Operation::Schedule,
            Target::Workflow("w")
        ));
    }

    #[test]
    fn malformed_policies_are_refused_with_the_reason() {
        for (yaml, want) in [
            (
                "apiVersion: dapr.io/v1alpha1\nkind: WorkflowAccessPolicy\nspec:\n  rules:\n    - callers: []\n",
                "must name at least one caller",
            ),
            (
                "apiVersion: dapr.io/v1alpha1\nkind: WorkflowAccessPolicy\nspec:\n  rules:\n    - callers: [{appID: a}]\n      workflows: [{name: w, operations: [launch]}]\n",
                "unknown variant",
            ),
            (
                "apiVersion: dapr.io/v1alpha1\nkind: WorkflowAccessPolicy\nspec:\n  rulez: []\n",
                "unknown field",
            ),
        ] {
            let e = parse_policy(yaml, "f.yaml").unwrap_err().0;
            assert!(e.contains(want), "{e}");
            assert!(e.starts_with("f.yaml: "), "{e}");
        }
    }
}
