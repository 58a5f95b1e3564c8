//! Safe wrappers over the Linux calls the hint library and the hint
//! service share: pidfds, passing one fd over a Unix socket, and shared
//! mappings. Each returns `io::Result` with the errno of the call.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The calling thread's id, in its own PID namespace.
pub fn gettid() -> i32 {
    // SAFETY: gettid never fails.
    unsafe { libc::gettid() }
}

/// A pidfd for `pid` as numbered in the caller's PID namespace: for that
/// one thread with `thread` (Linux 6.9+), else for the process it leads.
pub fn pidfd_open(pid: i32, thread: bool) -> io::Result<OwnedFd> {
    let flags = if thread { libc::PIDFD_THREAD } else { 0 };
    // SAFETY: a plain system call with integer arguments.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) })?;
    // SAFETY: a fresh fd (close-on-exec, as every pidfd) owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether the task behind `pidfd` is still alive (signal 0 through it).
pub fn pidfd_alive(pidfd: BorrowedFd<'_>) -> bool {
    // SAFETY: signal 0 only checks; null info is allowed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    // EPERM means alive but not ours to signal.
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether the task of `pidfd` has exited: its pidfd reads as readable,
/// as epoll reported it. A process exited when its last thread did, even
/// while it waits to be reaped (a zombie still takes signal 0, so
/// [`pidfd_alive`] says alive); a `PIDFD_THREAD` pidfd, when its thread
/// exited.
pub fn pidfd_exited(pidfd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & (libc::POLLIN | libc::POLLHUP) != 0
}

/// A connected `SOCK_SEQPACKET` Unix socket (close-on-exec).
pub fn seqpacket_connect(path: &Path) -> io::Result<OwnedFd> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain socket(2).
    let fd =
        check(
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) }
                as libc::c_long,
        )?;
    // SAFETY: a fresh fd.
    let sock = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_un of `len` bytes.
    check(unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    } as libc::c_long)?;
    Ok(sock)
}

/// Make blocking sends and receives on `sock` fail with EAGAIN after `d`.
pub fn set_timeouts(sock: BorrowedFd<'_>, d: std::time::Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: a valid timeval of the size given.
        check(unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        } as libc::c_long)?;
    }
    Ok(())
}

/// Room for one fd in a control message.
const CMSG_ONE_FD: usize = 24;

/// Send `data` as one message, with `fd` attached if given.
pub fn send_with_fd(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fd: Option<BorrowedFd<'_>>,
    flags: i32,
) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cbuf = [0u64; CMSG_ONE_FD / 8];
    // SAFETY: msghdr is plain data; the pointers below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: cbuf has room for CMSG_SPACE(sizeof(int)) and is aligned.
        unsafe {
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd.as_raw_fd());
        }
    }
    // SAFETY: msg describes valid buffers.
    let n = check(
        unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags | libc::MSG_NOSIGNAL) }
            as libc::c_long,
    )?;
    Ok(n as usize)
}

/// One received message.
pub struct Received {
    /// Bytes of the message (it was longer than the buffer if `truncated`).
    pub len: usize,
    /// Every fd that came with it, in order.
    pub fds: Vec<OwnedFd>,
    pub truncated: bool,
}

/// The most fds one message can carry (the kernel's SCM_MAX_FD).
const SCM_MAX_FD: usize = 253;
/// Room for SCM_MAX_FD fds in a control message: a 16-byte header and
/// 253 ints, rounded up to 8 bytes.
const CMSG_MAX_FDS: usize = 16 + (SCM_MAX_FD * 4).next_multiple_of(8);

