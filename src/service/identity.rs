//! Who a client is and which thread a pidfd names, as the kernel says:
//! `SO_PEERCRED`, `SO_PEERGROUPS` and `SO_PEERPIDFD` on the socket, and
//! `/proc` read while a pidfd holds the task, then checked to be still
//! alive, so that a recycled pid can never lend its identity. Nothing here
//! comes from what the client sends.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use scx_phase::sys;

use super::quota::Tenant;

/// A namespace, as its nsfs inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

impl NsId {
    fn of_path(path: &str) -> io::Result<NsId> {
        let m = fs::metadata(path)?;
        Ok(NsId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    fn of_fd(fd: BorrowedFd<'_>) -> io::Result<NsId> {
        // SAFETY: fstat into a zeroed stat we own.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NsId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

/// The user charged for what `pid` holds: its effective uid if it lives in
/// our user namespace; else the owner of the namespace just below ours
/// that holds it (whoever created it: the user running a rootless
/// container, whose processes run as that user's subordinate uids). On
/// any error, `euid`.
fn owner_uid(pid: u32, euid: u32, ours: NsId) -> u32 {
    // From <linux/nsfs.h>: _IO(0xb7, 2) and _IO(0xb7, 4).
    const NS_GET_PARENT: libc::c_ulong = 0xb702;
    const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
    let Ok(file) = fs::File::open(format!("/proc/{pid}/ns/user")) else {
        return euid;
    };
    let mut ns = OwnedFd::from(file);
    // Namespaces nest at most 32 deep.
    for _ in 0..33 {
        if NsId::of_fd(ns.as_fd()).is_ok_and(|id| id == ours) {
            return euid;
        }
        // SAFETY: an ioctl on an fd we own; it returns a new fd or -1.
        let parent = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_PARENT as _) };
        if parent < 0 {
            return euid;
        }
        // SAFETY: the kernel installed a fresh fd for us.
        let parent = unsafe { OwnedFd::from_raw_fd(parent) };
        if NsId::of_fd(parent.as_fd()).is_ok_and(|id| id == ours) {
            let mut uid: libc::uid_t = euid;
            // SAFETY: the ioctl writes one uid_t into ours.
            let r = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_OWNER_UID as _, &mut uid) };
            return if r == 0 { uid } else { euid };
        }
        ns = parent;
    }
    euid
}

/// The cgroup charged for a process in cgroup `id` (quota.rs): none (0)
/// for the root cgroup. A host without cgroup v2 (or without systemd)
/// keeps every process there, and charging it would make all users one
/// tenant.
pub fn charged_cgroup(id: u64) -> u64 {
    static ROOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    if id == *ROOT.get_or_init(|| cgroup_id("/")) {
        0
    } else {
        id
    }
}

/// Capability bits of /proc/PID/status CapEff.
pub const CAP_KILL: u32 = 5;
pub const CAP_SYS_NICE: u32 = 23;

/// Fields of /proc/PID/status that identify a task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub tgid: u32,
    /// Real, effective, saved and filesystem uids, and gids.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    pub cap_eff: u64,
    /// Its pid in each PID namespace from ours down to its own.
    pub nspid: Vec<u32>,
}

fn ids(v: &str) -> Vec<u32> {
    v.split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect()
}

impl Status {
    pub fn parse(text: &str) -> io::Result<Status> {
        let mut st = Status::default();
        for line in text.lines() {
            let Some((key, v)) = line.split_once(':') else {
                continue;
            };
            match key {
                "Tgid" => st.tgid = v.trim().parse().unwrap_or(0),
                "Uid" => {
                    if let [r, e, s, f] = ids(v)[..] {
                        st.uids = [r, e, s, f];
                    }
                }
                "Gid" => {
                    if let [r, e, s, f] = ids(v)[..] {
                        st.gids = [r, e, s, f];
                    }
                }
                "Groups" => st.groups = ids(v),
                "CapEff" => st.cap_eff = u64::from_str_radix(v.trim(), 16).unwrap_or(0),
                "NSpid" => st.nspid = ids(v),
                _ => {}
            }
        }
        if st.tgid == 0 || st.nspid.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unreadable /proc status",
            ));
        }
        Ok(st)
    }

    fn read(tid: u32) -> io::Result<Status> {
        Status::parse(&fs::read_to_string(format!("/proc/{tid}/status"))?)
    }

    pub fn has_cap(&self, cap: u32) -> bool {
        self.cap_eff & (1 << cap) != 0
    }

    /// How many PID namespaces below ours it lives in.
    pub fn depth(&self) -> usize {
        self.nspid.len() - 1
    }
}

