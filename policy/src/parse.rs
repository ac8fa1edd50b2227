//! From the YAML tree to a validated [`Policy`], with the file, line and column of
//! whatever is wrong.
use std::{
    collections::HashMap,
    fmt::Display,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    Action, DEFAULT_DEADLINE, DEFAULT_ON_TIMEOUT, Destination, EgressRule, ExecRule, FailMode,
    Glob, GlobMode, MAX_DEADLINE, MaskConfig, Policy, PolicyError, Proto, Subject, Verdict,
    values::{
        destination, normalize_cgroup, one_of, parse_duration, port_range, resolve_uid,
        validate_name,
    },
    yaml::{self, Kind, Node, Pos},
};

const ACTIONS: &str = "allow, deny, ask, kill or audit";
const MAX_RULE_NAME: usize = 128;

pub(crate) fn parse(text: &str, file: &Path) -> Result<Policy, PolicyError> {
    let cx = Cx { file };
    let root = yaml::parse(text).map_err(|e| cx.at(e.pos, "", e.message))?;
    let Some(root) = root else {
        return Err(cx.at(
            Pos { line: 1, col: 1 },
            "",
            "the policy file is empty (expected a mapping with `subjects`)",
        ));
    };
    Reader {
        cx,
        uids: HashMap::new(),
        exes: HashMap::new(),
        cgroups: HashMap::new(),
    }
    .policy(&root)
}

struct Cx<'a> {
    file: &'a Path,
}

impl Cx<'_> {
    fn at(&self, pos: Pos, path: &str, message: impl Display) -> PolicyError {
        PolicyError::Invalid {
            file: self.file.to_path_buf(),
            line: pos.line,
            col: pos.col,
            message: if path.is_empty() {
                message.to_string()
            } else {
                format!("{path}: {message}")
            },
        }
    }

    fn err(&self, node: &Node, path: &str, message: impl Display) -> PolicyError {
        self.at(node.pos, path, message)
    }

    fn wrong_type(&self, node: &Node, path: &str, expected: &str) -> PolicyError {
        self.err(
            node,
            path,
            format!("expected {expected}, found {}", node.describe()),
        )
    }

    /// A mapping whose keys are all in `allowed`.
    fn map<'n>(
        &self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
    ) -> Result<Fields<'n>, PolicyError> {
        let Kind::Map(entries) = &node.kind else {
            return Err(self.wrong_type(node, path, "a mapping"));
        };
        for (key, _) in entries {
            let name = scalar_text(key);
            if !allowed.contains(&name) {
                return Err(self.err(
                    key,
                    path,
                    format!("unknown key {name:?} (expected {})", one_of(allowed, "or")),
                ));
            }
        }
        Ok(Fields { node, entries })
    }

    fn seq<'n>(&self, node: &'n Node, path: &str) -> Result<&'n [Node], PolicyError> {
        match &node.kind {
            Kind::Seq(items) => Ok(items),
            _ => Err(self.wrong_type(node, path, "a list")),
        }
    }

    /// A non-null scalar's text.
    fn string<'n>(&self, node: &'n Node, path: &str) -> Result<&'n str, PolicyError> {
        self.scalar(node, path, "a string")
    }

    /// A non-null scalar's text; `expected` names what it should have been.
    fn scalar<'n>(
        &self,
        node: &'n Node,
        path: &str,
        expected: &str,
    ) -> Result<&'n str, PolicyError> {
        match &node.kind {
            Kind::Scalar { text, .. } if !node.is_null() => Ok(text),
            _ => Err(self.wrong_type(node, path, expected)),
        }
    }

    fn boolean(&self, node: &Node, path: &str) -> Result<bool, PolicyError> {
        match &node.kind {
            Kind::Scalar { text, plain: true } => match text.as_str() {
                "true" | "True" | "TRUE" => Ok(true),
                "false" | "False" | "FALSE" => Ok(false),
                _ => Err(self.err(
                    node,
                    path,
                    format!("expected true or false, found {text:?}"),
                )),
            },
            Kind::Scalar { text, .. } => Err(self.err(
                node,
                path,
                format!("expected true or false, found the string {text:?}"),
            )),
            _ => Err(self.wrong_type(node, path, "true or false")),
        }
    }

    fn action(&self, node: &Node, path: &str) -> Result<Action, PolicyError> {
        let text = self.scalar(node, path, &format!("an action ({ACTIONS})"))?;
        Action::from_name(text).ok_or_else(|| {
            self.err(
                node,
                path,
                format!("unknown action {text:?} (expected {ACTIONS})"),
            )
        })
    }

    fn verdict(&self, node: &Node, path: &str) -> Result<Verdict, PolicyError> {
        let text = self.scalar(node, path, "a verdict (allow, deny or kill)")?;
        text.parse::<Verdict>()
            .map_err(|unknown| self.err(node, path, unknown.to_string()))
    }

    fn duration(&self, node: &Node, path: &str) -> Result<Duration, PolicyError> {
        let text = self.scalar(node, path, "a duration (e.g. 90s, 5m, 1h)")?;
        let d = parse_duration(text).map_err(|m| self.err(node, path, m))?;
        if d.is_zero() {
            return Err(self.err(
                node,
                path,
                format!("duration {text:?} must be more than zero"),
            ));
        }
        if d > MAX_DEADLINE {
            return Err(self.err(
                node,
                path,
                format!("duration {text:?} is longer than the maximum, 24h"),
            ));
        }
        Ok(d)
    }
}

