use agent_common::KernelOffsets;

use crate::btf::{Btf, BtfError};

/// Reads every offset the kernel programs use from the running kernel's BTF.
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    Ok(KernelOffsets {
        bprm_file: btf.member_offset("linux_binprm", "file")?,
        bprm_filename: btf.member_offset("linux_binprm", "filename")?,
        file_inode: btf.member_offset("file", "f_inode")?,
        inode_ino: btf.member_offset("inode", "i_ino")?,
        inode_sb: btf.member_offset("inode", "i_sb")?,
        sb_dev: btf.member_offset("super_block", "s_dev")?,
        task_pid: btf.member_offset("task_struct", "pid")?,
        task_tgid: btf.member_offset("task_struct", "tgid")?,
        task_signal: btf.member_offset("task_struct", "signal")?,
        signal_live: btf.member_offset("signal_struct", "live")?,
        task_flags: btf.member_offset("task_struct", "flags")?,
        task_ptrace: btf.member_offset("task_struct", "ptrace")?,
        socket_type: btf.member_offset("socket", "type")?,
        socket_state: btf.member_offset("socket", "state")?,
        skb_head: btf.member_offset("sk_buff", "head")?,
        skb_data: btf.member_offset("sk_buff", "data")?,
        skb_len: btf.member_offset("sk_buff", "len")?,
        skb_data_len: btf.member_offset("sk_buff", "data_len")?,
        skb_transport_header: btf.member_offset("sk_buff", "transport_header")?,
        task_group_leader: btf.member_offset("task_struct", "group_leader")?,
        task_start_time: btf.member_offset("task_struct", "start_time")?,
        socket_sk: btf.member_offset("socket", "sk")?,
        sk_family: btf.member_offset("sock", "__sk_common")?
            + btf.member_offset("sock_common", "skc_family")?,
        sk_net: btf.member_offset("sock", "__sk_common")?
            + btf.member_offset("sock_common", "skc_net")?,
        net_user_ns: btf.member_offset("net", "user_ns")?,
        userns_level: btf.member_offset("user_namespace", "level")?,
        skb_network_header: btf.member_offset("sk_buff", "network_header")?,
        sk_daddr: btf.member_offset("sock", "__sk_common")?
            + btf.member_offset("sock_common", "skc_daddr")?,
        sk_dport: btf.member_offset("sock", "__sk_common")?
            + btf.member_offset("sock_common", "skc_dport")?,
        sk_v6_daddr: btf.member_offset("sock", "__sk_common")?
            + btf.member_offset("sock_common", "skc_v6_daddr")?,
        msg_iter: btf.member_offset("msghdr", "msg_iter")?,
        iter_type: btf.member_offset("iov_iter", "iter_type")?,
        iter_iov_offset: btf.member_offset("iov_iter", "iov_offset")?,
        iter_count: btf.member_offset("iov_iter", "count")?,
        iter_ubuf: btf.member_offset("iov_iter", "ubuf")?,
        iter_kind_ubuf: enumerator(btf, "ITER_UBUF")?,
        iter_kind_iovec: enumerator(btf, "ITER_IOVEC")?,
        sk_type: btf.member_offset("sock", "sk_type")?,
        sk_protocol: btf.member_offset("sock", "sk_protocol")?,
        msg_control: btf.member_offset("msghdr", "msg_control")?,
        msg_controllen: btf.member_offset("msghdr", "msg_controllen")?,
        unix_path: btf.member_offset("unix_sock", "path")?,
        path_dentry: btf.member_offset("path", "dentry")?,
        dentry_inode: btf.member_offset("dentry", "d_inode")?,
    })
}

/// An `iter_type` value: the kernel keeps it in a `u8`.
fn enumerator(btf: &Btf, name: &str) -> Result<u32, BtfError> {
    let v = btf.enum_value(name)?;
    u32::try_from(v)
        .ok()
        .filter(|v| *v <= u32::from(u8::MAX))
        .ok_or_else(|| BtfError::NoEnumerator(format!("{name} (value {v} is no u8)")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn running_kernel_has_every_offset() {
        let btf = crate::btf::Btf::from_sys_fs().unwrap().unwrap();
        let off = super::kernel_offsets(&btf).unwrap();
        assert_ne!(off.bprm_filename, off.bprm_file);
        assert_eq!(off.task_tgid, off.task_pid + 4);
        // The iterator's buffer pointer shares a union with the iovec array pointer.
        assert_ne!(off.iter_kind_ubuf, off.iter_kind_iovec);
    }
}