/// The start time of process `pid` (field 22 of /proc/PID/stat, in clock
/// ticks after boot): with the pid, it names one process for good.
pub fn start_time(pid: u32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(22 - 3)?.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc stat"))
}

/// The cgroup v2 path of `pid`, if it can be read: the one reader of
/// /proc/PID/cgroup, for identity, pressure watches, `status` and `dump`.
pub fn cgroup_of(pid: u32) -> Option<String> {
    cgroup_v2_path(&fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

/// The v2 path in a /proc/PID/cgroup text: its "0::/path" line.
fn cgroup_v2_path(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
}

/// The id of a cgroup v2 path (its inode in cgroupfs), or 0.
fn cgroup_id(path: &str) -> u64 {
    fs::metadata(format!("/sys/fs/cgroup{path}")).map_or(0, |m| m.ino())
}

fn sockopt<T>(sock: BorrowedFd<'_>, opt: i32, out: &mut T) -> io::Result<libc::socklen_t> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `out` has room for `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (out as *mut T).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len)
}

/// An error that says a client's credentials changed since it connected.
fn changed(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("refused: your credentials changed since you connected ({what}): connect again"),
    )
}

/// The supplementary groups of the peer of `sock`, all of them.
fn peer_groups(sock: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut gids = vec![0u32; 256];
    loop {
        let mut len = (gids.len() * 4) as libc::socklen_t;
        // SAFETY: `gids` has room for `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                gids.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r == 0 {
            gids.truncate(len as usize / 4);
            return Ok(gids);
        }
        let e = io::Error::last_os_error();
        // More groups than room: the kernel said how many (up to
        // NGROUPS_MAX). Never count the room's zeros as gid 0.
        if e.raw_os_error() != Some(libc::ERANGE) || len as usize <= gids.len() * 4 {
            return Err(e);
        }
        gids = vec![0u32; len as usize / 4];
    }
}

/// A connected client, as the kernel reported it at connect time.
#[derive(Debug)]
pub struct Peer {
    /// Its process, in our PID namespace.
    pub pid: u32,
    /// Effective uid and gid, and supplementary groups, at connect.
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub status: Status,
    pub start_time: u64,
    pub pidns: NsId,
    /// Whether it lives in our user namespace (where its capabilities
    /// count for every task).
    pub our_userns: bool,
    pub userns: NsId,
    /// Who is charged for what it holds: `owner_uid()`, and its cgroup
    /// (`charged_cgroup()`).
    pub tenant: Tenant,
    pub cgroup_id: u64,
    /// A pidfd for its process, which keeps the pid from naming anyone else.
    pub pidfd: OwnedFd,
}

impl Peer {
    pub fn of(sock: BorrowedFd<'_>) -> io::Result<Peer> {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        sockopt(sock, libc::SO_PEERCRED, &mut cred)?;
        let pid = u32::try_from(cred.pid)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
        let groups = peer_groups(sock)?;
        let mut raw: i32 = -1;
        // From the socket, never pidfd_open(pid): the pid may name another
        // process by now. Every kernel with sched_ext has it (6.5).
        let pidfd = match sockopt(sock, libc::SO_PEERPIDFD, &mut raw) {
            // SAFETY: the kernel installed a fresh pidfd for us.
            Ok(_) if raw >= 0 => unsafe { OwnedFd::from_raw_fd(raw) },
            Ok(_) => return Err(io::Error::from_raw_os_error(libc::ESRCH)),
            Err(e) => return Err(e),
        };
        let status = Status::read(pid)?;
        // Its credentials now must be those it connected with: a process
        // that connects, then execs a setuid program before we accept,
        // would otherwise be judged by that program's rights.
        let same_groups = {
            let (mut a, mut b) = (groups.clone(), status.groups.clone());
            a.sort_unstable();
            b.sort_unstable();
            a == b
        };
        if status.uids[1] != cred.uid || status.gids[1] != cred.gid || !same_groups {
            return Err(changed(format!(
                "uid {} gid {} at connect, {} {} now",
                cred.uid, cred.gid, status.uids[1], status.gids[1]
            )));
        }
        let start_time = start_time(pid)?;
        let pidns = NsId::of_path(&format!("/proc/{pid}/ns/pid"))?;
        let userns = NsId::of_path(&format!("/proc/{pid}/ns/user"))?;
        let ours = NsId::of_path("/proc/self/ns/user")?;
        let our_userns = userns == ours;
        let cgroup_id = cgroup_id(&cgroup_of(pid).unwrap_or_default());
        let tenant = Tenant {
            uid: owner_uid(pid, cred.uid, ours),
            cgroup: charged_cgroup(cgroup_id),
        };
        // Everything above was read while the pidfd held the process: if it
        // is still alive, the pid named it all along.
        if !sys::pidfd_alive(pidfd.as_fd()) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(Peer {
            pid,
            uid: cred.uid,
            gid: cred.gid,
            groups,
            status,
            start_time,
            pidns,
            our_userns,
            userns,
            tenant,
            cgroup_id,
            pidfd,
        })
    }

