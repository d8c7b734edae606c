//! Pausing and resuming by editing the policy text itself, so a person's comments and
//! layout in `config.yaml` survive (a YAML round trip would drop them). Every edit is
//! checked by parsing the result: it must be a valid policy whose pools are paused
//! exactly as asked and otherwise unchanged, or the edit is refused.

use drydock_core::Policy;

/// Why the policy could not be edited.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    /// The policy in the cluster does not parse now.
    #[error("the policy in the ConfigMap is invalid, fix it first:\n{0}")]
    Invalid(String),
    /// No such pool.
    #[error("no pool {0:?} in the policy (pools: {1})")]
    NoPool(String, String),
    /// The implicit pool has no entry to edit.
    #[error(
        "pool \"default\" has no entry of its own: pause everything (without --pool), or give its nodes a pool"
    )]
    DefaultPool,
    /// The text is laid out in a way this editor does not handle.
    #[error("{0}; edit the ConfigMap by hand (kubectl edit configmap)")]
    Layout(String),
}

fn pool_names(p: &Policy) -> String {
    p.all_pools()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_code(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// Replaces the value of a `key:` line, keeping its indentation and trailing comment.
fn set_value(line: &str, key: &str, value: bool) -> String {
    let indent = indent_of(line);
    let rest = &line[indent + key.len() + 1..];
    // The comment with the spaces before it, as written.
    let comment = rest
        .find(" #")
        .map(|i| &rest[rest[..i].trim_end().len()..])
        .unwrap_or("");
    format!("{}{key}: {value}{comment}", " ".repeat(indent))
}

fn matches_key(line: &str, indent: usize, key: &str) -> bool {
    indent_of(line) == indent && line[indent..].starts_with(&format!("{key}:"))
}

fn edit_top(text: &str, paused: bool) -> Result<String, EditError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 1);
    let mut done = false;
    for line in &lines {
        if !done && matches_key(line, 0, "paused") {
            out.push(set_value(line, "paused", paused));
            done = true;
        } else {
            out.push(line.to_string());
        }
    }
    if !done {
        // After leading comments and a document marker, before the first key.
        let at = lines
            .iter()
            .position(|l| is_code(l) && l.trim() != "---")
            .unwrap_or(lines.len());
        out.insert(at, format!("paused: {paused}"));
    }
    Ok(out.join("\n") + "\n")
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
        .unwrap_or(s)
}

fn edit_pool(text: &str, pool: &str, paused: bool) -> Result<String, EditError> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(pools_at) = lines.iter().position(|l| matches_key(l, 0, "pools")) else {
        return Err(EditError::Layout("no block-style `pools:` key".into()));
    };
    // Find `- name: <pool>` (or `- ` then `name:` on its own line is not supported).
    let mut item = None;
    for (i, line) in lines.iter().enumerate().skip(pools_at + 1) {
        if is_code(line) && indent_of(line) == 0 {
            break;
        }
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("- ") {
            let rest = rest.trim_start();
            if rest.starts_with('{') {
                return Err(EditError::Layout(format!(
                    "the pools are written in flow style ({})",
                    line.trim()
                )));
            }
            if let Some(v) = rest.strip_prefix("name:") {
                let v = v.split(" #").next().unwrap_or(v);
                if unquote(v) == pool {
                    let key_indent = indent_of(line) + (t.len() - rest.len());
                    item = Some((i, key_indent));
                    break;
                }
            }
        }
    }
    let Some((start, key_indent)) = item else {
        return Err(EditError::Layout(format!(
            "pool {pool:?} has no `- name: {pool}` line"
        )));
    };
    // The item's body: following lines indented at least to its keys.
    let mut end = start + 1;
    while end < lines.len() && (!is_code(lines[end]) || indent_of(lines[end]) >= key_indent) {
        end += 1;
    }
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    if let Some(i) = (start + 1..end).find(|&i| matches_key(lines[i], key_indent, "paused")) {
        out[i] = set_value(lines[i], "paused", paused);
    } else {
        out.insert(
            start + 1,
            format!("{}paused: {paused}", " ".repeat(key_indent)),
        );
    }
    Ok(out.join("\n") + "\n")
}

/// What an edit did: the new text and, per pool, whether it is paused now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    /// The new `config.yaml`.
    pub text: String,
    /// `(pool, paused before, paused after)` for every pool, as the planner sees it
    /// (paused by its own setting or by the global one).
    pub pools: Vec<(String, bool, bool)>,
}

