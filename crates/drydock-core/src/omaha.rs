//! The Omaha v3 protocol as Flatcar's update_engine speaks it: the request a node sends
//! (`<request protocol="3.0"><app appid version track machineid><updatecheck/>`), and the
//! answer — `noupdate`, or an offer naming the version, the payload's URL, size and its
//! SHA-256 (base64, on the postinstall action).
//!
//! Parsing is strict: a request or response that is not what the protocol says is an
//! error naming what is wrong, and an offer is returned only when every part of it was
//! read — never half an offer.

use std::fmt::Write as _;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// Flatcar's Omaha application id.
pub const FLATCAR_APP_ID: &str = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}";
/// Longest request accepted (bytes); update_engine's are well under 2 KiB.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What is wrong with an Omaha document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OmahaError {
    /// Not well-formed XML.
    #[error("not well-formed XML: {0}")]
    Xml(String),
    /// Well-formed, but not the Omaha shape.
    #[error("not an Omaha v3 {what}: {detail}")]
    Protocol {
        /// `request` or `response`.
        what: &'static str,
        /// What is missing or wrong.
        detail: String,
    },
    /// Too large.
    #[error("the document is {0} bytes, more than the {MAX_REQUEST_BYTES} accepted")]
    TooLarge(usize),
}

/// One `<app>` of a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppRequest {
    /// `appid`.
    pub appid: String,
    /// Version the node runs.
    pub version: String,
    /// Channel (`track`, the `GROUP` of update.conf).
    pub track: String,
    /// `machineid` (the node's `/etc/machine-id`).
    pub machineid: String,
    /// `bootid`.
    pub bootid: String,
    /// Whether it asks for an update check (as opposed to only reporting events).
    pub updatecheck: bool,
    /// `(eventtype, eventresult)` reports.
    pub events: Vec<(u32, u32)>,
}

/// An offer: what to download and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Version offered.
    pub version: String,
    /// Base URLs (`<url codebase>`), tried in order.
    pub codebases: Vec<String>,
    /// Payload file name (`<package name>`), appended to a codebase.
    pub package: String,
    /// Payload size in bytes.
    pub size: u64,
    /// SHA-256 of the payload, base64 (`sha256` on the postinstall action).
    pub sha256: String,
    /// `hash` on the package (base64 SHA-1 in older servers), passed through.
    pub package_hash: Option<String>,
}

/// The answer for one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateCheck {
    /// Nothing newer.
    NoUpdate,
    /// An update.
    Offer(Offer),
    /// The server answered with another status for the app or the check (the status).
    Error(String),
}

fn xml_err(e: impl std::fmt::Display) -> OmahaError {
    OmahaError::Xml(e.to_string())
}

fn attrs(e: &BytesStart<'_>) -> Result<Vec<(String, String)>, OmahaError> {
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(xml_err)?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a.unescape_value().map_err(xml_err)?.into_owned();
        out.push((key, value));
    }
    Ok(out)
}

fn get<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// An element: its depth, name and attributes.
type Element = (usize, String, Vec<(String, String)>);