    /// Ok if its credentials are still those it was judged by (uids,
    /// gids, groups, capabilities), else why not. Read from /proc at each
    /// request, while its pidfd holds the process: an exec of a setuid
    /// program, leaving a group or dropping a capability ends what the
    /// connection may do.
    pub fn unchanged(&self) -> Result<(), String> {
        let now = Status::read(self.pid)
            .ok()
            .filter(|_| sys::pidfd_alive(self.pidfd.as_fd()))
            .ok_or_else(|| "refused: your process is gone".to_string())?;
        let then = &self.status;
        if now.uids == then.uids
            && now.gids == then.gids
            && now.groups == then.groups
            && now.cap_eff == then.cap_eff
        {
            return Ok(());
        }
        Err(format!(
            "refused: your credentials changed since you connected (uids {:?} then, {:?} now; capabilities {:#x} then, {:#x} now): connect again",
            then.uids, now.uids, then.cap_eff, now.cap_eff
        ))
    }

    /// Whether it holds `cap` over every task (in our user namespace).
    pub fn capable(&self, cap: u32) -> bool {
        self.our_userns && self.status.has_cap(cap)
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// A thread named by a pidfd that a client sent.
#[derive(Debug)]
pub struct Target {
    /// Its id in our PID namespace.
    pub tid: u32,
    pub status: Status,
    /// Its user namespace, if we may look (some tasks hide theirs).
    pub userns: Option<NsId>,
}

/// The pid a pidfd refers to, from its fdinfo: Some(0) if it is dead or
/// outside our PID namespace, None if the fd is not a pidfd.
fn pidfd_pid(fd: BorrowedFd<'_>) -> io::Result<Option<i64>> {
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok()))
}

impl Target {
    pub fn of(pidfd: BorrowedFd<'_>) -> io::Result<Target> {
        let tid = match pidfd_pid(pidfd)? {
            None => return Err(io::Error::from_raw_os_error(libc::EBADF)),
            Some(p) if p <= 0 => return Err(io::Error::from_raw_os_error(libc::ESRCH)),
            Some(p) => p as u32,
        };
        let status = Status::read(tid)?;
        let userns = NsId::of_path(&format!("/proc/{tid}/ns/user")).ok();
        if !sys::pidfd_alive(pidfd) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(Target {
            tid,
            status,
            userns,
        })
    }

    /// Whether it lives in `peer`'s PID namespace or one below it: walk up
    /// from its namespace to the peer's depth and compare.
    pub fn visible_to(&self, peer: &Peer, pidfd: BorrowedFd<'_>) -> io::Result<bool> {
        let (mine, theirs) = (self.status.depth(), peer.status.depth());
        if mine < theirs {
            return Ok(false);
        }
        // A client in our own PID namespace sees every task we see.
        if theirs == 0 {
            return Ok(sys::pidfd_alive(pidfd));
        }
        let path = sys::c_path(std::path::Path::new(&format!("/proc/{}/ns/pid", self.tid)))?;
        // SAFETY: open(2) of a valid C string.
        let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd.
        let mut ns = unsafe { OwnedFd::from_raw_fd(raw) };
        for _ in theirs..mine {
            // SAFETY: NS_GET_PARENT returns a fresh fd or -1.
            let parent = unsafe { libc::ioctl(ns.as_raw_fd(), libc::NS_GET_PARENT) };
            if parent < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh fd.
            ns = unsafe { OwnedFd::from_raw_fd(parent) };
        }
        let same = NsId::of_fd(ns.as_fd())? == peer.pidns;
        // The namespace was read from /proc/TID: still the same thread?
        Ok(same && sys::pidfd_alive(pidfd))
    }
}

/// A kernel feature that identifying clients needs, with the release
/// that brought it.
#[derive(Debug, PartialEq, Eq)]
pub struct Need {
    pub name: &'static str,
    pub since: &'static str,
    pub why: &'static str,
}

pub const PEER_PIDFD: Need = Need {
    name: "SO_PEERPIDFD",
    since: "6.5",
    why: "a pidfd for the client from the socket itself, so a reused pid never passes for it",
};