/// Sets `paused` at the top level (`pool` None) or on one pool, keeping the rest of
/// the text as it is.
pub fn set_paused(text: &str, pool: Option<&str>, paused: bool) -> Result<Edited, EditError> {
    let before = Policy::from_yaml(text).map_err(|e| EditError::Invalid(e.to_string()))?;
    let new_text = match pool {
        None => edit_top(text, paused)?,
        Some("default") => return Err(EditError::DefaultPool),
        Some(p) => {
            if before.pool(p).is_none() {
                return Err(EditError::NoPool(p.to_string(), pool_names(&before)));
            }
            edit_pool(text, p, paused)?
        }
    };
    let after = Policy::from_yaml(&new_text)
        .map_err(|e| EditError::Layout(format!("the edited policy would not parse ({e})")))?;
    let mut pools = Vec::new();
    for b in before.all_pools() {
        let Some(a) = after.pool(&b.name) else {
            return Err(EditError::Layout(format!("the edit lost pool {}", b.name)));
        };
        let targeted = pool.is_none_or(|p| p == b.name);
        if targeted && a.paused != paused && pool.is_some() {
            return Err(EditError::Layout(format!(
                "the edit did not change pool {}",
                b.name
            )));
        }
        if !targeted && a.paused != b.paused {
            return Err(EditError::Layout(format!(
                "the edit would also change pool {}",
                b.name
            )));
        }
        pools.push((
            b.name.clone(),
            before.paused || b.paused,
            after.paused || a.paused,
        ));
    }
    if pool.is_none() && after.paused != paused {
        return Err(EditError::Layout("the edit did not change `paused`".into()));
    }
    Ok(Edited {
        text: new_text,
        pools,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "# fleet policy\nmaxUnavailable: 1   # careful\npools:\n  - name: control-plane\n    nodeSelector: {node-role.kubernetes.io/control-plane: \"\"}\n  - name: workers   # the bulk\n    # nine of them\n    nodeSelector:\n      matchLabels: {role: worker}\n    paused: false  # was paused during the sale\n    maxUnavailable: 2\n";

    #[test]
    fn pausing_everything_keeps_comments() {
        let e = set_paused(POLICY, None, true).expect("edit");
        assert!(
            e.text
                .starts_with("# fleet policy\npaused: true\nmaxUnavailable: 1   # careful\n")
        );
        assert_eq!(e.text.lines().count(), POLICY.lines().count() + 1);
        assert!(e.pools.iter().all(|(_, before, after)| !before && *after));
        // And back: the line is edited in place now.
        let r = set_paused(&e.text, None, false).expect("edit");
        assert!(r.text.contains("\npaused: false\n"));
        assert_eq!(r.text.lines().count(), e.text.lines().count());
    }

    #[test]
    fn pausing_a_pool_edits_only_its_entry() {
        let e = set_paused(POLICY, Some("workers"), true).expect("edit");
        assert!(
            e.text
                .contains("    paused: true  # was paused during the sale\n")
        );
        assert_eq!(
            e.pools,
            vec![
                ("control-plane".into(), false, false),
                ("workers".into(), false, true),
                ("default".into(), false, false),
            ]
        );
        let c = set_paused(POLICY, Some("control-plane"), true).expect("edit");
        assert!(
            c.text
                .contains("  - name: control-plane\n    paused: true\n    nodeSelector")
        );
        assert_eq!(c.pools[0], ("control-plane".into(), false, true));
        assert_eq!(c.pools[1], ("workers".into(), false, false));
    }

    #[test]
    fn what_cannot_be_edited_is_refused() {
        assert_eq!(
            set_paused(POLICY, Some("gpu"), true),
            Err(EditError::NoPool(
                "gpu".into(),
                "control-plane, workers, default".into()
            ))
        );
        assert_eq!(
            set_paused(POLICY, Some("default"), true),
            Err(EditError::DefaultPool)
        );
        assert!(matches!(
            set_paused("maxUnavailable: lots\n", None, true),
            Err(EditError::Invalid(_))
        ));
        let flow = "pools: [{name: a, nodeSelector: {x: y}}]\n";
        assert!(matches!(
            set_paused(flow, Some("a"), true),
            Err(EditError::Layout(_))
        ));
    }

    #[test]
    fn an_empty_policy_gets_the_key() {
        let e = set_paused("", None, true).expect("edit");
        assert_eq!(e.text, "paused: true\n");
    }
}
