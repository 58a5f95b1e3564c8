//! Who may touch hints directly. The pinned maps are root's alone: a raw
//! map cannot check who writes which key, so every other user goes through
//! the hint service and its rules, where `--hint-group` names the group
//! whose members may raise threads above un-hinted work.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// A group name, or a numeric gid, to (name, gid).
pub fn resolve_group(group: &str) -> Result<(String, u32)> {
    let name = CString::new(group).context("group name with a NUL byte")?;
    // SAFETY: getgrnam returns NULL or a pointer into static storage that we
    // read at once.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    if !gr.is_null() {
        return Ok((group.to_string(), unsafe { (*gr).gr_gid }));
    }
    let gid = group.parse::<u32>().map_err(|_| {
        anyhow::anyhow!("no group named '{group}' (--hint-group takes a group name or gid)")
    })?;
    // SAFETY: as above.
    let gr = unsafe { libc::getgrgid(gid) };
    let name = if gr.is_null() {
        group.to_string()
    } else {
        // SAFETY: a NUL-terminated name in static storage.
        unsafe { std::ffi::CStr::from_ptr((*gr).gr_name) }
            .to_string_lossy()
            .into_owned()
    };
    Ok((name, gid))
}

fn chown_root(path: &Path, mode: u32) -> Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: a valid C string.
    if unsafe { libc::chown(c.as_ptr(), 0, 0) } != 0 {
        bail!(
            "cannot give {} to root: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// Make the pin folder root's alone (0700) and every pin in it 0600, undoing
/// what an older scx_phase's `--hint-group` opened to a group.
pub fn lock_down(pin_dir: &Path) -> Result<()> {
    chown_root(pin_dir, 0o700)?;
    for entry in
        std::fs::read_dir(pin_dir).with_context(|| format!("cannot list {}", pin_dir.display()))?
    {
        let path = entry?.path();
        if path.is_file() {
            chown_root(&path, 0o600)?;
        }
    }
    Ok(())
}
