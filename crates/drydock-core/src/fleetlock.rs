//! The FleetLock protocol as Zincati speaks it, for the operator's FleetLock server: the
//! request checks with the protocol's error kinds, and the client id Zincati derives from
//! the machine id, so a request can be matched to a Node's `status.nodeInfo.machineID`.
//!
//! A request is `POST /v1/pre-reboot` or `/v1/steady-state` with the header
//! `fleet-lock-protocol: true` and the body `{"client_params":{"id":"…","group":"…"}}`;
//! 200 is the only success and every error is JSON `{"kind":"…","value":"…"}`.
//!
//! A node Zincati updates has no drydock agent, so the operator's endpoints write its
//! status in the agent's place ([`standin_status`]): the booted version and boot id the
//! kubelet reports, and, once Zincati asks to reboot, the release drydock's pinned graph
//! offered it as the staged version. From there the node takes the same path as any:
//! queued, cordoned, drained, granted. [`pre_reboot`] lets Zincati reboot only on a grant
//! made in the current boot; [`steady_state`] holds Zincati until drydock has verified the
//! new boot and uncordoned the node.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::protocol::{AgentStatus, NodeState, Phase};
use crate::version::{OsFamily, OsVersion};

/// Zincati's application id: its client id is the machine id made specific to it.
pub const ZINCATI_APP_ID: &str = "de35106b6ec24688b63afddaa156679b";
/// The header every request must carry, with the value `true`.
pub const PROTOCOL_HEADER: &str = "fleet-lock-protocol";
/// Most bytes of a request body the server reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest id or group accepted.
pub const MAX_FIELD_LEN: usize = 253;

/// A refused request: the HTTP status and the protocol's error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {kind}: {value}")]
pub struct ProtocolError {
    /// HTTP status (4xx for the client's mistakes).
    pub status: u16,
    /// The error kind.
    pub kind: &'static str,
    /// For people.
    pub value: String,
}

impl ProtocolError {
    /// A refusal with this status and kind.
    pub fn new(status: u16, kind: &'static str, value: impl Into<String>) -> ProtocolError {
        ProtocolError {
            status,
            kind,
            value: value.into(),
        }
    }

    /// The JSON body the protocol prescribes.
    pub fn body(&self) -> String {
        serde_json::json!({"kind": self.kind, "value": self.value}).to_string()
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientParams {
    /// The client id (Zincati: its app-specific machine id).
    pub id: String,
    /// The reboot group (Zincati's default is `default`).
    pub group: String,
}

/// Checks a request's protocol header and body.
pub fn parse_request(header: Option<&str>, body: &[u8]) -> Result<ClientParams, ProtocolError> {
    match header.map(str::trim) {
        Some("true") => {}
        Some(other) => {
            return Err(ProtocolError::new(
                400,
                "missing_header",
                format!("header {PROTOCOL_HEADER} must be \"true\", not {other:?}"),
            ));
        }
        None => {
            return Err(ProtocolError::new(
                400,
                "missing_header",
                format!("header {PROTOCOL_HEADER}: true is missing"),
            ));
        }
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(ProtocolError::new(
            413,
            "body_too_large",
            format!("the body is over {MAX_BODY_BYTES} bytes"),
        ));
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        ProtocolError::new(400, "malformed_body", format!("the body is not JSON: {e}"))
    })?;
    let params = doc
        .get("client_params")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            ProtocolError::new(
                400,
                "malformed_body",
                "client_params is missing or not an object",
            )
        })?;
    let field = |name: &str, kind: &'static str| -> Result<String, ProtocolError> {
        let v = match params.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(ProtocolError::new(
                    400,
                    "malformed_body",
                    format!("client_params.{name} is not a string"),
                ));
            }
            None => {
                return Err(ProtocolError::new(
                    400,
                    "malformed_body",
                    format!("client_params.{name} is missing"),
                ));
            }
        };
        if v.is_empty() || v.len() > MAX_FIELD_LEN {
            return Err(ProtocolError::new(
                400,
                kind,
                format!("client_params.{name} must be 1 to {MAX_FIELD_LEN} characters"),
            ));
        }
        Ok(v)
    };
    let id = field("id", "invalid_id")?;
    let group = field("group", "invalid_group")?;
    if !group
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err(ProtocolError::new(
            400,
            "invalid_group",
            format!("group {group:?} must match ^[a-zA-Z0-9.-]+$"),
        ));
    }
    Ok(ClientParams { id, group })
}

