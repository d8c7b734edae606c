//! Kubernetes label selectors (`matchLabels` and `matchExpressions`), as pools and
//! PodDisruptionBudgets use them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::strmap::Lookup;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// The operator of a `matchExpressions` term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOp {
    /// The label's value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One `matchExpressions` term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorRequirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: SelectorOp,
    /// Values for `In`/`NotIn`; must be empty for `Exists`/`DoesNotExist`.
    #[serde(default)]
    pub values: Vec<String>,
}

impl SelectorRequirement {
    fn matches(&self, labels: &dyn Lookup) -> bool {
        let v = labels.lookup(&self.key);
        match self.operator {
            SelectorOp::In => v.is_some_and(|v| self.values.iter().any(|x| x == v)),
            SelectorOp::NotIn => v.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            SelectorOp::Exists => v.is_some(),
            SelectorOp::DoesNotExist => v.is_none(),
        }
    }
}

/// A label selector. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    #[serde(default)]
    pub match_labels: Labels,
    /// Further requirements, all of which must hold.
    #[serde(default)]
    pub match_expressions: Vec<SelectorRequirement>,
}

impl LabelSelector {
    /// Whether the labels satisfy every term.
    pub fn matches(&self, labels: &dyn Lookup) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.lookup(k) == Some(v.as_str()))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Whether this selector requires `key` to be present (by `matchLabels`, `In` or
    /// `Exists`); used to recognise control-plane pools.
    pub fn requires_key(&self, key: &str) -> bool {
        self.match_labels.contains_key(key)
            || self
                .match_expressions
                .iter()
                .any(|r| r.key == key && matches!(r.operator, SelectorOp::In | SelectorOp::Exists))
    }

    /// Checks key and value syntax and operator/value consistency; each problem is
    /// returned with its path below `path`.
    pub fn validate(&self, path: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (k, v) in &self.match_labels {
            if let Err(e) = validate_label_key(k) {
                errors.push((format!("{path}.matchLabels"), format!("key {k:?}: {e}")));
            }
            if let Err(e) = validate_label_value(v) {
                errors.push((
                    format!("{path}.matchLabels.{k}"),
                    format!("value {v:?}: {e}"),
                ));
            }
        }
        for (i, r) in self.match_expressions.iter().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            if let Err(e) = validate_label_key(&r.key) {
                errors.push((format!("{p}.key"), format!("{:?}: {e}", r.key)));
            }
            match r.operator {
                SelectorOp::In | SelectorOp::NotIn if r.values.is_empty() => errors.push((
                    format!("{p}.values"),
                    format!("operator {:?} needs at least one value", r.operator),
                )),
                SelectorOp::Exists | SelectorOp::DoesNotExist if !r.values.is_empty() => errors
                    .push((
                        format!("{p}.values"),
                        format!("operator {:?} takes no values", r.operator),
                    )),
                _ => {}
            }
            for v in &r.values {
                if let Err(e) = validate_label_value(v) {
                    errors.push((format!("{p}.values"), format!("{v:?}: {e}")));
                }
            }
        }
        errors
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut terms: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            terms.push(match r.operator {
                SelectorOp::In => format!("{} in ({})", r.key, r.values.join(",")),
                SelectorOp::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                SelectorOp::Exists => r.key.clone(),
                SelectorOp::DoesNotExist => format!("!{}", r.key),
            });
        }
        if terms.is_empty() {
            f.write_str("<all>")
        } else {
            f.write_str(&terms.join(","))
        }
    }
}

fn is_name_segment(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Checks a label or annotation key: an optional DNS-subdomain prefix and `/`, then a
/// name of at most 63 characters.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Err(format!("prefix {p:?} is not a DNS subdomain"));
    }
    if !is_name_segment(name, 63) {
        return Err(format!(
            "name {name:?} must be 1-63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric"
        ));
    }
    Ok(())
}

/// Checks a label value: empty, or up to 63 characters of `[A-Za-z0-9-_.]` starting and
/// ending alphanumeric.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_name_segment(value, 63) {
        Ok(())
    } else {
        Err(
            "must be empty or 1-63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(LabelSelector::default().matches(&labels(&[])));
    }

    #[test]
    fn match_labels_and_expressions_all_must_hold() {
        let sel = LabelSelector {
            match_labels: labels(&[("role", "worker")]),
            match_expressions: vec![
                SelectorRequirement {
                    key: "zone".into(),
                    operator: SelectorOp::In,
                    values: vec!["a".into(), "b".into()],
                },
                SelectorRequirement {
                    key: "gpu".into(),
                    operator: SelectorOp::DoesNotExist,
                    values: vec![],
                },
            ],
        };
        assert!(sel.matches(&labels(&[("role", "worker"), ("zone", "a")])));
        assert!(!sel.matches(&labels(&[("role", "worker"), ("zone", "c")])));
        assert!(!sel.matches(&labels(&[("role", "worker"), ("zone", "a"), ("gpu", "1")])));
        assert!(!sel.matches(&labels(&[("zone", "a")])));
    }

    #[test]
    fn not_in_matches_absent_labels() {
        let sel = LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![SelectorRequirement {
                key: "tier".into(),
                operator: SelectorOp::NotIn,
                values: vec!["db".into()],
            }],
        };
        assert!(sel.matches(&labels(&[])));
        assert!(!sel.matches(&labels(&[("tier", "db")])));
    }

    #[test]
    fn validation_reports_each_bad_term_with_its_path() {
        let sel = LabelSelector {
            match_labels: labels(&[("Bad Key", "ok"), ("k", "-bad")]),
            match_expressions: vec![SelectorRequirement {
                key: "zone".into(),
                operator: SelectorOp::Exists,
                values: vec!["a".into()],
            }],
        };
        let errs = sel.validate("pools[0].nodeSelector");
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!(
            errs[2].0,
            "pools[0].nodeSelector.matchExpressions[0].values"
        );
    }

    #[test]
    fn label_keys_with_prefixes() {
        assert!(validate_label_key("node-role.kubernetes.io/control-plane").is_ok());
        assert!(validate_label_key("example.com/backup-done").is_ok());
        assert!(validate_label_key("Example.com/x").is_err());
        assert!(validate_label_key("a/").is_err());
    }
}