fn scalar_text(node: &Node) -> &str {
    match &node.kind {
        Kind::Scalar { text, .. } => text,
        _ => "",
    }
}

struct Fields<'n> {
    node: &'n Node,
    entries: &'n [(Node, Node)],
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| scalar_text(k) == key)
            .map(|(_, v)| v)
    }

    /// An optional collection: a null value (a key with nothing under it) is as if the
    /// key were absent.
    fn get_collection(&self, key: &str) -> Option<&'n Node> {
        self.get(key).filter(|v| !v.is_null())
    }

    fn require(&self, cx: &Cx<'_>, key: &str, path: &str) -> Result<&'n Node, PolicyError> {
        self.get(key)
            .ok_or_else(|| cx.err(self.node, path, format!("missing required key {key:?}")))
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

struct Claim {
    subject: String,
    line: usize,
}

struct Reader<'a> {
    cx: Cx<'a>,
    uids: HashMap<u32, Claim>,
    exes: HashMap<PathBuf, Claim>,
    cgroups: HashMap<String, Claim>,
}

/// Resolved `defaults`.
struct Defaults {
    deadline: Duration,
    on_timeout: Verdict,
}

impl Reader<'_> {
    fn policy(&mut self, root: &Node) -> Result<Policy, PolicyError> {
        let cx = &self.cx;
        let top = cx.map(
            root,
            "",
            &["version", "fail_mode", "defaults", "subjects", "mask"],
        )?;
        if let Some(v) = top.get("version") {
            match &v.kind {
                Kind::Scalar { text, plain: true } if text == "1" => {}
                Kind::Scalar { text, .. } if !v.is_null() => {
                    return Err(cx.err(
                        v,
                        "version",
                        format!("unsupported version {text:?} (this belay reads version 1)"),
                    ));
                }
                _ => return Err(cx.wrong_type(v, "version", "the number 1")),
            }
        }
        let fail_mode = match top.get("fail_mode") {
            None => None,
            Some(v) => Some(match cx.string(v, "fail_mode")? {
                "deny" => FailMode::Deny,
                "allow" => FailMode::Allow,
                other => {
                    return Err(cx.err(
                        v,
                        "fail_mode",
                        format!("unknown fail mode {other:?} (expected deny or allow)"),
                    ));
                }
            }),
        };
        let mut defaults = Defaults {
            deadline: DEFAULT_DEADLINE,
            on_timeout: DEFAULT_ON_TIMEOUT,
        };
        if let Some(d) = top.get_collection("defaults") {
            let f = cx.map(d, "defaults", &["deadline", "on_timeout"])?;
            if let Some(v) = f.get("deadline") {
                defaults.deadline = cx.duration(v, "defaults.deadline")?;
            }
            if let Some(v) = f.get("on_timeout") {
                defaults.on_timeout = cx.verdict(v, "defaults.on_timeout")?;
            }
        }
        let subjects_node = top.require(cx, "subjects", "")?;
        let items = cx.seq(subjects_node, "subjects")?;
        let mut subjects: Vec<Subject> = Vec::with_capacity(items.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut ids: HashMap<u32, String> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("subjects[{i}]");
            let subject = self.subject(item, &path, &defaults)?;
            let cx = &self.cx;
            let name_node = fields_of(item).get("name").unwrap_or(item);
            if let Some(line) = names.get(&subject.name) {
                return Err(cx.err(
                    name_node,
                    &format!("{path}.name"),
                    format!(
                        "duplicate subject name {:?} (first at line {line})",
                        subject.name
                    ),
                ));
            }
            if subject.id == 0 {
                return Err(cx.err(
                    name_node,
                    &format!("{path}.name"),
                    format!(
                        "subject name {:?} hashes to id 0, which is reserved: choose another name",
                        subject.name
                    ),
                ));
            }
            if let Some(other) = ids.get(&subject.id) {
                return Err(cx.err(
                    name_node,
                    &format!("{path}.name"),
                    format!(
                        "subject name {:?} has the same id ({:#010x}) as subject {other:?}: choose another name",
                        subject.name, subject.id
                    ),
                ));
            }
            names.insert(subject.name.clone(), subject.line);
            ids.insert(subject.id, subject.name.clone());
            subjects.push(subject);
        }
        let mask = match top.get_collection("mask") {
            Some(node) => self.mask(node)?,
            None => MaskConfig::default(),
        };
        Ok(Policy {
            source: self.cx.file.to_path_buf(),
            fail_mode,
            subjects,
            mask,
        })
    }

    /// `mask: {patterns: [{name, regex}], allow: [regex]}`, each checked where it is.
    fn mask(&self, node: &Node) -> Result<MaskConfig, PolicyError> {
        use belay_mask::PatternConfig;
        let cx = &self.cx;
        let f = cx.map(node, "mask", &["patterns", "allow"])?;
        let mut config = MaskConfig::default();
        if let Some(list) = f.get_collection("patterns") {
            let items = cx.seq(list, "mask.patterns")?;
            if items.len() > belay_mask::MAX_PATTERNS {
                return Err(cx.err(
                    list,
                    "mask.patterns",
                    format!(
                        "at most {} patterns, got {}",
                        belay_mask::MAX_PATTERNS,
                        items.len()
                    ),
                ));
            }
            let mut lines: HashMap<String, usize> = HashMap::new();
            for (i, item) in items.iter().enumerate() {
                let path = format!("mask.patterns[{i}]");
                let p = cx.map(item, &path, &["name", "regex"])?;
                let name_node = p.require(cx, "name", &path)?;
                let regex_node = p.require(cx, "regex", &path)?;
                let pattern = PatternConfig {
                    name: cx.string(name_node, &format!("{path}.name"))?.to_owned(),
                    regex: cx.string(regex_node, &format!("{path}.regex"))?.to_owned(),
                };
                if let Some(line) = lines.get(&pattern.name) {
                    return Err(cx.err(
                        name_node,
                        &format!("{path}.name"),
                        format!(
                            "duplicate mask pattern name {:?} (first at line {line})",
                            pattern.name
                        ),
                    ));
                }
                if let Err(e) = belay_mask::validate_pattern(&pattern) {
                    let at = match e {
                        belay_mask::MaskError::BadName { .. } => {
                            (name_node, format!("{path}.name"))
                        }
                        _ => (regex_node, format!("{path}.regex")),
                    };
                    return Err(cx.err(at.0, &at.1, e));
                }
                lines.insert(pattern.name.clone(), name_node.pos.line);
                config.patterns.push(pattern);
            }
        }
        if let Some(list) = f.get_collection("allow") {
            let items = cx.seq(list, "mask.allow")?;
            if items.len() > belay_mask::MAX_ALLOW {
                return Err(cx.err(
                    list,
                    "mask.allow",
                    format!(
                        "at most {} entries, got {}",
                        belay_mask::MAX_ALLOW,
                        items.len()
                    ),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                let path = format!("mask.allow[{i}]");
                let regex = cx.string(item, &path)?;
                belay_mask::validate_allow(i, regex).map_err(|e| cx.err(item, &path, e))?;
                config.allow.push(regex.to_owned());
            }
        }
        Ok(config)
    }

    fn subject(
        &mut self,
        node: &Node,
        path: &str,
        defaults: &Defaults,
    ) -> Result<Subject, PolicyError> {
        let cx = &self.cx;
        let f = cx.map(
            node,
            path,
            &[
                "name",
                "owner",
                "match",
                "default",
                "deadline",
                "on_timeout",
                "exec",
                "egress",
            ],
        )?;
        let name_node = f.require(cx, "name", path)?;
        let name_path = join(path, "name");
        let name = cx.string(name_node, &name_path)?.to_owned();
        validate_name(&name).map_err(|m| cx.err(name_node, &name_path, m))?;
        let owner_node = f.require(cx, "owner", path)?;
        let owner = cx
            .string(owner_node, &join(path, "owner"))?
            .trim()
            .to_owned();
        if owner.is_empty() {
            return Err(cx.err(owner_node, &join(path, "owner"), "must not be empty"));
        }

        let (mut exec_default, mut egress_default) = (Action::Ask, Action::Ask);
        if let Some(d) = f.get("default") {
            let dpath = join(path, "default");
            match &d.kind {
                Kind::Map(_) => {
                    let df = cx.map(d, &dpath, &["exec", "egress"])?;
                    if let Some(v) = df.get("exec") {
                        exec_default = cx.action(v, &join(&dpath, "exec"))?;
                    }
                    if let Some(v) = df.get("egress") {
                        egress_default = cx.action(v, &join(&dpath, "egress"))?;
                    }
                }
                Kind::Scalar { .. } if !d.is_null() => {
                    exec_default = cx.action(d, &dpath)?;
                    egress_default = exec_default;
                }
                _ => {
                    return Err(cx.wrong_type(
                        d,
                        &dpath,
                        "an action or a mapping {exec: ACTION, egress: ACTION}",
                    ));
                }
            }
        }
        let deadline = match f.get("deadline") {
            Some(v) => cx.duration(v, &join(path, "deadline"))?,
            None => defaults.deadline,
        };
        let on_timeout = match f.get("on_timeout") {
            Some(v) => cx.verdict(v, &join(path, "on_timeout"))?,
            None => defaults.on_timeout,
        };

        let mut exec = Vec::new();
        if let Some(rules) = f.get_collection("exec") {
            let epath = join(path, "exec");
            let mut seen: HashMap<String, usize> = HashMap::new();
            for (i, r) in cx.seq(rules, &epath)?.iter().enumerate() {
                let rpath = format!("{epath}[{i}]");
                let rule = self.exec_rule(r, &rpath, i)?;
                unique_rule_name(&self.cx, &mut seen, &rule.name, rule.line, r, &rpath)?;
                exec.push(rule);
            }
        }
        let mut egress = Vec::new();
        if let Some(rules) = f.get_collection("egress") {
            let epath = join(path, "egress");
            let mut seen: HashMap<String, usize> = HashMap::new();
            for (i, r) in cx.seq(rules, &epath)?.iter().enumerate() {
                let rpath = format!("{epath}[{i}]");
                let rule = self.egress_rule(r, &rpath, i)?;
                unique_rule_name(&self.cx, &mut seen, &rule.name, rule.line, r, &rpath)?;
                egress.push(rule);
            }
        }

        let mut subject = Subject {
            id: agent_common::subject_id(name.as_bytes()),
            name,
            owner,
            cgroups: Vec::new(),
            executables: Vec::new(),
            uids: Vec::new(),
            enrolled: false,
            exec_default,
            egress_default,
            deadline,
            on_timeout,
            exec,
            egress,
            line: node.pos.line,
        };
        if let Some(m) = f.get_collection("match") {
            self.match_section(m, &join(path, "match"), &mut subject)?;
        }
        Ok(subject)
    }

    fn match_section(
        &mut self,
        node: &Node,
        path: &str,
        subject: &mut Subject,
    ) -> Result<(), PolicyError> {
        let cx = &self.cx;
        let f = cx.map(node, path, &["cgroups", "executables", "uids", "enrolled"])?;
        if let Some(v) = f.get("enrolled") {
            subject.enrolled = cx.boolean(v, &join(path, "enrolled"))?;
        }
        if let Some(list) = f.get_collection("cgroups") {
            let lpath = join(path, "cgroups");
            for (i, item) in cx.seq(list, &lpath)?.iter().enumerate() {
                let ipath = format!("{lpath}[{i}]");
                let text = cx.string(item, &ipath)?;
                let cg = normalize_cgroup(text).map_err(|m| cx.err(item, &ipath, m))?;
                if subject.cgroups.contains(&cg) {
                    continue;
                }
                claim(
                    cx,
                    &mut self.cgroups,
                    cg.clone(),
                    subject,
                    item,
                    &ipath,
                    || format!("cgroup {cg}"),
                )?;
                subject.cgroups.push(cg);
            }
        }
        if let Some(list) = f.get_collection("executables") {
            let lpath = join(path, "executables");
            for (i, item) in cx.seq(list, &lpath)?.iter().enumerate() {
                let ipath = format!("{lpath}[{i}]");
                let text = cx.string(item, &ipath)?;
                if !text.starts_with('/') {
                    return Err(cx.err(item, &ipath, format!("{text:?} is not an absolute path")));
                }
                if text.contains(['*', '?', '[']) {
                    return Err(cx.err(
                        item,
                        &ipath,
                        format!("{text:?}: executables are literal paths, globs are not supported"),
                    ));
                }
                if text.contains('\0') {
                    return Err(cx.err(item, &ipath, "path contains a NUL character"));
                }
                let exe = PathBuf::from(text);
                if subject.executables.contains(&exe) {
                    continue;
                }
                claim(
                    cx,
                    &mut self.exes,
                    exe.clone(),
                    subject,
                    item,
                    &ipath,
                    || format!("executable {text}"),
                )?;
                subject.executables.push(exe);
            }
        }
        if let Some(list) = f.get_collection("uids") {
            let lpath = join(path, "uids");
            for (i, item) in cx.seq(list, &lpath)?.iter().enumerate() {
                let ipath = format!("{lpath}[{i}]");
                let text = cx.string(item, &ipath)?;
                let uid = resolve_uid(text).map_err(|m| cx.err(item, &ipath, m))?;
                if subject.uids.contains(&uid) {
                    continue;
                }
                claim(cx, &mut self.uids, uid, subject, item, &ipath, || {
                    format!("uid {uid}")
                })?;
                subject.uids.push(uid);
            }
        }
        Ok(())
    }

    fn exec_rule(&self, node: &Node, path: &str, index: usize) -> Result<ExecRule, PolicyError> {
        let cx = &self.cx;
        let f = cx.map(
            node,
            path,
            &["name", "path", "argv", "action", "deadline", "on_timeout"],
        )?;
        let name = rule_name(cx, &f, path, || format!("exec[{index}]"))?;
        let path_node = f.require(cx, "path", path)?;
        let ppath = join(path, "path");
        let pattern = cx.string(path_node, &ppath)?;
        let glob = Glob::new(pattern, GlobMode::Path).map_err(|m| cx.err(path_node, &ppath, m))?;
        let argv = match f.get("argv") {
            None => None,
            Some(a) => {
                let apath = join(path, "argv");
                let pattern = cx.string(a, &apath)?;
                Some(Glob::new(pattern, GlobMode::Text).map_err(|m| cx.err(a, &apath, m))?)
            }
        };
        let action_node = f.require(cx, "action", path)?;
        let action = cx.action(action_node, &join(path, "action"))?;
        let (deadline, on_timeout) = rule_timeouts(cx, &f, path)?;
        Ok(ExecRule {
            name,
            line: node.pos.line,
            path: glob,
            argv,
            action,
            deadline,
            on_timeout,
        })
    }

    fn egress_rule(
        &self,
        node: &Node,
        path: &str,
        index: usize,
    ) -> Result<EgressRule, PolicyError> {
        let cx = &self.cx;
        let f = cx.map(
            node,
            path,
            &[
                "name",
                "to",
                "ports",
                "protocol",
                "action",
                "deadline",
                "on_timeout",
            ],
        )?;
        let name = rule_name(cx, &f, path, || format!("egress[{index}]"))?;
        let mut to = Vec::new();
        if let Some(list) = f.get("to") {
            let tpath = join(path, "to");
            let items = cx.seq(list, &tpath)?;
            if items.is_empty() {
                return Err(cx.err(
                    list,
                    &tpath,
                    "must not be empty (leave `to` out to match any destination)",
                ));
            }
            for (i, item) in items.iter().enumerate() {
                let ipath = format!("{tpath}[{i}]");
                let text = cx.string(item, &ipath)?;
                let dest = destination(text).map_err(|m| cx.err(item, &ipath, m))?;
                if !to.contains(&dest) {
                    to.push(dest);
                }
            }
        }
        let mut ports = Vec::new();
        if let Some(list) = f.get("ports") {
            let ppath = join(path, "ports");
            let items = cx.seq(list, &ppath)?;
            if items.is_empty() {
                return Err(cx.err(
                    list,
                    &ppath,
                    "must not be empty (leave `ports` out to match any port)",
                ));
            }
            for (i, item) in items.iter().enumerate() {
                let ipath = format!("{ppath}[{i}]");
                let text = cx.string(item, &ipath)?;
                let range = port_range(text).map_err(|m| cx.err(item, &ipath, m))?;
                if !ports.contains(&range) {
                    ports.push(range);
                }
            }
        }
        let protocol = match f.get("protocol") {
            None => None,
            Some(p) => {
                let ppath = join(path, "protocol");
                Some(match cx.string(p, &ppath)? {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    other => {
                        return Err(cx.err(
                            p,
                            &ppath,
                            format!("unknown protocol {other:?} (expected tcp or udp)"),
                        ));
                    }
                })
            }
        };
        let action_node = f.require(cx, "action", path)?;
        let action = cx.action(action_node, &join(path, "action"))?;
        let (deadline, on_timeout) = rule_timeouts(cx, &f, path)?;
        if to.iter().any(|d| matches!(d, Destination::Unix(_)))
            && (!ports.is_empty() || protocol.is_some())
        {
            return Err(cx.err(
                node,
                path,
                "ports and protocol do not apply to unix: destinations (put them in a rule of their own)",
            ));
        }
        Ok(EgressRule {
            name,
            line: node.pos.line,
            to,
            ports,
            protocol,
            action,
            deadline,
            on_timeout,
        })
    }
}

/// The entries of a mapping already checked by [`Cx::map`].
fn fields_of(item: &Node) -> Fields<'_> {
    match &item.kind {
        Kind::Map(entries) => Fields {
            node: item,
            entries,
        },
        _ => Fields {
            node: item,
            entries: &[],
        },
    }
}

fn claim<K: std::hash::Hash + Eq>(
    cx: &Cx<'_>,
    claims: &mut HashMap<K, Claim>,
    key: K,
    subject: &Subject,
    node: &Node,
    path: &str,
    what: impl FnOnce() -> String,
) -> Result<(), PolicyError> {
    if let Some(first) = claims.get(&key) {
        return Err(cx.err(
            node,
            path,
            format!(
                "{} is already claimed by subject {:?} (line {}); a process can be one subject only",
                what(),
                first.subject,
                first.line
            ),
        ));
    }
    claims.insert(
        key,
        Claim {
            subject: subject.name.clone(),
            line: node.pos.line,
        },
    );
    Ok(())
}

fn unique_rule_name(
    cx: &Cx<'_>,
    seen: &mut HashMap<String, usize>,
    name: &str,
    line: usize,
    node: &Node,
    path: &str,
) -> Result<(), PolicyError> {
    if let Some(first) = seen.get(name) {
        let target = match &node.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| scalar_text(k) == "name")
                .map_or(node, |(_, v)| v),
            _ => node,
        };
        return Err(cx.err(
            target,
            path,
            format!("duplicate rule name {name:?} (first at line {first})"),
        ));
    }
    seen.insert(name.to_owned(), line);
    Ok(())
}

fn rule_name(
    cx: &Cx<'_>,
    f: &Fields<'_>,
    path: &str,
    default: impl FnOnce() -> String,
) -> Result<String, PolicyError> {
    let Some(n) = f.get("name") else {
        return Ok(default());
    };
    let npath = join(path, "name");
    let name = cx.string(n, &npath)?;
    if name.trim().is_empty() {
        return Err(cx.err(n, &npath, "must not be empty"));
    }
    if name.chars().count() > MAX_RULE_NAME {
        return Err(cx.err(n, &npath, format!("longer than {MAX_RULE_NAME} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(cx.err(n, &npath, "contains a control character"));
    }
    Ok(name.to_owned())
}

fn rule_timeouts(
    cx: &Cx<'_>,
    f: &Fields<'_>,
    path: &str,
) -> Result<(Option<Duration>, Option<Verdict>), PolicyError> {
    let deadline = match f.get("deadline") {
        Some(v) => Some(cx.duration(v, &join(path, "deadline"))?),
        None => None,
    };
    let on_timeout = match f.get("on_timeout") {
        Some(v) => Some(cx.verdict(v, &join(path, "on_timeout"))?),
        None => None,
    };
    Ok((deadline, on_timeout))
}
