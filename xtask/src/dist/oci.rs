//! OCI images for belay-agent and belay-server, assembled here without a container
//! daemon or builder: each is an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/...`) in one tar, which `podman load` reads as an `oci-archive`; it also
//! carries Docker's `manifest.json`, so `docker load` takes it too.
//!
//! Two gzip layers: a base shared by both images (the glibc files the binaries link,
//! taken from this Debian 12 build host, their copyright files, `/etc/passwd` with root
//! and `nonroot` = 65532, `/tmp`), then the image's own binaries. No shell, no package
//! manager; the agent image adds a static busybox for its enrollment init container.
//! The server runs as 65532 with its state in `/var/lib/belay-server`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::tar::{Meta, Tar};
use super::{VERSION, gzip_to, sha256_file};
use crate::util::{self, say};

pub struct Inputs<'a> {
    pub root: &'a Path,
    pub bin_dir: &'a Path,
    pub epoch: u64,
    pub commit: String,
}

/// uid and gid of the server image's user.
pub const NONROOT: u32 = 65532;

struct Image {
    name: &'static str,
    description: &'static str,
    user: &'static str,
    entrypoint: &'static [&'static str],
    env: &'static [&'static str],
    ports: &'static [&'static str],
}

const IMAGES: &[Image] = &[
    Image {
        name: "belay-server",
        description: "belay's central approval service",
        user: "65532:65532",
        entrypoint: &["/usr/bin/belay-server"],
        env: &[
            "BELAY_DB=/var/lib/belay-server/server.db",
            "BELAY_STATE_DIR=/var/lib/belay-server",
            "BELAY_SERVER_LISTEN=0.0.0.0:50051",
            "BELAY_HTTP_LISTEN=0.0.0.0:9090",
        ],
        ports: &["50051/tcp", "9090/tcp", "8443/tcp"],
    },
    Image {
        name: "belay-agent",
        description: "belay's host agent (needs privileges and a kernel with BPF LSM)",
        user: "0:0",
        entrypoint: &["/usr/bin/belay-agent"],
        env: &[],
        ports: &[],
    },
];

pub fn build_all(inp: &Inputs<'_>, out: &Path) -> Result<Vec<PathBuf>> {
    let work = out.join(".oci");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(work.join("blobs/sha256"))?;
    let (base, base_packages) = base_layer(inp)?;
    let base = write_layer(&work, &base)?;
    let mut archives = Vec::new();
    for img in IMAGES {
        let app = write_layer(&work, &app_layer(inp, img.name)?)?;
        let archive = out.join(format!("{}-{VERSION}.oci.tar", img.name));
        image_archive(inp, img, &[&base, &app], &base_packages, &work, &archive)
            .with_context(|| format!("assembling the {} image", img.name))?;
        say!(
            "dist: image {}:{VERSION} -> {}",
            img.name,
            archive.display()
        );
        archives.push(archive);
    }
    fs::remove_dir_all(&work)?;
    Ok(archives)
}

/// A layer's blob: its compressed digest and size, and the uncompressed diff id.
struct Layer {
    digest: String,
    diff_id: String,
    size: u64,
}

fn write_layer(work: &Path, tar: &[u8]) -> Result<Layer> {
    let raw = work.join("layer.tar");
    fs::write(&raw, tar)?;
    let diff_id = sha256_file(&raw)?;
    let gz = work.join("layer.tar.gz");
    gzip_to(tar, &gz)?;
    let digest = sha256_file(&gz)?;
    let size = fs::metadata(&gz)?.len();
    fs::rename(&gz, work.join("blobs/sha256").join(&digest))?;
    fs::remove_file(&raw)?;
    Ok(Layer {
        digest,
        diff_id,
        size,
    })
}

