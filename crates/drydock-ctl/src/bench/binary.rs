//! Which build of a binary a run measured: the container images ship statically linked
//! (musl) binaries, a plain `cargo build` makes dynamically linked (glibc) ones, and the
//! two allocators hold memory differently. A run's memory figures name the build they
//! belong to.

use std::io::Read;
use std::path::Path;

/// How a binary is linked, read from its ELF program headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    /// No program interpreter: everything, the C library and its allocator included, is
    /// in the binary (the images' musl builds).
    Static,
    /// Loaded by a program interpreter against the system's shared C library.
    Dynamic,
}

impl Linkage {
    /// The name the results use.
    pub fn as_str(self) -> &'static str {
        match self {
            Linkage::Static => "static",
            Linkage::Dynamic => "dynamic",
        }
    }
}

/// ELF program header type of the interpreter's path.
const PT_INTERP: u32 = 3;

/// The linkage of the 64-bit little-endian ELF image `elf` (its first bytes, up to the
/// end of its program headers), or what is wrong with it.
pub fn linkage_of(elf: &[u8]) -> Result<Linkage, String> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file".to_string());
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".to_string());
    }
    let u16_at = |at: usize| -> Result<u64, String> {
        elf.get(at..at + 2)
            .map(|b| u64::from(u16::from_le_bytes([b[0], b[1]])))
            .ok_or_else(|| format!("cut short at byte {at}"))
    };
    let phoff = elf
        .get(0x20..0x28)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .ok_or("cut short in the ELF header")?;
    let entsize = u16_at(0x36)?;
    let count = u16_at(0x38)?;
    for i in 0..count {
        let at = usize::try_from(phoff + i * entsize)
            .map_err(|_| "program headers beyond the address space".to_string())?;
        let kind = elf
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| format!("program header {i} cut short at byte {at}"))?;
        if kind == PT_INTERP {
            return Ok(Linkage::Dynamic);
        }
    }
    Ok(Linkage::Static)
}

/// The linkage of the binary at `path`, or what went wrong reading it.
pub fn linkage(path: &Path) -> Result<Linkage, String> {
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut head))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    linkage_of(&head).map_err(|e| format!("{}: {e}", path.display()))
}

/// A binary's path and linkage as the results record them.
pub fn describe(path: &Path) -> serde_json::Value {
    serde_json::json!({
        "path": path.display().to_string(),
        "linkage": match linkage(path) {
            Ok(l) => serde_json::Value::from(l.as_str()),
            Err(e) => serde_json::Value::from(format!("unknown ({e})")),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header with program headers of the given types.
    fn elf(types: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for t in types {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            b.extend(ph);
        }
        b
    }

    #[test]
    fn an_interpreter_header_makes_a_binary_dynamic_and_its_absence_static() {
        assert_eq!(linkage_of(&elf(&[6, 3, 1])), Ok(Linkage::Dynamic));
        assert_eq!(linkage_of(&elf(&[6, 1, 2])), Ok(Linkage::Static));
        assert_eq!(linkage_of(&elf(&[])), Ok(Linkage::Static));
    }

    #[test]
    fn a_garbled_file_is_named_for_what_is_wrong() {
        assert_eq!(
            linkage_of(b"#!/bin/sh\n"),
            Err("not an ELF file".to_string())
        );
        let mut e = elf(&[1]);
        e[4] = 1;
        assert_eq!(
            linkage_of(&e),
            Err("not a 64-bit little-endian ELF file".to_string())
        );
        let e = elf(&[1, 3]);
        let cut = &e[..64 + 56 + 2];
        assert_eq!(
            linkage_of(cut),
            Err("program header 1 cut short at byte 120".to_string())
        );
        assert_eq!(
            linkage_of(&e[..0x30]),
            Err("cut short at byte 54".to_string())
        );
    }

    #[test]
    fn this_test_binary_is_read_as_the_build_made_it() {
        let me = std::env::current_exe().expect("own path");
        let expected = if cfg!(target_env = "musl") {
            Linkage::Static
        } else {
            Linkage::Dynamic
        };
        assert_eq!(linkage(&me), Ok(expected));
        let d = describe(&me);
        assert_eq!(d["linkage"], expected.as_str());
        let missing = describe(Path::new("/nonexistent/drydock-operator"));
        assert!(
            missing["linkage"]
                .as_str()
                .is_some_and(|s| s.starts_with("unknown (/nonexistent/drydock-operator: ")),
            "{missing}"
        );
    }
}
