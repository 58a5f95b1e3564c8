//! Who may hint: `--hint-group` opens the pin folder and the phase map to
//! one group.
//!
//! Opening a pinned map is a file-permission check on bpffs (search on
//! every folder up to the pin, read and write on the pin). Since Linux
//! 6.5, `kernel.unprivileged_bpf_disabled` only gates creating maps and
//! loading programs, so a group member needs no capability to open and
//! update the map even with it set; older kernels refuse every bpf() call
//! of a process without CAP_BPF when it is set.

use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use log::warn;

/// A group name, or a numeric gid, to a gid.
pub fn resolve_group(group: &str) -> Result<u32> {
    let name = CString::new(group).context("group name with a NUL byte")?;
    // SAFETY: getgrnam returns NULL or a pointer into static storage that we
    // read at once.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    if !gr.is_null() {
        return Ok(unsafe { (*gr).gr_gid });
    }
    group.parse::<u32>().map_err(|_| {
        anyhow::anyhow!("no group named '{group}' (--hint-group takes a group name or gid)")
    })
}

fn chown_group(path: &Path, gid: u32, mode: u32) -> Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: valid C string; uid -1 leaves the owner unchanged.
    if unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) } != 0 {
        bail!(
            "cannot give {} to gid {gid}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// Make the pin folder (0750) and the map (0660) belong to `gid`, and warn
/// if a folder above them would still stop the group.
pub fn open_to_group(pin_dir: &Path, map: &Path, gid: u32) -> Result<()> {
    chown_group(pin_dir, gid, 0o750)?;
    chown_group(map, gid, 0o660)?;
    for dir in pin_dir.ancestors().skip(1) {
        if let Ok(m) = std::fs::metadata(dir)
            && m.mode() & 0o001 == 0
            && !(m.gid() == gid && m.mode() & 0o010 != 0)
        {
            warn!(
                "{} (mode {:o}) keeps gid {gid} out of {}: chmod o+x {}",
                dir.display(),
                m.mode() & 0o7777,
                pin_dir.display(),
                dir.display()
            );
        }
    }
    Ok(())
}