pub const THREAD_PIDFD: Need = Need {
    name: "PIDFD_THREAD",
    since: "6.9",
    why: "a pidfd for one thread, the key of its hint",
};

/// The features this kernel lacks, asked of the kernel itself: a pidfd
/// for this thread, and SO_PEERPIDFD on a socket pair.
pub fn kernel_lacks() -> Vec<&'static Need> {
    let thread = sys::pidfd_open(sys::gettid(), true).map(drop);
    let peer = (|| {
        let mut fds = [-1; 2];
        // SAFETY: room for two fds, which we own from here on.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        let (a, _b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut raw: i32 = -1;
        sockopt(a.as_fd(), libc::SO_PEERPIDFD, &mut raw)?;
        // SAFETY: the kernel installed a fresh pidfd for us.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
        Ok(())
    })();
    lacks(thread, peer)
}

/// Only the errors that mean "no such feature" count: another failure
/// (out of fds) says nothing about the kernel.
fn lacks(thread: io::Result<()>, peer: io::Result<()>) -> Vec<&'static Need> {
    let missing =
        |r: &io::Result<()>, errno| matches!(r, Err(e) if e.raw_os_error() == Some(errno));
    let mut out = Vec::new();
    if missing(&peer, libc::ENOPROTOOPT) {
        out.push(&PEER_PIDFD);
    }
    if missing(&thread, libc::EINVAL) {
        out.push(&THREAD_PIDFD);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup_is_the_v2_line_of_proc_pid_cgroup() {
        assert_eq!(
            cgroup_v2_path("12:cpu:/v1\n0::/system.slice/a.service\n").as_deref(),
            Some("/system.slice/a.service")
        );
        assert_eq!(cgroup_v2_path("1:name=systemd:/x\n"), None);
    }

    #[test]
    fn status_parses_the_fields_that_identify_a_task() {
        let text = "Name:\tpython3\nTgid:\t812\nPid:\t815\nUid:\t1000\t1000\t1001\t1000\n\
                    Gid:\t100\t101\t102\t103\nGroups:\t4242 27 \n\
                    CapEff:\t0000000000800020\nNSpid:\t815\t7\n";
        let st = Status::parse(text).unwrap();
        assert_eq!(st.tgid, 812);
        assert_eq!(st.uids, [1000, 1000, 1001, 1000]);
        assert_eq!(st.gids, [100, 101, 102, 103]);
        assert_eq!(st.groups, vec![4242, 27]);
        assert!(st.has_cap(CAP_KILL) && st.has_cap(CAP_SYS_NICE));
        assert_eq!(st.nspid, vec![815, 7]);
        assert_eq!(st.depth(), 1);
        assert!(Status::parse("Name:\tx\n").is_err());
    }

    #[test]
    fn this_kernel_has_what_the_service_needs() {
        assert_eq!(kernel_lacks(), Vec::<&Need>::new());
    }

    #[test]
    fn a_kernel_that_refuses_the_flags_lacks_them_and_other_errors_say_nothing() {
        let err = |e| Err(io::Error::from_raw_os_error(e));
        assert_eq!(
            lacks(err(libc::EINVAL), err(libc::ENOPROTOOPT)),
            [&PEER_PIDFD, &THREAD_PIDFD]
        );
        assert_eq!(lacks(Ok(()), err(libc::ENOPROTOOPT)), [&PEER_PIDFD]);
        assert!(lacks(err(libc::EMFILE), err(libc::EMFILE)).is_empty());
    }

    #[test]
    fn a_peer_whose_credentials_did_not_change_is_unchanged() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let peer = Peer::of(a.as_fd()).unwrap();
        assert_eq!(peer.pid, std::process::id());
        assert_eq!(peer.unchanged(), Ok(()));
        let mut groups = peer.groups.clone();
        groups.sort_unstable();
        let mut seen = peer.status.groups.clone();
        seen.sort_unstable();
        assert_eq!(groups, seen, "SO_PEERGROUPS and /proc agree");
    }

    #[test]
    fn our_own_process_reads_back() {
        let me = std::process::id();
        let st = Status::read(me).unwrap();
        assert_eq!(st.tgid, me);
        assert!(start_time(me).unwrap() > 0);
        let pidfd = sys::pidfd_open(sys::gettid(), true).unwrap();
        let t = Target::of(pidfd.as_fd()).unwrap();
        assert_eq!(t.tid, sys::gettid() as u32);
        assert_eq!(t.status.tgid, me);
    }
}
