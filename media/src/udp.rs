//! Batched UDP: many datagrams per system call, each with the kernel's arrival time.
//!
//! A mixer thread reads every leg's RTP socket once per tick instead of waking a task per
//! packet, so the time a packet waited in the socket must come from the kernel
//! (`SO_TIMESTAMPNS`), not from when the thread got to it: jitter buffers size themselves on
//! arrival times. On Linux, [`RecvBatch::recv`] is one `recvmmsg`, [`RecvBatch::recv_one`] one
//! `recvmsg` and [`send_batch`] one `sendmmsg`; elsewhere they fall back to one call per
//! datagram, stamped on reading. [`connected_twin`] gives a socket a connected partner on the
//! same port, for a leg's one peer.
//!
//! On Linux these calls, [`send_to`] and [`send`] enter the kernel through `syscall` rather than
//! libc's wrappers: the wrappers are thread-cancellation points, and switching cancellation
//! on and off around every call cost a mixer thread more than 1 % of its time (the mixer
//! threads are never cancelled).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

/// The largest datagram kept whole; longer ones are reported as truncated.
pub const DATAGRAM_MAX: usize = 1500;

/// Maps kernel timestamps (wall clock) to [`Instant`]s: take one per batch of reads.
#[derive(Debug, Clone, Copy)]
pub struct ClockPair {
    instant: Instant,
    wall: SystemTime,
}

impl ClockPair {
    /// Both clocks now.
    pub fn now() -> ClockPair {
        ClockPair {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// How long before these clocks were read `arrival` was.
    pub fn age(&self, arrival: Instant) -> Duration {
        self.instant.saturating_duration_since(arrival)
    }

    /// The instant a datagram stamped `wall` arrived. A stamp in the future or more than 10 s
    /// old (the wall clock was stepped) counts as now.
    pub fn arrival(&self, wall: Option<SystemTime>) -> Instant {
        let waited = wall
            .and_then(|w| self.wall.duration_since(w).ok())
            .filter(|d| *d <= Duration::from_secs(10));
        waited
            .and_then(|d| self.instant.checked_sub(d))
            .unwrap_or(self.instant)
    }
}

/// One datagram of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// Its bytes (at most [`DATAGRAM_MAX`]).
    pub bytes: &'a [u8],
    /// The sender.
    pub from: SocketAddr,
    /// When the kernel received it, if the socket stamps datagrams.
    pub stamp: Option<SystemTime>,
    /// It was longer than [`DATAGRAM_MAX`] and cut.
    pub truncated: bool,
    /// How many datagrams the kernel dropped on this socket so far because its buffer was
    /// full, if the socket reports it.
    pub dropped: Option<u32>,
}

/// Buffers for reading up to `capacity` datagrams in one call; one per thread, reused for
/// every socket it reads.
pub struct RecvBatch {
    buffers: Vec<[u8; DATAGRAM_MAX]>,
    meta: Vec<Meta>,
    filled: usize,
    #[cfg(target_os = "linux")]
    sys: linux::Scratch,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    len: usize,
    from: SocketAddr,
    stamp: Option<SystemTime>,
    truncated: bool,
    dropped: Option<u32>,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.buffers.len())
            .field("filled", &self.filled)
            .finish()
    }
}

impl RecvBatch {
    /// Room for `capacity` datagrams (at least one).
    pub fn new(capacity: usize) -> RecvBatch {
        let capacity = capacity.max(1);
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        RecvBatch {
            buffers: vec![[0; DATAGRAM_MAX]; capacity],
            meta: vec![
                Meta {
                    len: 0,
                    from: unspecified,
                    stamp: None,
                    truncated: false,
                    dropped: None
                };
                capacity
            ],
            filled: 0,
            #[cfg(target_os = "linux")]
            sys: linux::Scratch::new(capacity),
        }
    }

    /// How many datagrams one call can read.
    pub fn capacity(&self) -> usize {
        self.buffers.len()
    }

    /// Reads what `socket` holds, up to the capacity, without waiting (`wait`: block until at
    /// least one arrives, honouring the socket's read timeout). Returns how many were read; an
    /// empty socket is `Ok(0)`.
    pub fn recv(&mut self, socket: &UdpSocket, wait: bool) -> io::Result<usize> {
        self.read(socket, wait, self.buffers.len())
    }

