//! The FleetLock protocol as Zincati speaks it, for the operator's FleetLock server: the
//! request checks with the protocol's error kinds, and the client id Zincati derives from
//! the machine id, so a request can be matched to a Node's `status.nodeInfo.machineID`.
//!
//! A request is `POST /v1/pre-reboot` or `/v1/steady-state` with the header
//! `fleet-lock-protocol: true` and the body `{"client_params":{"id":"…","group":"…"}}`;
//! 200 is the only success and every error is JSON `{"kind":"…","value":"…"}`.

use serde_json::Value;
use sha2::{Digest, Sha256};

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
