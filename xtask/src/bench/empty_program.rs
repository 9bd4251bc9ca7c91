//! The kernel's per-program statistics time every run with two clock reads,
//! and on a virtual machine those reads cost as much as a small program. An
//! empty `cgroup_skb` program attached beside the agent's, on the same
//! packets, shows what the statistics add to any program: meshdrift's
//! figures are reported both as measured and net of it.
//!
//! The program is two instructions (`r0 = 1; exit`: allow the packet), loaded
//! and attached with the `bpf` system call directly, so the bench needs no
//! object file or loader for it.

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use anyhow::Context as _;

/// Its name in `bpftool prog show`: the bench reads every `meshdrift_` program.
pub const NAME: &str = "meshdrift_empty";

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
const BPF_CGROUP_INET_INGRESS: u32 = 0;
const BPF_CGROUP_INET_EGRESS: u32 = 1;
/// `union bpf_attr` is larger; the kernel accepts a shorter, zero-padded one.
const ATTR_LEN: usize = 128;

/// Attached on both directions until dropped (closing a link detaches it).
pub struct EmptyProgram {
    _program: OwnedFd,
    _links: [OwnedFd; 2],
}

impl EmptyProgram {
    pub fn attach(cgroup_root: &Path) -> anyhow::Result<Self> {
        let program = load().context("loading the empty comparison program")?;
        let cgroup = File::open(cgroup_root)
            .with_context(|| format!("opening cgroup {}", cgroup_root.display()))?;
        let link = |attach_type| {
            link_create(&program, &cgroup, attach_type).with_context(|| {
                format!(
                    "attaching the empty comparison program to {}",
                    cgroup_root.display()
                )
            })
        };
        let links = [
            link(BPF_CGROUP_INET_INGRESS)?,
            link(BPF_CGROUP_INET_EGRESS)?,
        ];
        Ok(Self {
            _program: program,
            _links: links,
        })
    }
}

fn load() -> io::Result<OwnedFd> {
    // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm 1; then BPF_JMP | BPF_EXIT.
    let instructions: [u64; 2] = [0xb7 | (1 << 32), 0x95];
    let license = c"GPL";
    let mut attr = [0u8; ATTR_LEN];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_CGROUP_SKB);
    put_u32(&mut attr, 4, instructions.len() as u32);
    put_u64(&mut attr, 8, instructions.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    attr[48..48 + NAME.len()].copy_from_slice(NAME.as_bytes());
    bpf(BPF_PROG_LOAD, &mut attr)
}

fn link_create(program: &OwnedFd, cgroup: &File, attach_type: u32) -> io::Result<OwnedFd> {
    let mut attr = [0u8; ATTR_LEN];
    put_u32(&mut attr, 0, program.as_raw_fd() as u32);
    put_u32(&mut attr, 4, cgroup.as_raw_fd() as u32);
    put_u32(&mut attr, 8, attach_type);
    bpf(BPF_LINK_CREATE, &mut attr)
}

fn bpf(command: libc::c_long, attr: &mut [u8; ATTR_LEN]) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` of the size passed;
    // the pointers in it (instructions, license) outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr.as_mut_ptr(),
            ATTR_LEN as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn put_u32(attr: &mut [u8; ATTR_LEN], offset: usize, value: u32) {
    attr[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; ATTR_LEN], offset: usize, value: u64) {
    attr[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
}
