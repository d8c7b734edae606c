//! What the agent reads from the host's files, all under a configurable root so tests
//! (and the agent's container, which mounts the host's files elsewhere) can point it at
//! any directory: the OS family, Flatcar's booted USR slot, the update channel and server,
//! and the boot id.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// PARTUUID of Flatcar's USR-A partition (partition 3).
pub const USR_A_PARTUUID: &str = "7130c94a-213a-4e5a-8e26-6cce9662f132";
/// PARTUUID of Flatcar's USR-B partition (partition 4).
pub const USR_B_PARTUUID: &str = "e03dd35c-7c2d-4a47-b3fe-27f15780a57c";
/// The administrator's update configuration.
pub const UPDATE_CONF: &str = "etc/flatcar/update.conf";
/// The OS's default update configuration.
pub const DEFAULT_UPDATE_CONF: &str = "usr/share/flatcar/update.conf";

/// Why a host fact could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is not what the OS writes.
    #[error("{path}: {detail}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

impl FactsError {
    /// A small fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FactsError::Io { .. } => "io",
            FactsError::Malformed { .. } => "malformed",
        }
    }
}

/// The OS family, as `/etc/os-release` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `ID=flatcar`.
    Flatcar,
    /// `ID=fedora` with `VARIANT_ID=coreos`, or `ID=rhcos`.
    CoreOs,
}

/// Which USR partition Flatcar booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsrSlot {
    /// USR-A, partition 3.
    A,
    /// USR-B, partition 4.
    B,
}

impl UsrSlot {
    /// `a` or `b`, as published on the Node.
    pub fn as_str(self) -> &'static str {
        match self {
            UsrSlot::A => "a",
            UsrSlot::B => "b",
        }
    }

    /// The other slot.
    pub fn other(self) -> UsrSlot {
        match self {
            UsrSlot::A => UsrSlot::B,
            UsrSlot::B => UsrSlot::A,
        }
    }
}

/// Flatcar's update settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateConf {
    /// `GROUP`: the channel (alpha, beta, stable, lts, or a Nebraska group).
    pub group: Option<String>,
    /// `SERVER`: the Omaha endpoint.
    pub server: Option<String>,
}

/// The host's files, under `root` (`/` on a real host).
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

