//! The masker of the policy in force, built from its `mask:` section, with the key the
//! agent keeps on disk (`--mask-key-file`).
//!
//! Everything that leaves the daemon about a request (the local socket, `belay
//! pending`, belay-server, exports) comes from the `RequestView` the request book builds
//! with [`masker_for`]; `upstream::leaving_host` masks once more with [`current`].
use std::{
    path::Path,
    sync::{Arc, OnceLock, RwLock},
};

use belay_proto::v1;

pub use belay_mask::{MaskConfig, Masker, PatternConfig};

/// Next to the agent's certificates and other state.
pub const DEFAULT_KEY_FILE: &str = "/var/lib/belay/agent/mask.key";

static KEY: OnceLock<[u8; 32]> = OnceLock::new();
static CURRENT: RwLock<Option<(MaskConfig, Arc<Masker>)>> = RwLock::new(None);

/// Loads (or creates, mode 0600, in a directory created 0700 if missing) the key of the
/// hashes in masked values. Call once at start-up, before the first request.
pub fn init_key_file(path: &Path) -> Result<(), belay_mask::KeyError> {
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| belay_mask::KeyError::Io {
                path: dir.to_owned(),
                source,
            })?;
    }
    let key = belay_mask::load_or_create_key(path)?;
    let _ = KEY.set(key);
    Ok(())
}

/// The key: the file's, or, when none was loaded (tests, tools), one random key per
/// process, so hashes still tell values apart within the process.
fn key() -> [u8; 32] {
    *KEY.get_or_init(|| {
        use std::io::Read as _;
        let mut key = [0u8; 32];
        if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key))
        {
            tracing::warn!(error = %e, "no random mask key; hashes in masked values are unkeyed");
        }
        key
    })
}

/// The masker for a policy's `mask:` section, built once per distinct section; it also
/// becomes [`current`].
pub fn masker_for(config: &MaskConfig) -> Arc<Masker> {
    if let Some((c, m)) = CURRENT.read().unwrap_or_else(|e| e.into_inner()).as_ref()
        && c == config
    {
        return m.clone();
    }
    let masker = match Masker::new(config, key()) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            // The policy parser validated the section; only a bug gets here. The
            // built-in detectors still apply.
            tracing::error!(error = %e, "mask section refused; using the built-in detectors");
            Arc::new(Masker::new(&MaskConfig::default(), key()).expect("built-in detectors"))
        }
    };
    *CURRENT.write().unwrap_or_else(|e| e.into_inner()) = Some((config.clone(), masker.clone()));
    masker
}

/// The masker of the policy in force (built-in detectors before any policy loaded).
pub fn current() -> Arc<Masker> {
    if let Some((_, m)) = CURRENT.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return m.clone();
    }
    masker_for(&MaskConfig::default())
}

/// A request for belay-server with argv, env, cwd and hostnames masked (again: masking
/// is idempotent, so values the request book masked pass unchanged).
pub fn mask_request(masker: &Masker, mut request: v1::NewRequest) -> v1::NewRequest {
    if let Some(v1::action::Kind::Exec(exec)) =
        request.action.as_mut().and_then(|a| a.kind.as_mut())
    {
        masker.mask_argv_in_place(&mut exec.argv);
        masker.mask_env_in_place(&mut exec.env);
        exec.cwd = masker.mask(&exec.cwd).into_owned();
    }
    if let Some(ctx) = request.context.as_mut() {
        for h in &mut ctx.hostnames {
            *h = masker.mask(h).into_owned();
        }
        ctx.cwd = masker.mask(&ctx.cwd).into_owned();
    }
    request
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use belay_policy::{Policy, PolicyError};

    fn request(argv: &[&str], env: &[&str], host: &str) -> v1::NewRequest {
        v1::NewRequest {
            action: Some(v1::Action {
                kind: Some(v1::action::Kind::Exec(v1::Exec {
                    path: "/usr/bin/curl".into(),
                    argv: argv.iter().map(|s| (*s).to_owned()).collect(),
                    cwd: "/home/alice".into(),
                    env: env.iter().map(|s| (*s).to_owned()).collect(),
                })),
            }),
            context: Some(v1::RequestContext {
                hostnames: vec![host.to_owned()],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn leaving_host_masks_and_is_idempotent() {
        let m = current();
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9P";
        let raw = request(
            &[
                "curl",
                "-H",
                &format!("Authorization: Bearer {jwt}"),
                "https://api.example.com",
            ],
            &["OPENAI_API_KEY=sk-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKl"],
            "api.example.com",
        );
        let once = mask_request(&m, raw.clone());
        let text = format!("{once:?}");
        assert!(!text.contains("dozjgNryP4J3jVmNHl0w5N"), "{text}");
        assert!(!text.contains("AbCdEfGhIjKlMnOpQrStUvWx"), "{text}");
        assert_ne!(once, raw);
        assert_eq!(
            mask_request(&m, once.clone()),
            once,
            "masked input passes unchanged"
        );
        let plain = request(&["ls", "-la"], &["HOME=/root"], "example.com");
        assert_eq!(mask_request(&m, plain.clone()), plain);
    }

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, Path::new("policy.yaml"))
    }

    #[test]
    fn mask_section_is_read_and_applied() {
        let p = parse(
            "version: 1\nsubjects: []\nmask:\n  patterns:\n    - {name: employee-id, regex: 'EMP-(?P<s>\\d{6})'}\n  allow: ['^ci@example\\.com$']\n",
        )
        .unwrap();
        assert_eq!(p.mask.patterns[0].name, "employee-id");
        assert_eq!(p.mask.allow, ["^ci@example\\.com$"]);
        let out = masker_for(&p.mask)
            .mask("EMP-123456 ci@example.com bob@example.com")
            .into_owned();
        assert!(out.starts_with("EMP-…[employee-id:"), "{out}");
        assert!(out.contains(" ci@example.com "), "{out}");
        assert!(!out.contains("bob@"), "{out}");
        assert!(
            parse("version: 1\nsubjects: []\n")
                .unwrap()
                .mask
                .patterns
                .is_empty()
        );
    }

    #[test]
    fn mask_section_errors_name_the_place() {
        let err = |t: &str| {
            parse(&format!("version: 1\nsubjects: []\n{t}"))
                .unwrap_err()
                .to_string()
        };
        let e = err("mask:\n  patterns:\n    - {name: a, regex: '('}\n");
        assert!(
            e.starts_with("policy.yaml:5:")
                && e.contains("mask.patterns[0].regex")
                && e.contains("invalid regex"),
            "{e}"
        );
        let e = err("mask:\n  patterns:\n    - {name: Bad, regex: x}\n");
        assert!(
            e.starts_with("policy.yaml:5:") && e.contains("mask.patterns[0].name"),
            "{e}"
        );
        let e = err("mask:\n  patterns:\n    - {name: a, regex: 'x*'}\n");
        assert!(e.contains("empty string"), "{e}");
        let e = err("mask:\n  patterns:\n    - {name: a, regex: x}\n    - {name: a, regex: y}\n");
        assert!(
            e.starts_with("policy.yaml:6:") && e.contains("duplicate mask pattern name"),
            "{e}"
        );
        let e = err("mask:\n  allow: [ok, '[']\n");
        assert!(
            e.starts_with("policy.yaml:4:") && e.contains("mask.allow[1]"),
            "{e}"
        );
        let e = err("mask:\n  colour: red\n");
        assert!(e.contains("colour"), "{e}");
        let e = err("mask:\n  patterns:\n    - {name: a}\n");
        assert!(e.contains("regex"), "{e}");
    }
}
