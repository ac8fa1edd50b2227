//! Kernel modules the VM tests load: SCTP and what it depends on.
//!
//! The cloud kernels build SCTP as a module, and an unprivileged process can make the
//! kernel load it (`socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP)`), so belay's SCTP hooks
//! are tested with it loaded. The modules come from the kernel's own package, are
//! decompressed here (busybox `insmod` reads plain ELF), and go into a small cpio that
//! is appended to the VM's initramfs; `/init` loads them in dependency order.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::initramfs::Initramfs;
use crate::util;

/// The modules wanted; their dependencies come along.
const WANTED: &[&str] = &["sctp"];
/// Where the guest finds them, with `order` listing them dependencies first.
pub const GUEST_DIR: &str = "/lib/modules/belay";

/// Extracts the module directories SCTP and its dependencies live in from `deb`, and
/// writes `<into>/modules.cpio`.
pub fn stage(deb: &Path, work: &Path, into: &Path) -> Result<PathBuf> {
    let tree = work.join("modules-tree");
    fs::create_dir_all(&tree)?;
    // ./lib/modules/... before the /usr merge (bookworm), ./usr/lib/... after.
    crate::kernels::extract_from_deb(
        deb,
        &tree,
        &[
            "*/modules/*/kernel/net/*",
            "*/modules/*/kernel/lib/*",
            "*/modules/*/kernel/crypto/*",
        ],
    )?;
    let mut files = BTreeMap::new();
    index(&tree, &mut files)?;
    let mut order = Vec::new();
    let mut loaded: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for want in WANTED {
        visit(want, &files, &mut loaded, &mut order, 0)?;
    }
    let mut fs_ = Initramfs::new(&work.join("scratch"))?;
    fs_.dir(GUEST_DIR);
    for name in &order {
        fs_.file(
            &format!("{GUEST_DIR}/{name}.ko"),
            0o644,
            loaded[name].clone(),
        );
    }
    fs_.file(
        &format!("{GUEST_DIR}/order"),
        0o644,
        order.join("\n") + "\n",
    );
    let out = into.join("modules.cpio");
    fs_.write(&out)
        .with_context(|| format!("writing {}", out.display()))?;
    let _ = fs::remove_dir_all(&tree);
    Ok(out)
}

/// Module name (`-` spelled `_`) -> file, for every module under `dir`.
fn index(dir: &Path, files: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = e?.path();
        if path.is_dir() {
            index(&path, files)?;
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && let Some(stem) = name.split(".ko").next().filter(|_| name.contains(".ko"))
        {
            files.insert(stem.replace('-', "_"), path.clone());
        }
    }
    Ok(())
}

/// Adds `name` after its dependencies.
fn visit(
    name: &str,
    files: &BTreeMap<String, PathBuf>,
    loaded: &mut BTreeMap<String, Vec<u8>>,
    order: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    let name = name.replace('-', "_");
    if loaded.contains_key(&name) {
        return Ok(());
    }
    if depth > 16 {
        bail!("module dependencies of {name} nest too deep");
    }
    let file = files.get(&name).with_context(|| {
        format!("module {name} is not in the kernel package's net/, lib/ or crypto/")
    })?;
    let elf = plain(file)?;
    for dep in depends(&elf) {
        visit(&dep, files, loaded, order, depth + 1)?;
    }
    loaded.insert(name.clone(), elf);
    order.push(name);
    Ok(())
}

/// The module's ELF bytes, decompressed.
fn plain(file: &Path) -> Result<Vec<u8>> {
    let name = file.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else {
        return fs::read(file).with_context(|| format!("reading {}", file.display()));
    };
    let out = util::cmd(tool)
        .args(["-d", "-c"])
        .arg(file)
        .output()
        .with_context(|| format!("could not start {tool} (to decompress {name})"))?;
    if !out.status.success() {
        bail!(
            "{tool} -d {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// The `depends=` list of a module's `.modinfo`.
fn depends(elf: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"depends=";
    let Some(at) = elf.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let rest = &elf[at + KEY.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn depends_are_read_from_modinfo() {
        let elf = b"\x7fELF...license=GPL\0depends=udp_tunnel,libcrc32c\0name=sctp\0";
        assert_eq!(super::depends(elf), vec!["udp_tunnel", "libcrc32c"]);
        assert!(super::depends(b"name=x\0depends=\0").is_empty());
    }
}