fn read(path: &Path) -> Result<String, FactsError> {
    std::fs::read_to_string(path).map_err(|source| FactsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// `KEY=value` lines (shell-style quotes removed); comments and blanks skipped.
fn key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

impl Host {
    /// The host rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into() }
    }

    /// A path under the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// The OS family and its full version from `/etc/os-release`: `VERSION_ID` on
    /// Flatcar; `OSTREE_VERSION` on CoreOS, whose `VERSION_ID` is only the Fedora major.
    pub fn os_release(&self) -> Result<(Family, String), FactsError> {
        let path = self.path("etc/os-release");
        let kv = key_values(&read(&path)?);
        let id = kv.get("ID").map(String::as_str).unwrap_or("");
        let variant = kv.get("VARIANT_ID").map(String::as_str).unwrap_or("");
        let family = match (id, variant) {
            ("flatcar", _) => Family::Flatcar,
            ("fedora", "coreos") | ("rhcos", _) => Family::CoreOs,
            _ => {
                return Err(FactsError::Malformed {
                    path,
                    detail: format!(
                        "ID={id:?} VARIANT_ID={variant:?} is neither Flatcar nor Fedora/RHEL CoreOS"
                    ),
                });
            }
        };
        let key = match family {
            Family::Flatcar => "VERSION_ID",
            Family::CoreOs => "OSTREE_VERSION",
        };
        let version = kv.get(key).cloned().unwrap_or_default();
        if version.is_empty() {
            return Err(FactsError::Malformed {
                path,
                detail: format!("{key} is missing"),
            });
        }
        Ok((family, version))
    }

    /// Flatcar's booted USR slot, from `mount.usr=`/`verity.usr=` on `/proc/cmdline`
    /// (by PARTUUID or by partition label).
    pub fn booted_slot(&self) -> Result<UsrSlot, FactsError> {
        let path = self.path("proc/cmdline");
        let cmdline = read(&path)?;
        let mut found = None;
        for word in cmdline.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            if key != "mount.usr" && key != "verity.usr" {
                continue;
            }
            let value = value.to_ascii_lowercase();
            let slot = if value.contains(USR_A_PARTUUID)
                || value.ends_with("/usr-a")
                || value == "partlabel=usr-a"
            {
                Some(UsrSlot::A)
            } else if value.contains(USR_B_PARTUUID)
                || value.ends_with("/usr-b")
                || value == "partlabel=usr-b"
            {
                Some(UsrSlot::B)
            } else {
                None
            };
            if let Some(s) = slot {
                if found.is_some_and(|f| f != s) {
                    return Err(FactsError::Malformed {
                        path,
                        detail: "mount.usr and verity.usr name different USR partitions".into(),
                    });
                }
                found = Some(s);
            }
        }
        found.ok_or_else(|| FactsError::Malformed {
            path,
            detail: "no mount.usr= or verity.usr= naming USR-A or USR-B".into(),
        })
    }

    /// The kernel's boot id (changes on every boot).
    pub fn boot_id(&self) -> Result<String, FactsError> {
        let path = self.path("proc/sys/kernel/random/boot_id");
        let id = read(&path)?.trim().to_string();
        let ok = id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        if ok {
            Ok(id)
        } else {
            Err(FactsError::Malformed {
                path,
                detail: format!("{id:?} is not a boot id"),
            })
        }
    }

    /// `GROUP` and `SERVER`: each from `/etc/flatcar/update.conf` when set there,
    /// otherwise from `/usr/share/flatcar/update.conf`. Missing files are empty.
    pub fn update_conf(&self) -> Result<UpdateConf, FactsError> {
        let mut merged = BTreeMap::new();
        for rel in [DEFAULT_UPDATE_CONF, UPDATE_CONF] {
            let path = self.path(rel);
            match std::fs::read_to_string(&path) {
                Ok(text) => merged.extend(key_values(&text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(FactsError::Io { path, source }),
            }
        }
        let pick = |k: &str| merged.get(k).filter(|v| !v.is_empty()).cloned();
        Ok(UpdateConf {
            group: pick("GROUP"),
            server: pick("SERVER"),
        })
    }

    /// Sets `GROUP` in `/etc/flatcar/update.conf`, keeping every other line and comment,
    /// and replaces the file atomically (a temporary file in the same directory, synced,
    /// then renamed over it). Creates the file if needed.
    pub fn set_group(&self, group: &str) -> Result<(), FactsError> {
        let valid = !group.is_empty()
            && group.len() <= 64
            && group
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        let path = self.path(UPDATE_CONF);
        if !valid {
            return Err(FactsError::Malformed {
                path,
                detail: format!("refusing to write GROUP={group:?}: not a channel name"),
            });
        }
        let old = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(FactsError::Io { path, source }),
        };
        let mut replaced = false;
        let mut lines: Vec<String> = old
            .lines()
            .filter_map(|l| {
                let is_group = l
                    .trim_start()
                    .split_once('=')
                    .is_some_and(|(k, _)| k.trim() == "GROUP")
                    && !l.trim_start().starts_with('#');
                if !is_group {
                    return Some(l.to_string());
                }
                if replaced {
                    None // a second GROUP line would override ours: drop it
                } else {
                    replaced = true;
                    Some(format!("GROUP={group}"))
                }
            })
            .collect();
        if !replaced {
            lines.push(format!("GROUP={group}"));
        }
        let mut text = lines.join("\n");
        text.push('\n');
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        std::fs::create_dir_all(&dir).map_err(|source| FactsError::Io {
            path: dir.clone(),
            source,
        })?;
        let io = |source| FactsError::Io {
            path: path.clone(),
            source,
        };
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io)?;
        tmp.write_all(text.as_bytes()).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        if let Ok(meta) = std::fs::metadata(&path) {
            let _ = std::fs::set_permissions(tmp.path(), meta.permissions());
        }
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        for (rel, content) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let host = Host::new(dir.path());
        (dir, host)
    }

    #[test]
    fn os_release_tells_the_family() {
        let (_d, h) = host_with(&[(
            "etc/os-release",
            "NAME=\"Flatcar Container Linux by Kinvolk\"\nID=flatcar\nVERSION_ID=4081.2.0\n",
        )]);
        assert_eq!(
            h.os_release().unwrap(),
            (Family::Flatcar, "4081.2.0".into())
        );
        let (_d, h) = host_with(&[(
            "etc/os-release",
            "ID=fedora\nVARIANT_ID=coreos\nVERSION_ID=41\nOSTREE_VERSION='41.20241109.3.0'\n",
        )]);
        assert_eq!(
            h.os_release().unwrap(),
            (Family::CoreOs, "41.20241109.3.0".into())
        );
        let (_d, h) = host_with(&[("etc/os-release", "ID=fedora\nVARIANT_ID=coreos\n")]);
        assert!(
            h.os_release()
                .unwrap_err()
                .to_string()
                .contains("OSTREE_VERSION is missing")
        );
        let (_d, h) = host_with(&[("etc/os-release", "ID=ubuntu\n")]);
        assert!(
            h.os_release()
                .unwrap_err()
                .to_string()
                .contains("neither Flatcar nor")
        );
        let (_d, h) = host_with(&[]);
        assert_eq!(h.os_release().unwrap_err().kind(), "io");
    }

    #[test]
    fn the_booted_slot_comes_from_the_kernel_command_line() {
        let (_d, h) = host_with(&[(
            "proc/cmdline",
            "BOOT_IMAGE=/flatcar/vmlinuz-a mount.usr=/dev/mapper/usr verity.usr=PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132 rootflags=rw\n",
        )]);
        assert_eq!(h.booted_slot().unwrap(), UsrSlot::A);
        let (_d, h) = host_with(&[(
            "proc/cmdline",
            "mount.usr=PARTUUID=e03dd35c-7c2d-4a47-b3fe-27f15780a57c\n",
        )]);
        assert_eq!(h.booted_slot().unwrap(), UsrSlot::B);
        let (_d, h) = host_with(&[("proc/cmdline", "mount.usr=/dev/disk/by-partlabel/USR-B\n")]);
        assert_eq!(h.booted_slot().unwrap(), UsrSlot::B);
        let (_d, h) = host_with(&[("proc/cmdline", "root=/dev/sda1\n")]);
        assert!(
            h.booted_slot()
                .unwrap_err()
                .to_string()
                .contains("no mount.usr=")
        );
        let (_d, h) = host_with(&[(
            "proc/cmdline",
            "mount.usr=/dev/disk/by-partlabel/USR-A verity.usr=PARTUUID=e03dd35c-7c2d-4a47-b3fe-27f15780a57c\n",
        )]);
        assert!(
            h.booted_slot()
                .unwrap_err()
                .to_string()
                .contains("different USR partitions")
        );
    }

    #[test]
    fn update_conf_falls_back_key_by_key() {
        let (_d, h) = host_with(&[
            (
                "usr/share/flatcar/update.conf",
                "SERVER=https://public.update.flatcar-linux.net/v1/update/\nGROUP=stable\n",
            ),
            ("etc/flatcar/update.conf", "# ours\nGROUP=beta\n"),
        ]);
        assert_eq!(
            h.update_conf().unwrap(),
            UpdateConf {
                group: Some("beta".into()),
                server: Some("https://public.update.flatcar-linux.net/v1/update/".into())
            }
        );
        let (_d, h) = host_with(&[]);
        assert_eq!(h.update_conf().unwrap(), UpdateConf::default());
    }

    #[test]
    fn setting_the_group_keeps_other_lines_and_comments() {
        let (d, h) = host_with(&[(
            "etc/flatcar/update.conf",
            "# managed by ignition\nSERVER=http://omaha.local/v1/update/\nGROUP=stable\n# trailing comment\nGROUP=alpha\n",
        )]);
        h.set_group("beta").unwrap();
        let text = std::fs::read_to_string(d.path().join(UPDATE_CONF)).unwrap();
        assert_eq!(
            text,
            "# managed by ignition\nSERVER=http://omaha.local/v1/update/\nGROUP=beta\n# trailing comment\n"
        );
        assert_eq!(h.update_conf().unwrap().group.as_deref(), Some("beta"));
        // No temporary files left behind.
        assert_eq!(
            std::fs::read_dir(d.path().join("etc/flatcar"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn setting_the_group_creates_the_file_and_refuses_garbage() {
        let (d, h) = host_with(&[]);
        h.set_group("lts").unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join(UPDATE_CONF)).unwrap(),
            "GROUP=lts\n"
        );
        assert!(h.set_group("beta\nSERVER=http://evil").is_err());
        assert!(h.set_group("").is_err());
        assert_eq!(
            std::fs::read_to_string(d.path().join(UPDATE_CONF)).unwrap(),
            "GROUP=lts\n"
        );
    }

    #[test]
    fn boot_ids_are_checked() {
        let (_d, h) = host_with(&[(
            "proc/sys/kernel/random/boot_id",
            "0f1e2d3c-aaaa-bbbb-cccc-0123456789ab\n",
        )]);
        assert_eq!(h.boot_id().unwrap(), "0f1e2d3c-aaaa-bbbb-cccc-0123456789ab");
        let (_d, h) = host_with(&[("proc/sys/kernel/random/boot_id", "nope\n")]);
        assert_eq!(h.boot_id().unwrap_err().kind(), "malformed");
    }
}