    /// Reads at most one datagram from `socket`, without waiting: one `recvmsg`, where
    /// [`RecvBatch::recv`]'s `recvmmsg` goes on to try the socket a second time. For a reader
    /// that expects one datagram per call and decides from it whether to read on. Returns how
    /// many were read (0 or 1).
    pub fn recv_one(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.read(socket, false, 1)
    }

    /// Reads up to `count` (at most the capacity) datagrams.
    fn read(&mut self, socket: &UdpSocket, wait: bool, count: usize) -> io::Result<usize> {
        self.filled = 0;
        let count = count.min(self.buffers.len());
        #[cfg(target_os = "linux")]
        let result = linux::recv(
            socket,
            wait,
            &mut self.buffers[..count],
            &mut self.meta[..count],
            &mut self.sys,
        );
        #[cfg(not(target_os = "linux"))]
        let result = portable_recv(
            socket,
            wait,
            &mut self.buffers[..count],
            &mut self.meta[..count],
        );
        match result {
            Ok(n) => {
                self.filled = n;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// The datagrams the last [`RecvBatch::recv`] or [`RecvBatch::recv_one`] read.
    pub fn datagrams(&self) -> impl Iterator<Item = Datagram<'_>> {
        self.buffers
            .iter()
            .zip(&self.meta)
            .take(self.filled)
            .map(|(buffer, meta)| Datagram {
                bytes: &buffer[..meta.len],
                from: meta.from,
                stamp: meta.stamp,
                truncated: meta.truncated,
                dropped: meta.dropped,
            })
    }
}

/// Asks the kernel to stamp each datagram `socket` receives with its arrival time and the
/// socket's count of datagrams dropped for want of buffer space.
pub fn enable_stamps(socket: &UdpSocket) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    return linux::enable_stamps(socket);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        Ok(())
    }
}

/// Asks for `bytes` of receive and send buffer on `socket` (past the system maximum when the
/// process may, else as much as the system allows); for load tools that must not drop.
pub fn set_buffers(socket: &UdpSocket, bytes: usize) {
    #[cfg(target_os = "linux")]
    linux::set_buffers(
        socket,
        libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX),
    );
    #[cfg(not(target_os = "linux"))]
    let _ = (socket, bytes);
}

/// Sends one datagram from `socket` to `to` (non-blocking when the socket is).
pub fn send_to(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    return linux::send_to(socket, bytes, to);
    #[cfg(not(target_os = "linux"))]
    socket.send_to(bytes, to)
}

/// Sends one datagram on a connected `socket` (non-blocking when the socket is). Unlike
/// [`send_to`], the kernel reuses the route the connection looked up.
pub fn send(socket: &UdpSocket, bytes: &[u8]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    return linux::send_connected(socket, bytes);
    #[cfg(not(target_os = "linux"))]
    socket.send(bytes)
}

/// A second socket on `socket`'s local address, connected to `remote` and non-blocking. The
/// kernel hands it the datagrams from `remote` (a connected socket is the closer match) and
/// leaves all others to `socket`; sending from it ([`send`]) skips the route lookup that every
/// [`send_to`] does. The address is shared only while binding: `SO_REUSEADDR` is off again on
/// both sockets when this returns, so no third socket can bind it. Linux only (elsewhere an
/// `Unsupported` error).
pub fn connected_twin(socket: &UdpSocket, remote: SocketAddr) -> io::Result<UdpSocket> {
    #[cfg(target_os = "linux")]
    return linux::connected_twin(socket, remote);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, remote);
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// Sends each `(destination, bytes)` from `socket`, in as few calls as the platform allows.
/// Returns how many went out; a send that fails part-way returns the count so far (the caller
/// may retry the rest), a failure on the first datagram is the error.
pub fn send_batch(socket: &UdpSocket, datagrams: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    return linux::send(socket, datagrams);
    #[cfg(not(target_os = "linux"))]
    {
        for (i, (to, bytes)) in datagrams.iter().enumerate() {
            if let Err(e) = socket.send_to(bytes, to) {
                return if i == 0 { Err(e) } else { Ok(i) };
            }
        }
        Ok(datagrams.len())
    }
}