fn id128(hex: &str, what: &str) -> Result<[u8; 16], String> {
    let hex = hex.trim();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{what} {hex:?} is not 32 hexadecimal digits"));
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("{what} {hex:?} is not hexadecimal"))?;
    }
    Ok(out)
}

/// systemd's application-specific machine id (`sd_id128_get_machine_app_specific`):
/// HMAC-SHA256 keyed by the machine id over the application id, its first 16 bytes
/// marked as a version 4 UUID, in lower-case hex.
pub fn app_specific_id(machine_id: &str, app_id: &str) -> Result<String, String> {
    let key = id128(machine_id, "machine id")?;
    let msg = id128(app_id, "application id")?;
    let mut block = [0u8; 64];
    block[..16].copy_from_slice(&key);
    let pad = |x: u8| -> Vec<u8> { block.iter().map(|b| b ^ x).collect() };
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    let mac = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&mac[..16]);
    id[6] = (id[6] & 0x0F) | 0x40;
    id[8] = (id[8] & 0x3F) | 0x80;
    Ok(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// The id Zincati sends for a machine.
pub fn zincati_id(machine_id: &str) -> Result<String, String> {
    app_specific_id(machine_id, ZINCATI_APP_ID)
}

/// The `agent-version` of a status the operator writes on Zincati's behalf: it tells
/// every reader that FleetLock, not a drydock agent, speaks for the node.
pub const STANDIN_AGENT: &str = "zincati-fleetlock";

/// The version in a Fedora CoreOS `status.nodeInfo.osImage`
/// (`Fedora CoreOS 41.20251122.3.0`): its last word.
pub fn os_image_version(os_image: &str) -> Result<OsVersion, String> {
    let word = os_image.split_whitespace().last().unwrap_or_default();
    OsVersion::parse(OsFamily::Fcos, word).map_err(|e| {
        format!("status.nodeInfo.osImage {os_image:?} does not end in a Fedora CoreOS version: {e}")
    })
}

/// Whether FleetLock may speak for a node: never for one a drydock agent reports on, so a
/// forged FleetLock request cannot touch an agent's node.
pub fn speaks_for(agent: &AgentStatus) -> bool {
    agent
        .agent_version
        .as_deref()
        .is_none_or(|v| v == STANDIN_AGENT)
}

/// The status written in the agent's place: what the kubelet says was booted (the version
/// doubles as the slot, as each release is its own deployment), and the staged release —
/// `stage` when Zincati asks to reboot into it, else what was staged before, until the
/// node runs it. The last acknowledged token carries over.
pub fn standin_status(
    current: &AgentStatus,
    booted: &OsVersion,
    boot_id: &str,
    stage: Option<&OsVersion>,
) -> AgentStatus {
    let staged = stage
        .or(current.staged_version.as_ref())
        .filter(|s| *s != booted)
        .cloned();
    AgentStatus {
        os: Some(OsFamily::Fcos),
        booted_version: Some(booted.clone()),
        booted_slot: Some(booted.to_string()),
        boot_id: Some(boot_id.to_string()),
        reboot_needed: staged.is_some(),
        staged_version: staged,
        update_status: None,
        progress: None,
        last_check: None,
        channel: None,
        agent_version: Some(STANDIN_AGENT.into()),
        reboot_ack: current.reboot_ack,
        message: None,
    }
}

fn situation(state: &NodeState) -> String {
    let op = &state.operator;
    let why = op
        .reason
        .as_deref()
        .unwrap_or("waiting for the operator's next pass");
    format!("{}: {why}", op.phase())
}

/// `pre-reboot`: the grant token to acknowledge when drydock has granted this node a
/// reboot during its current boot (`boot_id`), else a 409 `failed_lock` saying where the
/// node stands. Asking again after a grant gets the same token.
pub fn pre_reboot(state: &NodeState, boot_id: &str) -> Result<u64, ProtocolError> {
    let op = &state.operator;
    if matches!(op.phase(), Phase::RebootGranted | Phase::Rebooting)
        && op.grant_boot_id.as_deref() == Some(boot_id)
        && let Some(token) = op.token
    {
        return Ok(token);
    }
    if !state.agent.has_staged_update() {
        return Err(ProtocolError::new(
            409,
            "failed_lock",
            format!(
                "drydock has offered this node no update to reboot into ({}); point Zincati's [cincinnati] base_url at the drydock operator",
                situation(state)
            ),
        ));
    }
    Err(ProtocolError::new(409, "failed_lock", situation(state)))
}

/// `steady-state`: 409 `failed_unlock` while drydock still verifies the boot that followed
/// its grant (the node is rebooting or baking), so Zincati keeps reporting; otherwise
/// the node is steady and Zincati may go on.
pub fn steady_state(state: &NodeState, boot_id: &str) -> Result<(), ProtocolError> {
    let op = &state.operator;
    let after_grant = matches!(
        op.phase(),
        Phase::RebootGranted | Phase::Rebooting | Phase::Verifying
    ) && op.grant_boot_id.as_deref() != Some(boot_id);
    if after_grant {
        return Err(ProtocolError::new(
            409,
            "failed_unlock",
            format!("drydock is verifying this boot ({})", situation(state)),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_specific_id_matches_systemds() {
        // systemd's own test vector for sd_id128_get_app_specific().
        assert_eq!(
            app_specific_id(
                "2e074e9b299c41a59923c51ae16f279b",
                "033b1b9b264441fcaa173e9e5bf35c5a"
            )
            .as_deref(),
            Ok("4d4a86c9c6644a479560ded5d19a30c5")
        );
        let z = zincati_id("2e074e9b299c41a59923c51ae16f279b").expect("id");
        assert_eq!(z.len(), 32);
        assert_ne!(z, "2e074e9b299c41a59923c51ae16f279b");
        assert!(zincati_id("not-a-machine-id").is_err());
        assert!(zincati_id("2e074e9b299c41a59923c51ae16f279").is_err());
    }

    fn state(phase: Phase, token: Option<u64>, grant_boot: Option<&str>) -> NodeState {
        let mut s = NodeState::default();
        s.operator.phase = Some(phase);
        s.operator.token = token;
        s.operator.grant_boot_id = grant_boot.map(str::to_string);
        s.operator.reason = Some("pool workers: 1 of 1 unavailable".into());
        s
    }

    #[test]
    fn zincati_may_reboot_only_on_a_grant_made_in_its_current_boot() {
        let v = |s: &str| OsVersion::parse(OsFamily::Fcos, s).expect("version");
        let mut s = state(Phase::Queued, None, None);
        s.agent = standin_status(
            &s.agent,
            &v("41.20251001.3.0"),
            "boot-1",
            Some(&v("41.20251015.3.0")),
        );
        let e = pre_reboot(&s, "boot-1").expect_err("queued");
        assert_eq!((e.status, e.kind), (409, "failed_lock"));
        assert_eq!(e.value, "Queued: pool workers: 1 of 1 unavailable");
        for phase in [Phase::RebootGranted, Phase::Rebooting] {
            let mut g = state(phase, Some(7), Some("boot-1"));
            g.agent = s.agent.clone();
            assert_eq!(pre_reboot(&g, "boot-1"), Ok(7));
            // A grant from an earlier boot is no grant for this one.
            assert_eq!(
                pre_reboot(&g, "boot-2").map_err(|e| e.kind),
                Err("failed_lock")
            );
        }
        // Nothing offered: the error says how to point Zincati at drydock.
        let idle = state(Phase::Idle, None, None);
        assert!(
            pre_reboot(&idle, "b")
                .expect_err("idle")
                .value
                .contains("base_url")
        );
    }

    #[test]
    fn steady_state_waits_until_the_new_boot_is_verified() {
        let s = state(Phase::Rebooting, Some(7), Some("boot-1"));
        // Still the granted boot (Zincati restarted before rebooting): nothing to verify.
        assert_eq!(steady_state(&s, "boot-1"), Ok(()));
        let e = steady_state(&s, "boot-2").expect_err("verifying");
        assert_eq!((e.status, e.kind), (409, "failed_unlock"));
        let baking = state(Phase::Verifying, Some(7), Some("boot-1"));
        assert!(steady_state(&baking, "boot-2").is_err());
        assert_eq!(
            steady_state(&state(Phase::Done, Some(7), Some("boot-1")), "boot-2"),
            Ok(())
        );
        assert_eq!(steady_state(&NodeState::default(), "x"), Ok(()));
    }

    #[test]
    fn the_stand_in_status_follows_the_kubelet_and_never_claims_an_agents_node() {
        let v = |s: &str| OsVersion::parse(OsFamily::Fcos, s).expect("version");
        assert_eq!(
            os_image_version("Fedora CoreOS 41.20251122.3.0"),
            Ok(v("41.20251122.3.0"))
        );
        let bad = os_image_version("Ubuntu 24.04.1 LTS").expect_err("not FCOS");
        assert!(bad.contains("osImage \"Ubuntu 24.04.1 LTS\""), "{bad}");
        let mut current = AgentStatus {
            reboot_ack: Some(3),
            ..AgentStatus::default()
        };
        let s = standin_status(
            &current,
            &v("41.20251001.3.0"),
            "b1",
            Some(&v("41.20251015.3.0")),
        );
        assert_eq!(s.staged_version, Some(v("41.20251015.3.0")));
        assert!(s.reboot_needed && s.has_staged_update());
        assert_eq!(s.booted_slot.as_deref(), Some("41.20251001.3.0"));
        assert_eq!(s.reboot_ack, Some(3));
        assert!(speaks_for(&s));
        // After the reboot the staged release is what runs: nothing is staged any more.
        let after = standin_status(&s, &v("41.20251015.3.0"), "b2", None);
        assert_eq!((after.staged_version, after.reboot_needed), (None, false));
        // Without a new offer, what was staged stays staged.
        assert_eq!(
            standin_status(&s, &v("41.20251001.3.0"), "b1", None).staged_version,
            Some(v("41.20251015.3.0"))
        );
        current.agent_version = Some("0.1.0".into());
        assert!(!speaks_for(&current));
    }

    #[test]
    fn requests_are_checked_with_the_protocols_error_kinds() {
        let ok = br#"{"client_params":{"id":"abc","group":"default"}}"#;
        assert_eq!(
            parse_request(Some("true"), ok),
            Ok(ClientParams {
                id: "abc".into(),
                group: "default".into()
            })
        );
        let kind = |h: Option<&str>, b: &[u8]| parse_request(h, b).expect_err("refused");
        let e = kind(None, ok);
        assert_eq!((e.status, e.kind), (400, "missing_header"));
        assert_eq!(
            e.body(),
            r#"{"kind":"missing_header","value":"header fleet-lock-protocol: true is missing"}"#
        );
        assert_eq!(kind(Some("yes"), ok).kind, "missing_header");
        assert_eq!(kind(Some("true"), b"{").kind, "malformed_body");
        assert_eq!(
            kind(Some("true"), br#"{"client_params":{"group":"g"}}"#).value,
            "client_params.id is missing"
        );
        assert_eq!(
            kind(Some("true"), br#"{"client_params":{"id":7,"group":"g"}}"#).value,
            "client_params.id is not a string"
        );
        assert_eq!(
            kind(Some("true"), br#"{"client_params":{"id":"","group":"g"}}"#).kind,
            "invalid_id"
        );
        let bad_group = kind(
            Some("true"),
            br#"{"client_params":{"id":"a","group":"a b"}}"#,
        );
        assert_eq!((bad_group.status, bad_group.kind), (400, "invalid_group"));
        assert_eq!(
            kind(Some("true"), &vec![b' '; MAX_BODY_BYTES + 1]).status,
            413
        );
    }
}
