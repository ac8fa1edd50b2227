//! Where the kernel programs find the fields of kernel structures.

/// Byte offsets into kernel structures, read from the running kernel's BTF by the daemon
/// and written into the program's read-only data before load. aya-ebpf has no CO-RE
/// field relocations, and these offsets differ between kernel versions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `linux_binprm::file`
    pub bprm_file: u32,
    /// `linux_binprm::filename`
    pub bprm_filename: u32,
    /// `file::f_inode`
    pub file_inode: u32,
    /// `inode::i_ino`
    pub inode_ino: u32,
    /// `inode::i_sb`
    pub inode_sb: u32,
    /// `super_block::s_dev`
    pub sb_dev: u32,
    /// `task_struct::pid`
    pub task_pid: u32,
    /// `task_struct::tgid`
    pub task_tgid: u32,
    /// `task_struct::signal`
    pub task_signal: u32,
    /// `signal_struct::live`
    pub signal_live: u32,
    /// `task_struct::flags`
    pub task_flags: u32,
    /// `task_struct::ptrace`
    pub task_ptrace: u32,
    /// `socket::type`
    pub socket_type: u32,
    /// `socket::state`
    pub socket_state: u32,
    /// `sk_buff::head`
    pub skb_head: u32,
    /// `sk_buff::data`
    pub skb_data: u32,
    /// `sk_buff::len`
    pub skb_len: u32,
    /// `sk_buff::data_len`
    pub skb_data_len: u32,
    /// `sk_buff::transport_header`
    pub skb_transport_header: u32,
    /// `task_struct::group_leader`
    pub task_group_leader: u32,
    /// `task_struct::start_time`
    pub task_start_time: u32,
    /// `socket::sk`
    pub socket_sk: u32,
    /// `sock_common::skc_family` (`struct sock` begins with its `sock_common`)
    pub sk_family: u32,
    /// `sock_common::skc_net` (a `possible_net_t`: the `struct net *` itself)
    pub sk_net: u32,
    /// `net::user_ns`
    pub net_user_ns: u32,
    /// `user_namespace::level`
    pub userns_level: u32,
    /// `sk_buff::network_header`
    pub skb_network_header: u32,
    /// `sock_common::skc_daddr`: a connected IPv4 socket's peer
    pub sk_daddr: u32,
    /// `sock_common::skc_dport`: a connected socket's peer port, network order
    pub sk_dport: u32,
    /// `sock_common::skc_v6_daddr`: a connected IPv6 socket's peer
    pub sk_v6_daddr: u32,
    /// `msghdr::msg_iter`
    pub msg_iter: u32,
    /// `iov_iter::iter_type` (a `u8`)
    pub iter_type: u32,
    /// `iov_iter::iov_offset`
    pub iter_iov_offset: u32,
    /// `iov_iter::count`
    pub iter_count: u32,
    /// `iov_iter::ubuf`: the user buffer of an `ITER_UBUF`, and in the same union the
    /// `struct iovec *` of an `ITER_IOVEC`
    pub iter_ubuf: u32,
    /// The value of `ITER_UBUF` in `enum iter_type` (it moved between releases)
    pub iter_kind_ubuf: u32,
    /// The value of `ITER_IOVEC` in `enum iter_type`
    pub iter_kind_iovec: u32,
    /// `sock::sk_type`
    pub sk_type: u32,
    /// `sock::sk_protocol`
    pub sk_protocol: u32,
    /// `msghdr::msg_control` (the kernel's copy by the time the LSM hook runs)
    pub msg_control: u32,
    /// `msghdr::msg_controllen`
    pub msg_controllen: u32,
    /// `unix_sock::path` (a `struct path`)
    pub unix_path: u32,
    /// `path::dentry`
    pub path_dentry: u32,
    /// `dentry::d_inode`
    pub dentry_inode: u32,
}

impl KernelOffsets {
    pub const fn zeroed() -> Self {
        Self {
            bprm_file: 0,
            bprm_filename: 0,
            file_inode: 0,
            inode_ino: 0,
            inode_sb: 0,
            sb_dev: 0,
            task_pid: 0,
            task_tgid: 0,
            task_signal: 0,
            signal_live: 0,
            task_flags: 0,
            task_ptrace: 0,
            socket_type: 0,
            socket_state: 0,
            skb_head: 0,
            skb_data: 0,
            skb_len: 0,
            skb_data_len: 0,
            skb_transport_header: 0,
            task_group_leader: 0,
            task_start_time: 0,
            socket_sk: 0,
            sk_family: 0,
            sk_net: 0,
            net_user_ns: 0,
            userns_level: 0,
            skb_network_header: 0,
            sk_daddr: 0,
            sk_dport: 0,
            sk_v6_daddr: 0,
            msg_iter: 0,
            iter_type: 0,
            iter_iov_offset: 0,
            iter_count: 0,
            iter_ubuf: 0,
            iter_kind_ubuf: 0,
            iter_kind_iovec: 0,
            sk_type: 0,
            sk_protocol: 0,
            msg_control: 0,
            msg_controllen: 0,
            unix_path: 0,
            path_dentry: 0,
            dentry_inode: 0,
        }
    }
}