#[cfg(not(target_os = "linux"))]
fn portable_recv(
    socket: &UdpSocket,
    wait: bool,
    buffers: &mut [[u8; DATAGRAM_MAX]],
    meta: &mut [Meta],
) -> io::Result<usize> {
    let mut n = 0;
    while n < buffers.len() {
        let blocking = wait && n == 0;
        socket.set_nonblocking(!blocking)?;
        match socket.recv_from(&mut buffers[n]) {
            Ok((len, from)) => {
                meta[n] = Meta {
                    len: len.min(DATAGRAM_MAX),
                    from,
                    stamp: Some(SystemTime::now()),
                    truncated: false,
                    dropped: None,
                };
                n += 1;
            }
            Err(e) if n > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(target_os = "linux")]
mod linux {
    //! `recvmmsg`/`sendmmsg` through libc. Every pointer handed to the kernel points into
    //! buffers borrowed for the duration of the call, with their true lengths.

    use super::{DATAGRAM_MAX, Meta};
    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::time::{Duration, SystemTime};

    /// Room for an `SCM_TIMESTAMPNS` (a `timespec`) and an `SO_RXQ_OVFL` (a `u32`) control
    /// message, 8-byte aligned.
    const CONTROL_LEN: usize = 64;

    /// Per-datagram kernel structures, reused between calls.
    pub(super) struct Scratch {
        headers: Vec<libc::mmsghdr>,
        iovecs: Vec<libc::iovec>,
        addresses: Vec<libc::sockaddr_storage>,
        controls: Vec<[u64; CONTROL_LEN / 8]>,
    }

    // The raw pointers in `headers`/`iovecs` are rewritten before every call and never read
    // across threads; the struct is plain data between calls.
    unsafe impl Send for Scratch {}

    impl Scratch {
        pub(super) fn new(capacity: usize) -> Scratch {
            // SAFETY: all-zero bytes are a valid value of these plain C structs.
            let (header, iovec, address) = unsafe {
                (
                    zeroed::<libc::mmsghdr>(),
                    zeroed::<libc::iovec>(),
                    zeroed::<libc::sockaddr_storage>(),
                )
            };
            Scratch {
                headers: vec![header; capacity],
                iovecs: vec![iovec; capacity],
                addresses: vec![address; capacity],
                controls: vec![[0; CONTROL_LEN / 8]; capacity],
            }
        }
    }

    pub(super) fn enable_stamps(socket: &UdpSocket) -> io::Result<()> {
        set_option(socket, libc::SO_TIMESTAMPNS, 1)?;
        set_option(socket, libc::SO_RXQ_OVFL, 1)
    }

    pub(super) fn set_buffers(socket: &UdpSocket, bytes: libc::c_int) {
        for (forced, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            // Past `rmem_max`/`wmem_max` only with CAP_NET_ADMIN; else as much as allowed.
            if set_option(socket, forced, bytes).is_err() {
                let _ = set_option(socket, plain, bytes);
            }
        }
    }

    /// Sets one integer `SOL_SOCKET` option.
    fn set_option(socket: &UdpSocket, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
        set_level_option(socket, libc::SOL_SOCKET, option, value)
    }

    /// Sets one integer option.
    fn set_level_option(
        socket: &UdpSocket,
        level: libc::c_int,
        option: libc::c_int,
        value: libc::c_int,
    ) -> io::Result<()> {
        // SAFETY: a valid socket descriptor and a pointer to a c_int with its size.
        let result = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                option,
                (&value as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if result == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Reads one integer option.
    fn level_option(
        socket: &UdpSocket,
        level: libc::c_int,
        option: libc::c_int,
    ) -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket descriptor, and a c_int with its size for the kernel to fill.
        let result = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                level,
                option,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if result == 0 {
            Ok(value)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    // `i` walks the caller's buffers and this scratch's headers, iovecs, addresses and control
    // buffers in step; an index reads more plainly than a five-way zip.
    #[allow(clippy::needless_range_loop)]
    pub(super) fn recv(
        socket: &UdpSocket,
        wait: bool,
        buffers: &mut [[u8; DATAGRAM_MAX]],
        meta: &mut [Meta],
        scratch: &mut Scratch,
    ) -> io::Result<usize> {
        let count = buffers.len().min(scratch.headers.len());
        for i in 0..count {
            scratch.iovecs[i] = libc::iovec {
                iov_base: buffers[i].as_mut_ptr().cast(),
                iov_len: DATAGRAM_MAX,
            };
            let header = &mut scratch.headers[i].msg_hdr;
            header.msg_name = (&mut scratch.addresses[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut scratch.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_control = scratch.controls[i].as_mut_ptr().cast();
            header.msg_controllen = CONTROL_LEN as _;
            header.msg_flags = 0;
            scratch.headers[i].msg_len = 0;
        }
        let n = if count == 1 && !wait {
            // One datagram without waiting: `recvmsg`, which unlike `recvmmsg` does not try
            // the socket again after the first.
            // SAFETY: the first header points at a live buffer of the stated length, borrowed
            // mutably for this call.
            let len = unsafe {
                libc::syscall(
                    libc::SYS_recvmsg,
                    libc::c_long::from(socket.as_raw_fd()),
                    &mut scratch.headers[0].msg_hdr as *mut libc::msghdr,
                    libc::c_long::from(libc::MSG_DONTWAIT),
                )
            };
            if len >= 0 {
                // A datagram, perhaps an empty one.
                scratch.headers[0].msg_len = len as libc::c_uint;
                1
            } else {
                len
            }
        } else {
            let flags = if wait {
                libc::MSG_WAITFORONE
            } else {
                libc::MSG_DONTWAIT
            };
            // SAFETY: `count` headers, each pointing at live buffers of the stated lengths,
            // all borrowed mutably for this call.
            unsafe {
                libc::syscall(
                    libc::SYS_recvmmsg,
                    libc::c_long::from(socket.as_raw_fd()),
                    scratch.headers.as_mut_ptr(),
                    count as libc::c_long,
                    libc::c_long::from(flags),
                    std::ptr::null_mut::<libc::timespec>(),
                )
            }
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            let header = &scratch.headers[i];
            let from = socket_addr(&scratch.addresses[i])
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            let (stamp, dropped) = control(&header.msg_hdr);
            meta[i] = Meta {
                len: (header.msg_len as usize).min(DATAGRAM_MAX),
                from,
                stamp,
                truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                dropped,
            };
        }
        Ok(n)
    }

    pub(super) fn send_to(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
        // SAFETY: all-zero bytes are a valid sockaddr_storage.
        let mut address: libc::sockaddr_storage = unsafe { zeroed() };
        let len = write_addr(&to, &mut address);
        sendto(
            socket,
            bytes,
            (&address as *const libc::sockaddr_storage).cast(),
            len,
        )
    }

    pub(super) fn send_connected(socket: &UdpSocket, bytes: &[u8]) -> io::Result<usize> {
        sendto(socket, bytes, std::ptr::null(), 0)
    }

    /// One `sendto`: to `address` (of `len` bytes), or on a connected socket with a null one.
    fn sendto(
        socket: &UdpSocket,
        bytes: &[u8],
        address: *const libc::sockaddr,
        len: libc::socklen_t,
    ) -> io::Result<usize> {
        // SAFETY: a live byte slice with its length, and a null address or one of the stated
        // length that the callers keep alive across the call; the kernel only reads them.
        let n = unsafe {
            libc::syscall(
                libc::SYS_sendto,
                libc::c_long::from(socket.as_raw_fd()),
                bytes.as_ptr(),
                bytes.len(),
                0 as libc::c_long,
                address,
                libc::c_long::from(len),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    pub(super) fn connected_twin(socket: &UdpSocket, remote: SocketAddr) -> io::Result<UdpSocket> {
        let local = socket.local_addr()?;
        set_option(socket, libc::SO_REUSEADDR, 1)?;
        let twin = bind_twin(socket, local, remote);
        // Whatever happened, the address is no longer shared.
        let closed = set_option(socket, libc::SO_REUSEADDR, 0);
        let twin = twin?;
        closed?;
        Ok(twin)
    }

    fn bind_twin(
        socket: &UdpSocket,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> io::Result<UdpSocket> {
        let family = if local.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: creates a descriptor, owned by the UdpSocket below from here on.
        let fd = unsafe {
            libc::socket(
                family,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh UDP socket descriptor that nothing else owns.
        let twin = unsafe { UdpSocket::from_raw_fd(fd) };
        set_option(&twin, libc::SO_REUSEADDR, 1)?;
        if local.is_ipv6() {
            // The same address family coverage as the original (dual-stack or not).
            set_level_option(
                &twin,
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                level_option(socket, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)?,
            )?;
        }
        // SAFETY: all-zero bytes are a valid sockaddr_storage.
        let mut address: libc::sockaddr_storage = unsafe { zeroed() };
        let len = write_addr(&local, &mut address);
        // SAFETY: an address of the stated length, only read by the kernel.
        if unsafe { libc::bind(fd, (&address as *const libc::sockaddr_storage).cast(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        twin.connect(remote)?;
        set_option(&twin, libc::SO_REUSEADDR, 0)?;
        Ok(twin)
    }

    pub(super) fn send(socket: &UdpSocket, datagrams: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
        const CHUNK: usize = 64;
        let mut sent = 0;
        // SAFETY: all-zero bytes are a valid value of these plain C structs.
        let mut headers: [libc::mmsghdr; CHUNK] = unsafe { zeroed() };
        let mut iovecs: [libc::iovec; CHUNK] = unsafe { zeroed() };
        let mut addresses: [libc::sockaddr_storage; CHUNK] = unsafe { zeroed() };
        for chunk in datagrams.chunks(CHUNK) {
            for (i, (to, bytes)) in chunk.iter().enumerate() {
                let len = write_addr(to, &mut addresses[i]);
                iovecs[i] = libc::iovec {
                    iov_base: bytes.as_ptr() as *mut libc::c_void,
                    iov_len: bytes.len(),
                };
                let header = &mut headers[i].msg_hdr;
                header.msg_name = (&mut addresses[i] as *mut libc::sockaddr_storage).cast();
                header.msg_namelen = len;
                header.msg_iov = &mut iovecs[i];
                header.msg_iovlen = 1;
                header.msg_control = std::ptr::null_mut();
                header.msg_controllen = 0;
                header.msg_flags = 0;
            }
            // SAFETY: `chunk.len()` headers pointing at live addresses and at the caller's
            // byte slices (the kernel only reads them).
            let n = unsafe {
                libc::syscall(
                    libc::SYS_sendmmsg,
                    libc::c_long::from(socket.as_raw_fd()),
                    headers.as_mut_ptr(),
                    chunk.len() as libc::c_long,
                    0 as libc::c_long,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                return if sent == 0 { Err(error) } else { Ok(sent) };
            }
            sent += n as usize;
            if (n as usize) < chunk.len() {
                break;
            }
        }
        Ok(sent)
    }

    /// The arrival time and drop count in a received header's control messages.
    fn control(header: &libc::msghdr) -> (Option<SystemTime>, Option<u32>) {
        let (mut stamp, mut dropped) = (None, None);
        // SAFETY: the CMSG macros walk the control buffer the kernel filled, within the length
        // it reported in `msg_controllen`; each payload is read at its own type's size.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(header);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET {
                    if (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS {
                        let spec: libc::timespec =
                            std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                        stamp = SystemTime::UNIX_EPOCH
                            .checked_add(Duration::new(spec.tv_sec as u64, spec.tv_nsec as u32));
                    } else if (*cmsg).cmsg_type == libc::SO_RXQ_OVFL {
                        dropped = Some(std::ptr::read_unaligned(
                            libc::CMSG_DATA(cmsg).cast::<u32>(),
                        ));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(header, cmsg);
            }
        }
        (stamp, dropped)
    }

    fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match storage.ss_family as libc::c_int {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in.
                let v4: libc::sockaddr_in =
                    unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
                let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(v4.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6.
                let v6: libc::sockaddr_in6 =
                    unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
                let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(v6.sin6_port),
                    v6.sin6_flowinfo,
                    v6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    fn write_addr(addr: &SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(v4) => {
                // SAFETY: all-zero bytes are a valid sockaddr_in.
                let mut raw: libc::sockaddr_in = unsafe { zeroed() };
                raw.sin_family = libc::AF_INET as libc::sa_family_t;
                raw.sin_port = v4.port().to_be();
                raw.sin_addr = libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), raw) };
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(v6) => {
                // SAFETY: all-zero bytes are a valid sockaddr_in6.
                let mut raw: libc::sockaddr_in6 = unsafe { zeroed() };
                raw.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                raw.sin6_port = v6.port().to_be();
                raw.sin6_addr = libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                };
                raw.sin6_flowinfo = v6.flowinfo();
                raw.sin6_scope_id = v6.scope_id();
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), raw) };
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_reads_several_datagrams_with_senders_and_kernel_times() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_stamps(&receiver).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let batch_out: Vec<(SocketAddr, &[u8])> =
            payloads.iter().map(|p| (to, p.as_slice())).collect();
        assert_eq!(send_batch(&sender, &batch_out).unwrap(), 5);
        let before = SystemTime::now();
        let mut batch = RecvBatch::new(3);
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..10 {
            if got.len() == 5 {
                break;
            }
            let n = batch.recv(&receiver, true).unwrap();
            assert!(n <= 3);
            for d in batch.datagrams() {
                assert_eq!(d.from, sender.local_addr().unwrap());
                assert!(!d.truncated);
                let stamp = d.stamp.expect("kernel timestamp");
                assert!(
                    stamp <= before + Duration::from_millis(1)
                        && before.duration_since(stamp).unwrap_or_default()
                            < Duration::from_secs(2)
                );
                got.push(d.bytes.to_vec());
            }
        }
        assert_eq!(got, payloads);
    }

    #[test]
    fn empty_socket_reads_nothing_without_blocking() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = RecvBatch::new(4);
        assert_eq!(batch.recv(&receiver, false).unwrap(), 0);
        assert_eq!(batch.datagrams().count(), 0);
    }

    #[test]
    fn drops_for_a_full_buffer_show_on_the_next_datagram() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_stamps(&receiver).unwrap();
        receiver.set_nonblocking(true).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        // Far more than the default receive buffer holds.
        for _ in 0..5000 {
            let _ = sender.send_to(&[0u8; 200], to);
        }
        let mut batch = RecvBatch::new(64);
        for _ in 0..1000 {
            if batch.recv(&receiver, false).unwrap() == 0 {
                break;
            }
        }
        sender.send_to(b"after", to).unwrap();
        receiver.set_nonblocking(false).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        assert_eq!(batch.recv(&receiver, true).unwrap(), 1);
        let d = batch.datagrams().next().unwrap();
        assert_eq!(d.bytes, b"after");
        assert!(d.dropped.unwrap() > 0, "{:?}", d.dropped);
    }

    #[test]
    fn long_datagrams_are_marked_truncated() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender
            .send_to(&[7u8; DATAGRAM_MAX + 100], receiver.local_addr().unwrap())
            .unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut batch = RecvBatch::new(2);
        assert_eq!(batch.recv(&receiver, true).unwrap(), 1);
        let d = batch.datagrams().next().unwrap();
        assert!(d.truncated);
        assert_eq!(d.bytes.len(), DATAGRAM_MAX);
    }

    #[test]
    fn ipv6_senders_are_read_back() {
        let receiver = UdpSocket::bind("[::1]:0").unwrap();
        let sender = UdpSocket::bind("[::1]:0").unwrap();
        let to = receiver.local_addr().unwrap();
        assert_eq!(send_batch(&sender, &[(to, b"abc".as_slice())]).unwrap(), 1);
        receiver
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut batch = RecvBatch::new(2);
        assert_eq!(batch.recv(&receiver, true).unwrap(), 1);
        let d = batch.datagrams().next().unwrap();
        assert_eq!(
            (d.bytes, d.from),
            (b"abc".as_slice(), sender.local_addr().unwrap())
        );
    }

    #[test]
    fn single_sends_reach_ipv4_and_ipv6_receivers_whole() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let receiver = UdpSocket::bind(local).unwrap();
            let sender = UdpSocket::bind(local).unwrap();
            let payload: Vec<u8> = (0..=255).collect();
            assert_eq!(
                send_to(&sender, &payload, receiver.local_addr().unwrap()).unwrap(),
                256
            );
            receiver
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut buffer = [0u8; 512];
            let (n, from) = receiver.recv_from(&mut buffer).unwrap();
            assert_eq!(
                (&buffer[..n], from),
                (payload.as_slice(), sender.local_addr().unwrap())
            );
        }
        // An error is reported as one: an IPv6 destination from an IPv4 socket.
        let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(send_to(&v4, b"x", "[::1]:9".parse().unwrap()).is_err());
    }

    #[test]
    fn arrival_maps_wall_stamps_to_instants() {
        let clock = ClockPair::now();
        let ten_ms_ago = clock.wall - Duration::from_millis(10);
        assert_eq!(
            clock.instant - clock.arrival(Some(ten_ms_ago)),
            Duration::from_millis(10)
        );
        assert_eq!(clock.arrival(None), clock.instant);
        assert_eq!(
            clock.arrival(Some(clock.wall + Duration::from_secs(1))),
            clock.instant
        );
        assert_eq!(
            clock.arrival(Some(clock.wall - Duration::from_secs(60))),
            clock.instant
        );
    }

    #[test]
    fn recv_one_takes_one_datagram_at_a_time_with_its_stamp() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_nonblocking(true).unwrap();
        enable_stamps(&receiver).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        sender.send_to(b"one", to).unwrap();
        sender.send_to(b"", to).unwrap();
        let mut batch = RecvBatch::new(4);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut got = Vec::new();
        while got.len() < 2 && std::time::Instant::now() < deadline {
            match batch.recv_one(&receiver).unwrap() {
                0 => std::thread::sleep(Duration::from_millis(1)),
                n => {
                    assert_eq!(n, 1);
                    let datagram = batch.datagrams().next().unwrap();
                    assert_eq!(batch.datagrams().count(), 1);
                    assert!(
                        datagram.stamp.is_some() && datagram.from == sender.local_addr().unwrap()
                    );
                    got.push(datagram.bytes.to_vec());
                }
            }
        }
        assert_eq!(
            got,
            vec![b"one".to_vec(), Vec::new()],
            "an empty datagram is a datagram"
        );
        assert_eq!(batch.recv_one(&receiver).unwrap(), 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_connected_twin_takes_its_peers_datagrams_and_leaves_the_rest_and_the_port_closed() {
        let original = UdpSocket::bind("127.0.0.1:0").unwrap();
        original
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let local = original.local_addr().unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        let twin = connected_twin(&original, peer.local_addr().unwrap()).unwrap();
        assert_eq!(twin.local_addr().unwrap(), local);

        peer.send_to(b"from the peer", local).unwrap();
        stranger.send_to(b"from a stranger", local).unwrap();
        twin.set_nonblocking(false).unwrap();
        twin.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 64];
        let n = twin.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"from the peer");
        let (n, from) = original.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"from a stranger"[..], stranger.local_addr().unwrap())
        );

        assert_eq!(send(&twin, b"reply").unwrap(), 5);
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"reply"[..], local),
            "sent from the shared port"
        );

        // Neither socket lets a third bind the address, even one asking to share it.
        // SAFETY: a plain socket call; the descriptor is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        assert!(fd >= 0);
        let one: libc::c_int = 1;
        // SAFETY: a valid descriptor and a c_int with its size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                4,
            )
        };
        let mut address: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        address.sin_family = libc::AF_INET as libc::sa_family_t;
        address.sin_port = local.port().to_be();
        address.sin_addr = libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        };
        // SAFETY: a valid descriptor and a sockaddr_in with its size.
        let bound = unsafe {
            libc::bind(
                fd,
                (&address as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        let error = std::io::Error::last_os_error();
        // SAFETY: closes the descriptor made above.
        unsafe { libc::close(fd) };
        assert_eq!(bound, -1, "a third socket bound the shared port");
        assert_eq!(error.raw_os_error(), Some(libc::EADDRINUSE));
    }
}