/// The shared libraries the three binaries load (from `ldd`), and the Debian packages
/// that ship them (`name=version`).
fn base_layer(inp: &Inputs<'_>) -> Result<(Vec<u8>, Vec<String>)> {
    let t0 = inp.epoch;
    let mut libs: Vec<String> = Vec::new();
    for bin in ["belay-agent", "belay-server", "belay"] {
        let out = util::output(util::cmd("ldd").arg(inp.bin_dir.join(bin)))?;
        for l in out.lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = match l.split_once("=>") {
                Some((_, r)) => r.split_whitespace().next(),
                None => l.split_whitespace().next().filter(|p| p.starts_with('/')),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/'))
                && !libs.iter().any(|x| x == p)
            {
                libs.push(p.to_string());
            }
        }
    }
    libs.sort();
    let mut packages = Vec::new();
    for lib in &libs {
        if let Ok(o) = util::output(util::cmd("dpkg-query").args(["-S", lib])) {
            for name in o.lines().filter_map(|l| l.split(':').next()) {
                let name = name.trim().to_string();
                if !packages
                    .iter()
                    .any(|p: &String| p.starts_with(&format!("{name}=")))
                {
                    let v =
                        util::output(util::cmd("dpkg-query").args(["-W", "-f=${Version}", &name]))
                            .unwrap_or_default();
                    packages.push(format!("{name}={v}"));
                }
            }
        }
    }
    packages.sort();
    let mut t = Tar::new(Vec::new());
    let mut dirs = vec![
        "etc".to_string(),
        "usr".to_string(),
        "usr/bin".to_string(),
        "usr/share".to_string(),
        "usr/share/doc".to_string(),
        "var".to_string(),
        "var/lib".to_string(),
        "home".to_string(),
    ];
    for lib in &libs {
        let mut d = Path::new(lib.trim_start_matches('/')).parent();
        while let Some(p) = d.filter(|p| !p.as_os_str().is_empty()) {
            dirs.push(p.to_string_lossy().into_owned());
            d = p.parent();
        }
    }
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        t.dir(d, Meta::root(0o755, t0))?;
    }
    t.dir("root", Meta::root(0o700, t0))?;
    t.dir("tmp", Meta::root(0o1777, t0))?;
    t.dir(
        "home/nonroot",
        Meta {
            mode: 0o755,
            uid: NONROOT,
            gid: NONROOT,
            mtime: t0,
        },
    )?;
    for lib in &libs {
        let data = fs::read(lib).with_context(|| format!("reading {lib}"))?;
        t.file(lib, Meta::root(0o755, t0), &data)?;
    }
    for p in &packages {
        let name = p.split('=').next().unwrap_or_default();
        let src = format!("/usr/share/doc/{name}/copyright");
        if let Ok(data) = fs::read(&src) {
            t.dir(&format!("usr/share/doc/{name}"), Meta::root(0o755, t0))?;
            t.file(&src, Meta::root(0o644, t0), &data)?;
        }
    }
    let etc = |name: &str, text: &str, t: &mut Tar<Vec<u8>>| {
        t.file(
            &format!("etc/{name}"),
            Meta::root(0o644, t0),
            text.as_bytes(),
        )
    };
    etc(
        "passwd",
        &format!(
            "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
        ),
        &mut t,
    )?;
    etc(
        "group",
        &format!("root:x:0:\nnonroot:x:{NONROOT}:\n"),
        &mut t,
    )?;
    etc(
        "nsswitch.conf",
        "passwd: files\ngroup: files\nhosts: files dns\n",
        &mut t,
    )?;
    Ok((t.finish()?, packages))
}

fn app_layer(inp: &Inputs<'_>, image: &str) -> Result<Vec<u8>> {
    let t0 = inp.epoch;
    let mut t = Tar::new(Vec::new());
    let bin = |t: &mut Tar<Vec<u8>>, name: &str| -> Result<()> {
        let data = fs::read(inp.bin_dir.join(name))?;
        t.file(&format!("usr/bin/{name}"), Meta::root(0o755, t0), &data)?;
        Ok(())
    };
    t.dir("usr", Meta::root(0o755, t0))?;
    t.dir("usr/bin", Meta::root(0o755, t0))?;
    match image {
        "belay-server" => {
            bin(&mut t, "belay-server")?;
            t.dir("var", Meta::root(0o755, t0))?;
            t.dir("var/lib", Meta::root(0o755, t0))?;
            t.dir(
                "var/lib/belay-server",
                Meta {
                    mode: 0o750,
                    uid: NONROOT,
                    gid: NONROOT,
                    mtime: t0,
                },
            )?;
        }
        _ => {
            bin(&mut t, "belay-agent")?;
            bin(&mut t, "belay")?;
            // The enrollment init container's `sh -c` (see the Helm chart).
            let busybox = fs::read("/bin/busybox").context(
                "reading /bin/busybox (Debian's busybox-static, installed by `cargo xtask setup`)",
            )?;
            t.dir("bin", Meta::root(0o755, t0))?;
            t.file("bin/busybox", Meta::root(0o755, t0), &busybox)?;
            t.symlink("bin/sh", "busybox", t0)?;
            for d in [
                "etc",
                "etc/belay",
                "var",
                "var/lib",
                "var/lib/belay",
                "run",
                "run/belay",
            ] {
                t.dir(d, Meta::root(0o755, t0))?;
            }
            t.dir("var/lib/belay/agent", Meta::root(0o700, t0))?;
            let policy = fs::read(inp.root.join("deploy/policy/example.yaml"))?;
            t.dir("usr/share", Meta::root(0o755, t0))?;
            t.dir("usr/share/belay", Meta::root(0o755, t0))?;
            t.file(
                "usr/share/belay/example-policy.yaml",
                Meta::root(0o644, t0),
                &policy,
            )?;
        }
    }
    Ok(t.finish()?)
}