/// Every start or empty element, in document order.
fn elements(xml: &str) -> Result<Vec<Element>, OmahaError> {
    if xml.len() > MAX_REQUEST_BYTES {
        return Err(OmahaError::TooLarge(xml.len()));
    }
    let mut reader = Reader::from_str(xml);
    let mut out = Vec::new();
    let mut depth = 0usize;
    loop {
        match reader.read_event().map_err(xml_err)? {
            Event::Start(e) => {
                out.push((
                    depth,
                    String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                    attrs(&e)?,
                ));
                depth += 1;
            }
            Event::Empty(e) => out.push((
                depth,
                String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                attrs(&e)?,
            )),
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err(OmahaError::Xml("unclosed element".into()));
    }
    Ok(out)
}

/// Parses a request from a node.
pub fn parse_request(xml: &str) -> Result<Vec<AppRequest>, OmahaError> {
    let bad = |detail: String| OmahaError::Protocol {
        what: "request",
        detail,
    };
    let els = elements(xml)?;
    let Some((0, root, root_attrs)) = els.first() else {
        return Err(bad("empty document".into()));
    };
    if root != "request" {
        return Err(bad(format!("the root element is <{root}>, not <request>")));
    }
    if get(root_attrs, "protocol") != Some("3.0") {
        return Err(bad(format!(
            "protocol is {:?}, not \"3.0\"",
            get(root_attrs, "protocol").unwrap_or("missing")
        )));
    }
    let mut apps: Vec<AppRequest> = Vec::new();
    for (depth, name, a) in &els[1..] {
        match (depth, name.as_str()) {
            (1, "app") => {
                let need = |k: &str| {
                    get(a, k)
                        .map(str::to_string)
                        .ok_or_else(|| bad(format!("<app> has no {k} attribute")))
                };
                apps.push(AppRequest {
                    appid: need("appid")?,
                    version: need("version")?,
                    track: get(a, "track").unwrap_or("").to_string(),
                    machineid: get(a, "machineid").unwrap_or("").to_string(),
                    bootid: get(a, "bootid").unwrap_or("").to_string(),
                    updatecheck: false,
                    events: Vec::new(),
                });
            }
            (2, "updatecheck") => {
                if let Some(app) = apps.last_mut() {
                    app.updatecheck = true;
                }
            }
            (2, "event") => {
                let num = |k: &str| -> Result<u32, OmahaError> {
                    get(a, k)
                        .ok_or_else(|| bad(format!("<event> has no {k}")))?
                        .parse()
                        .map_err(|_| bad(format!("<event> {k} is not a number")))
                };
                let ev = (num("eventtype")?, num("eventresult")?);
                if let Some(app) = apps.last_mut() {
                    app.events.push(ev);
                }
            }
            _ => {}
        }
    }
    if apps.is_empty() {
        return Err(bad("no <app> element".into()));
    }
    Ok(apps)
}

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// The request update_engine sends for one app.
pub fn build_request(app: &AppRequest) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<request protocol=\"3.0\" version=\"update_engine-0.4.10\" updaterversion=\"update_engine-0.4.10\" installsource=\"scheduler\" ismachine=\"1\">\n",
    );
    let _ = writeln!(
        x,
        " <os version=\"Chateau\" platform=\"CoreOS\" sp=\"{}_x86_64\"></os>",
        esc(&app.version)
    );
    let _ = writeln!(
        x,
        " <app appid=\"{}\" version=\"{}\" track=\"{}\" bootid=\"{}\" machineid=\"{}\" board=\"amd64-usr\" delta_okay=\"false\">",
        esc(&app.appid),
        esc(&app.version),
        esc(&app.track),
        esc(&app.bootid),
        esc(&app.machineid)
    );
    if app.updatecheck {
        x.push_str("  <ping active=\"1\"></ping>\n  <updatecheck></updatecheck>\n");
    }
    for (t, r) in &app.events {
        let _ = writeln!(x, "  <event eventtype=\"{t}\" eventresult=\"{r}\"></event>");
    }
    x.push_str(" </app>\n</request>\n");
    x
}

