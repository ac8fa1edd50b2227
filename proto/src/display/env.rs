//! Environment variables that change what a program does: which code it loads and runs,
//! which configuration it reads, where it connects, whom it trusts. A reviewer must see
//! them, so every view lists them first, and the agent keeps them when the environment
//! is longer than it sends (`belay-agent`'s `task::exec_env`). The README lists the same
//! set under "What a reviewer sees".
//!
//! Names are compared without regard to case: a few programs read lower-case names
//! (`http_proxy`, `npm_config_*`), and showing an upper-case twin first costs nothing.

/// Whole names.
const NAMES: &[&str] = &[
    // Where programs are found, and the home directory whose dotfiles they read.
    "PATH",
    "HOME",
    "SHELL",
    // Run by shells before anything else, or on every prompt and trace line.
    "BASH_ENV",
    "ENV",
    "ZDOTDIR",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "IFS",
    // Commands other programs run on the user's behalf.
    "EDITOR",
    "VISUAL",
    "PAGER",
    "MANPAGER",
    "BROWSER",
    "LESSOPEN",
    "LESSCLOSE",
    "SSH_ASKPASS",
    "SUDO_ASKPASS",
    "SSH_AUTH_SOCK",
    // glibc: modules loaded by iconv, allocator and loader tunables, name resolution.
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "RES_OPTIONS",
    // Language runtimes' options and module paths without a common prefix.
    "CLASSPATH",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    "RUSTC_WRAPPER",
    // Whom TLS trusts.
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    // Which daemon a client drives.
    "DOCKER_HOST",
];

/// Name prefixes: the dynamic loader, git, language runtimes, bash's exported functions,
/// OpenSSL's configuration and engines, pip's package index.
const PREFIXES: &[&str] = &[
    "LD_",
    "GIT_",
    "PYTHON",
    "PERL",
    "RUBY",
    "NODE_",
    "LUA_",
    "JAVA_",
    "BASH_FUNC_",
    "OPENSSL_",
    "PIP_",
];

/// Anything naming a configuration (`KUBECONFIG`, `AWS_CONFIG_FILE`, `XDG_CONFIG_HOME`,
/// `GIT_CONFIG_GLOBAL`, `npm_config_registry`, `OPENSSL_CONF` via its prefix).
const INFIXES: &[&str] = &["CONFIG"];

/// Proxies (`http_proxy`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`).
const SUFFIXES: &[&str] = &["_PROXY"];

/// The name of an environment entry: up to the first `=`, or all of it.
pub fn name(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(name, _)| name)
}

/// Whether the variable `name` changes what a program does (see the module docs).
pub fn changes_program(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    NAMES.contains(&upper.as_str())
        || PREFIXES.iter().any(|p| upper.starts_with(p))
        || INFIXES.iter().any(|i| upper.contains(i))
        || SUFFIXES.iter().any(|s| upper.ends_with(s))
}

/// Whether the environment entry `NAME=VALUE` is one of those.
pub fn entry_changes_program(entry: &str) -> bool {
    changes_program(name(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_that_change_a_program_are_recognised() {
        for entry in [
            "LD_PRELOAD=/tmp/x.so",
            "LD_LIBRARY_PATH=/tmp",
            "LD_AUDIT=/tmp/a.so",
            "PATH=/tmp/bin:/usr/bin",
            "HOME=/home/alice",
            "GIT_SSH_COMMAND=ssh -o ProxyCommand=evil",
            "GIT_EXEC_PATH=/tmp/git",
            "GIT_CONFIG_GLOBAL=/tmp/gitconfig",
            "PYTHONPATH=/tmp",
            "PYTHONSTARTUP=/tmp/s.py",
            "NODE_OPTIONS=--require /tmp/x.js",
            "PERL5OPT=-Mevil",
            "BASH_ENV=/tmp/rc",
            "ENV=/tmp/rc",
            "BASH_FUNC_ls%%=() { evil; }",
            "KUBECONFIG=/tmp/kube",
            "npm_config_registry=https://evil.test",
            "https_proxy=http://evil.test:8080",
            "OPENSSL_CONF=/tmp/engine.cnf",
            "GCONV_PATH=/tmp",
            "SSL_CERT_FILE=/tmp/ca.pem",
        ] {
            assert!(entry_changes_program(entry), "{entry}");
        }
    }

    #[test]
    fn everyday_variables_are_not() {
        for entry in [
            "TERM=xterm",
            "LANG=C.UTF-8",
            "USER=alice",
            "PWD=/",
            "NOTE",
            "",
        ] {
            assert!(!entry_changes_program(entry), "{entry}");
        }
    }

    #[test]
    fn the_name_ends_at_the_first_equals_sign() {
        assert_eq!(name("A=b=c"), "A");
        assert_eq!(name("NOVALUE"), "NOVALUE");
        assert!(!entry_changes_program("HARMLESS=PATH=/tmp"));
    }
}