fn image_archive(
    inp: &Inputs<'_>,
    img: &Image,
    layers: &[&Layer],
    base_packages: &[String],
    work: &Path,
    archive: &Path,
) -> Result<()> {
    let created = rfc3339(inp.epoch);
    let reference = format!("localhost/{}:{VERSION}", img.name);
    let labels = json!({
        "org.opencontainers.image.title": img.name,
        "org.opencontainers.image.description": img.description,
        "org.opencontainers.image.version": VERSION,
        "org.opencontainers.image.revision": inp.commit,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.source": "https://example.invalid/belay",
        "org.opencontainers.image.licenses": "GPL-2.0-only OR Apache-2.0",
        "org.opencontainers.image.vendor": "belay",
        "org.opencontainers.image.base.name": format!("debian-12 glibc ({})", base_packages.join(" ")),
    });
    let mut env = vec!["PATH=/usr/bin:/bin".to_string()];
    env.extend(img.env.iter().map(|s| s.to_string()));
    let ports: serde_json::Map<String, Value> = img
        .ports
        .iter()
        .map(|p| (p.to_string(), json!({})))
        .collect();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "User": img.user,
            "Entrypoint": img.entrypoint,
            "Env": env,
            "ExposedPorts": ports,
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| format!("sha256:{}", l.diff_id)).collect::<Vec<_>>(),
        },
        "history": [
            {"created": created, "created_by": "cargo xtask dist: glibc base from the Debian 12 build host"},
            {"created": created, "created_by": format!("cargo xtask dist: {}", img.name)},
        ],
    });
    let config_blob = blob(work, &serde_json::to_vec(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{}", config_blob.0),
            "size": config_blob.1,
        },
        "layers": layers.iter().map(|l| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{}", l.digest),
            "size": l.size,
        })).collect::<Vec<_>>(),
        "annotations": labels,
    });
    let manifest_blob = blob(work, &serde_json::to_vec(&manifest)?)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", manifest_blob.0),
            "size": manifest_blob.1,
            "annotations": {
                "org.opencontainers.image.ref.name": reference,
                "io.containerd.image.name": reference,
            },
        }],
    });
    // docker load before Docker 25 reads only this.
    let docker_manifest = json!([{
        "Config": format!("blobs/sha256/{}", config_blob.0),
        "RepoTags": [format!("{}:{VERSION}", img.name)],
        "Layers": layers.iter().map(|l| format!("blobs/sha256/{}", l.digest)).collect::<Vec<_>>(),
    }]);
    let t0 = inp.epoch;
    let mut t = Tar::new(Vec::new());
    t.file(
        "oci-layout",
        Meta::root(0o644, t0),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    t.file(
        "index.json",
        Meta::root(0o644, t0),
        &serde_json::to_vec(&index)?,
    )?;
    t.file(
        "manifest.json",
        Meta::root(0o644, t0),
        &serde_json::to_vec(&docker_manifest)?,
    )?;
    t.dir("blobs", Meta::root(0o755, t0))?;
    t.dir("blobs/sha256", Meta::root(0o755, t0))?;
    let mut digests: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    digests.push(&config_blob.0);
    digests.push(&manifest_blob.0);
    for d in digests {
        let data = fs::read(work.join("blobs/sha256").join(d))?;
        t.file(&format!("blobs/sha256/{d}"), Meta::root(0o644, t0), &data)?;
    }
    fs::write(archive, t.finish()?).with_context(|| format!("writing {}", archive.display()))?;
    Ok(())
}

/// Stores a blob; returns its digest (hex) and size.
fn blob(work: &Path, data: &[u8]) -> Result<(String, u64)> {
    let tmp = work.join("blob.tmp");
    fs::write(&tmp, data)?;
    let digest = sha256_file(&tmp)?;
    fs::rename(&tmp, work.join("blobs/sha256").join(&digest))?;
    Ok((digest, data.len() as u64))
}

/// `1970-01-01T00:00:00Z` from Unix seconds (civil-from-days, proleptic Gregorian).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
    }
}