/// Parses a server's response: the update check of the first app.
pub fn parse_response(xml: &str) -> Result<UpdateCheck, OmahaError> {
    let bad = |detail: String| OmahaError::Protocol {
        what: "response",
        detail,
    };
    let els = elements(xml)?;
    let Some((0, root, root_attrs)) = els.first() else {
        return Err(bad("empty document".into()));
    };
    if root != "response" {
        return Err(bad(format!("the root element is <{root}>, not <response>")));
    }
    if get(root_attrs, "protocol") != Some("3.0") {
        return Err(bad("protocol is not \"3.0\"".into()));
    }
    let mut app_seen = false;
    let mut check: Option<String> = None;
    let mut codebases = Vec::new();
    let mut version = None;
    let mut package: Option<(String, u64, Option<String>)> = None;
    let mut sha256 = None;
    for (depth, name, a) in &els[1..] {
        match (depth, name.as_str()) {
            (1, "app") => {
                if app_seen {
                    break; // only the first app
                }
                app_seen = true;
                let status = get(a, "status").unwrap_or("ok");
                if status != "ok" {
                    return Ok(UpdateCheck::Error(format!("app status {status}")));
                }
            }
            (2, "updatecheck") => check = Some(get(a, "status").unwrap_or("").to_string()),
            (4, "url") => codebases.push(
                get(a, "codebase")
                    .ok_or_else(|| bad("<url> has no codebase".into()))?
                    .to_string(),
            ),
            (3, "manifest") => {
                version = Some(
                    get(a, "version")
                        .ok_or_else(|| bad("<manifest> has no version".into()))?
                        .to_string(),
                )
            }
            (5, "package") => {
                if package.is_some() {
                    return Err(bad(
                        "more than one <package>; update_engine takes exactly one".into(),
                    ));
                }
                let name = get(a, "name").ok_or_else(|| bad("<package> has no name".into()))?;
                let size = get(a, "size")
                    .ok_or_else(|| bad("<package> has no size".into()))?
                    .parse::<u64>()
                    .map_err(|_| bad("<package> size is not a number".into()))?;
                package = Some((name.to_string(), size, get(a, "hash").map(str::to_string)));
            }
            (5, "action") if get(a, "event") == Some("postinstall") => {
                sha256 = get(a, "sha256").map(str::to_string)
            }
            _ => {}
        }
    }
    if !app_seen {
        return Err(bad("no <app> element".into()));
    }
    match check.as_deref() {
        None => Err(bad("<app> has no <updatecheck>".into())),
        Some("noupdate") => Ok(UpdateCheck::NoUpdate),
        Some("ok") => {
            let version = version
                .ok_or_else(|| bad("an ok update check without <manifest version>".into()))?;
            let (package, size, package_hash) =
                package.ok_or_else(|| bad("an ok update check without a <package>".into()))?;
            let sha256 =
                sha256.ok_or_else(|| bad("no sha256 on the postinstall <action>".into()))?;
            let valid_b64 = sha256.len() == 44
                && sha256.ends_with('=')
                && sha256[..43]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
            if !valid_b64 {
                return Err(bad(format!("sha256 {sha256:?} is not a base64 SHA-256")));
            }
            if codebases.is_empty() {
                return Err(bad("an ok update check without any <url codebase>".into()));
            }
            if package.contains('/') || package.contains("..") {
                return Err(bad(format!("package name {package:?} is not a file name")));
            }
            Ok(UpdateCheck::Offer(Offer {
                version,
                codebases,
                package,
                size,
                sha256,
                package_hash,
            }))
        }
        Some(other) => Ok(UpdateCheck::Error(other.to_string())),
    }
}