/// Receive one message into `buf` with every fd it carries (close-on-exec).
///
/// The control buffer holds as many fds as a message can carry: with less
/// room the kernel drops the rest, and dropping a file runs its last close
/// in the caller's thread, which may block (a socket with SO_LINGER).
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8], flags: i32) -> io::Result<Received> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; CMSG_MAX_FDS / 8];
    // SAFETY: plain data; the pointers outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_MAX_FDS;
    // SAFETY: msg describes valid buffers.
    let n =
        check(
            unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags | libc::MSG_CMSG_CLOEXEC) }
                as libc::c_long,
        )?;
    let mut fds = Vec::new();
    // SAFETY: walking the control buffer the kernel just filled.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<i32>();
                let count = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Received {
        len: n as usize,
        fds,
        truncated: msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0,
    })
}

/// Whether `fd` is a pidfd, from the name of its file in /proc/self/fd:
/// a readlink runs no operation of the file itself, where fdinfo, fstat or
/// fstatfs of a file a client sent could wait on its driver or daemon.
pub fn is_pidfd(fd: BorrowedFd<'_>) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|p| p.as_os_str() == "anon_inode:[pidfd]")
}

/// A memfd of `len` bytes, close-on-exec, named `name` (shown in
/// /proc/PID/maps as /memfd:NAME).
pub fn memfd(name: &str, len: u64) -> io::Result<OwnedFd> {
    let cname = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: memfd_create with a valid name; the fd is ours.
    let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just created, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ftruncate of our own memfd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// The size of `fd`, if it is a memfd; None for any other file. Both
/// questions are asked without running an operation of the file's own
/// filesystem: F_GET_SEALS answers only for shmem and hugetlbfs files
/// (EINVAL for others, FUSE included), and then the name in /proc/self/fd
/// tells a memfd from a file of a tmpfs; fstat of either is memory only.
pub fn memfd_size(fd: BorrowedFd<'_>) -> Option<u64> {
    // SAFETY: fcntl on an fd we hold.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) } < 0 {
        return None;
    }
    let name = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    if !name.to_string_lossy().starts_with("/memfd:") {
        return None;
    }
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat into our buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded.
    Some(unsafe { st.assume_init() }.st_size as u64)
}