/// A response for one app.
pub fn build_response(appid: &str, check: &UpdateCheck) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<response protocol=\"3.0\" server=\"drydock\">\n <daystart elapsed_seconds=\"0\"/>\n",
    );
    let _ = writeln!(x, " <app appid=\"{}\" status=\"ok\">", esc(appid));
    match check {
        UpdateCheck::NoUpdate => x.push_str("  <updatecheck status=\"noupdate\"/>\n"),
        UpdateCheck::Error(status) => {
            let _ = writeln!(x, "  <updatecheck status=\"{}\"/>", esc(status));
        }
        UpdateCheck::Offer(o) => {
            x.push_str("  <updatecheck status=\"ok\">\n   <urls>\n");
            for c in &o.codebases {
                let _ = writeln!(x, "    <url codebase=\"{}\"/>", esc(c));
            }
            let _ = writeln!(
                x,
                "   </urls>\n   <manifest version=\"{}\">\n    <packages>",
                esc(&o.version)
            );
            let hash = o
                .package_hash
                .as_deref()
                .map(|h| format!(" hash=\"{}\"", esc(h)))
                .unwrap_or_default();
            let _ = writeln!(
                x,
                "     <package name=\"{}\" size=\"{}\" required=\"true\"{hash}/>",
                esc(&o.package),
                o.size
            );
            x.push_str("    </packages>\n    <actions>\n");
            let _ = writeln!(
                x,
                "     <action event=\"postinstall\" sha256=\"{}\" DisablePayloadBackoff=\"true\"/>",
                esc(&o.sha256)
            );
            x.push_str("    </actions>\n   </manifest>\n  </updatecheck>\n");
        }
    }
    x.push_str(" </app>\n</response>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> Offer {
        Offer {
            version: "4230.0.0".into(),
            codebases: vec!["http://127.0.0.1:8080/payloads/4230.0.0/".into()],
            package: "flatcar_production_update.gz".into(),
            size: 1_048_576,
            sha256: "DIAVxoI+8NpsudUawOA5U92VHlaxQBS3ejN4EPM6T2A=".into(),
            package_hash: None,
        }
    }

    #[test]
    fn the_upstream_sample_response_parses() {
        let sample = include_str!("../../drydock-sim/upstream/sample_omaha_v3_response.xml");
        match parse_response(sample).unwrap() {
            UpdateCheck::Offer(o) => {
                assert_eq!(o.version, "3095.0.0");
                assert_eq!(o.size, 400_752_559);
                assert_eq!(o.sha256, "DIAVxoI+8NpsudUawOA5U92VHlaxQBS3ejN4EPM6T2A=");
                assert_eq!(
                    o.package_hash.as_deref(),
                    Some("HVOmp67vBjPdvpWmOC2Uw4UDwsc=")
                );
                assert!(o.codebases[0].starts_with("https://storage.googleapis.com/"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let app = AppRequest {
            appid: FLATCAR_APP_ID.into(),
            version: "4081.2.0".into(),
            track: "stable".into(),
            machineid: "0123456789abcdef0123456789abcdef".into(),
            bootid: "{b}".into(),
            updatecheck: true,
            events: vec![(3, 2)],
        };
        assert_eq!(parse_request(&build_request(&app)).unwrap(), vec![app]);
        for check in [
            UpdateCheck::NoUpdate,
            UpdateCheck::Offer(offer()),
            UpdateCheck::Error("noupdate-ish".into()),
        ] {
            assert_eq!(
                parse_response(&build_response(FLATCAR_APP_ID, &check)).unwrap(),
                check
            );
        }
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        assert!(matches!(
            parse_request("<request protocol=\"3.0\"><app"),
            Err(OmahaError::Xml(_))
        ));
        assert_eq!(
            parse_request("<request protocol=\"2.0\"><app appid=\"a\" version=\"1\"/></request>")
                .unwrap_err()
                .to_string(),
            "not an Omaha v3 request: protocol is \"2.0\", not \"3.0\""
        );
        assert_eq!(
            parse_request("<request protocol=\"3.0\"><app version=\"1\"/></request>")
                .unwrap_err()
                .to_string(),
            "not an Omaha v3 request: <app> has no appid attribute"
        );
        assert_eq!(
            parse_request("<hello/>").unwrap_err().to_string(),
            "not an Omaha v3 request: the root element is <hello>, not <request>"
        );
        let big = format!(
            "<request protocol=\"3.0\">{}</request>",
            " ".repeat(MAX_REQUEST_BYTES)
        );
        assert!(matches!(parse_request(&big), Err(OmahaError::TooLarge(_))));
    }

    #[test]
    fn a_half_offer_is_an_error_never_an_offer() {
        let full = build_response(FLATCAR_APP_ID, &UpdateCheck::Offer(offer()));
        let no_hash = full.replace(
            " sha256=\"DIAVxoI+8NpsudUawOA5U92VHlaxQBS3ejN4EPM6T2A=\"",
            "",
        );
        assert!(
            parse_response(&no_hash)
                .unwrap_err()
                .to_string()
                .contains("no sha256")
        );
        let bad_hash = full.replace("DIAVxoI+8NpsudUawOA5U92VHlaxQBS3ejN4EPM6T2A=", "not-base64");
        assert!(
            parse_response(&bad_hash)
                .unwrap_err()
                .to_string()
                .contains("is not a base64 SHA-256")
        );
        let no_urls = full.replace(
            "<url codebase=\"http://127.0.0.1:8080/payloads/4230.0.0/\"/>",
            "",
        );
        assert!(
            parse_response(&no_urls)
                .unwrap_err()
                .to_string()
                .contains("without any <url codebase>")
        );
        let no_size = full.replace(" size=\"1048576\"", "");
        assert!(
            parse_response(&no_size)
                .unwrap_err()
                .to_string()
                .contains("no size")
        );
        let traversal = full.replace("flatcar_production_update.gz", "../../etc/shadow");
        assert!(
            parse_response(&traversal)
                .unwrap_err()
                .to_string()
                .contains("not a file name")
        );
        let truncated = &full[..full.len() / 2];
        assert!(parse_response(truncated).is_err());
    }
}