/// A shared, writable mapping of a file (a BPF array map's memory, a
/// locked checkpoint buffer). Unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; access goes through atomics.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Map `len` bytes of `fd` from offset 0, shared, read-write.
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh shared mapping; the kernel checks fd and len.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Map `len` bytes of `fd` shared and read-only, its pages read in
    /// and locked in memory (mlock): they stay resident, whoever else maps
    /// them, until this mapping goes.
    pub fn locked(fd: BorrowedFd<'_>, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh shared mapping; the kernel checks fd and len.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let m = Mapping {
            ptr: ptr.cast(),
            len,
        };
        // SAFETY: the region just mapped.
        if unsafe { libc::mlock(ptr, len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(m)
    }

    /// Fault every page in for writing now, so that the pages are
    /// allocated (and charged to a cgroup) by this process.
    pub fn populate(&self) -> io::Result<()> {
        // SAFETY: madvise on our own mapping.
        if unsafe { libc::madvise(self.ptr.cast(), self.len, libc::MADV_POPULATE_WRITE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The 8-byte word at `index`, or None past the end.
    pub fn word(&self, index: usize) -> Option<&std::sync::atomic::AtomicU64> {
        let off = index.checked_mul(8)?;
        if off + 8 > self.len {
            return None;
        }
        // SAFETY: in bounds, 8-aligned (mmap is page-aligned), and shared
        // memory is only ever accessed atomically through this type.
        Some(unsafe { &*(self.ptr.add(off) as *const std::sync::atomic::AtomicU64) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the region mmap returned.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A path as a C string, or EINVAL.
pub fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Look `key` up in the BPF map behind `map`; None if absent. `V` must be
/// the map's plain-data value type.
pub fn map_lookup<K: Copy, V: Copy + plain::Plain>(
    map: BorrowedFd<'_>,
    key: &K,
) -> io::Result<Option<V>> {
    // SAFETY: Plain types are valid for any bit pattern, zero included.
    let mut value: V = unsafe { std::mem::zeroed() };
    // SAFETY: key and value point to live values of the map's sizes.
    let r = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_lookup_elem(
            map.as_raw_fd(),
            (key as *const K).cast(),
            (&mut value as *mut V).cast(),
        )
    };
    match r {
        0 => Ok(Some(value)),
        r if -r == libc::ENOENT => Ok(None),
        r => Err(io::Error::from_raw_os_error(-r)),
    }
}

/// Write `value` under `key` in the BPF map behind `map`.
pub fn map_update<K: Copy, V: Copy>(map: BorrowedFd<'_>, key: &K, value: &V) -> io::Result<()> {
    // SAFETY: as in map_lookup.
    let r = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_update_elem(
            map.as_raw_fd(),
            (key as *const K).cast(),
            (value as *const V).cast(),
            libbpf_rs::libbpf_sys::BPF_ANY as u64,
        )
    };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(-r));
    }
    Ok(())
}

/// The CPUs a per-CPU map holds a value for (the possible ones).
pub fn possible_cpus() -> io::Result<usize> {
    // SAFETY: a libbpf query without arguments.
    let n = unsafe { libbpf_rs::libbpf_sys::libbpf_num_possible_cpus() };
    usize::try_from(n).map_err(|_| io::Error::from_raw_os_error(-n))
}

/// Each CPU's value under `key` in the per-CPU map behind `map` (empty if
/// absent). `V` must be the map's plain-data value type.
pub fn percpu_lookup<K: Copy, V: Copy + Default + plain::Plain>(
    map: BorrowedFd<'_>,
    key: &K,
) -> io::Result<Vec<V>> {
    // The kernel lays the values out 8-byte aligned, one per possible CPU.
    let stride = std::mem::size_of::<V>().next_multiple_of(8);
    let mut buf = vec![0u8; stride * possible_cpus()?];
    // SAFETY: a per-CPU lookup writes stride bytes per possible CPU.
    let r = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_lookup_elem(
            map.as_raw_fd(),
            (key as *const K).cast(),
            buf.as_mut_ptr().cast(),
        )
    };
    match r {
        0 => {}
        r if -r == libc::ENOENT => return Ok(Vec::new()),
        r => return Err(io::Error::from_raw_os_error(-r)),
    }
    buf.chunks_exact(stride)
        .map(|cpu| {
            let mut v = V::default();
            plain::copy_from_bytes(&mut v, &cpu[..std::mem::size_of::<V>()])
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
            Ok(v)
        })
        .collect()
}

/// Write `values` (one per possible CPU; the rest zero) under `key` in
/// the per-CPU map behind `map`.
pub fn percpu_update<K: Copy, V: Copy>(
    map: BorrowedFd<'_>,
    key: &K,
    values: &[V],
) -> io::Result<()> {
    let size = std::mem::size_of::<V>();
    let stride = size.next_multiple_of(8);
    let mut buf = vec![0u8; stride * possible_cpus()?];
    for (cpu, v) in buf.chunks_exact_mut(stride).zip(values) {
        // SAFETY: V is plain data of `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts((v as *const V).cast::<u8>(), size) };
        cpu[..size].copy_from_slice(bytes);
    }
    // SAFETY: key and the buffer are of the map's sizes.
    let r = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_update_elem(
            map.as_raw_fd(),
            (key as *const K).cast(),
            buf.as_ptr().cast(),
            libbpf_rs::libbpf_sys::BPF_ANY as u64,
        )
    };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(-r));
    }
    Ok(())
}

/// Delete `key` from the BPF map behind `map`; whether it was there.
pub fn map_delete<K: Copy>(map: BorrowedFd<'_>, key: &K) -> io::Result<bool> {
    // SAFETY: as in map_lookup.
    let r = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_delete_elem(map.as_raw_fd(), (key as *const K).cast())
    };
    match r {
        0 => Ok(true),
        r if -r == libc::ENOENT => Ok(false),
        r => Err(io::Error::from_raw_os_error(-r)),
    }
}

/// Open the BPF object pinned at `path`.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = c_path(path)?;
    // SAFETY: a valid C string.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_obj_get(c.as_ptr()) };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
