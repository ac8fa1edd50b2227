use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU16;

use super::error::{Problem, ValidationError, WithinField, required};
use super::limits;
use crate::v1;

/// What a watched process tried to do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    Exec(ExecAction),
    Connect(ConnectAction),
}

/// A program about to be executed. Fields are private so that the limits hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExecAction {
    path: String,
    argv: Vec<String>,
    cwd: Option<String>,
    /// Masked on the host, like argv; empty when unknown.
    env: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectAction {
    pub address: IpAddr,
    pub port: NonZeroU16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl ExecAction {
    /// `path` must be non-empty; `cwd` of `None` means unknown. NUL cannot occur in
    /// kernel strings, so its presence means a corrupted or forged value.
    pub fn new(
        path: impl Into<String>,
        argv: Vec<String>,
        cwd: Option<String>,
    ) -> Result<Self, ValidationError> {
        let path = path.into();
        check_path("path", &path)?;
        if let Some(cwd) = &cwd {
            check_path("cwd", cwd)?;
        }
        check_argv(&argv)?;
        Ok(Self {
            path,
            argv,
            cwd,
            env: Vec::new(),
        })
    }

    /// The same exec with its (masked) environment, `NAME=VALUE` each.
    pub fn with_env(self, env: Vec<String>) -> Result<Self, ValidationError> {
        check_strings(
            "env",
            &env,
            limits::MAX_ENV_ENTRIES,
            limits::MAX_ARG_LEN,
            limits::MAX_ENV_TOTAL_LEN,
        )?;
        Ok(Self { env, ..self })
    }

    pub fn env(&self) -> &[String] {
        &self.env
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    pub fn cwd(&self) -> Option<&str> {
        self.cwd.as_deref()
    }
}

fn check_path(field: &str, path: &str) -> Result<(), ValidationError> {
    if path.is_empty() {
        return Err(ValidationError::new(field, Problem::Empty));
    }
    if path.len() > limits::MAX_PATH_LEN {
        return Err(ValidationError::new(
            field,
            Problem::TooLong {
                len: path.len(),
                max: limits::MAX_PATH_LEN,
            },
        ));
    }
    if path.contains('\0') {
        return Err(ValidationError::new(field, Problem::ForbiddenChar('\0')));
    }
    Ok(())
}

fn check_argv(argv: &[String]) -> Result<(), ValidationError> {
    check_strings(
        "argv",
        argv,
        limits::MAX_ARGV_ENTRIES,
        limits::MAX_ARG_LEN,
        limits::MAX_ARGV_TOTAL_LEN,
    )
}

/// A list of strings from a process (argv, env): counted, each and all bounded, no NUL.
fn check_strings(
    name: &str,
    items: &[String],
    max_entries: usize,
    max_each: usize,
    max_total: usize,
) -> Result<(), ValidationError> {
    if items.len() > max_entries {
        return Err(ValidationError::new(
            name,
            Problem::TooMany {
                count: items.len(),
                max: max_entries,
            },
        ));
    }
    let mut total = 0;
    for (i, item) in items.iter().enumerate() {
        let field = || format!("{name}[{i}]");
        if item.len() > max_each {
            return Err(ValidationError::new(
                field(),
                Problem::TooLong {
                    len: item.len(),
                    max: max_each,
                },
            ));
        }
        if item.contains('\0') {
            return Err(ValidationError::new(field(), Problem::ForbiddenChar('\0')));
        }
        total += item.len();
    }
    if total > max_total {
        return Err(ValidationError::new(
            name,
            Problem::TooLong {
                len: total,
                max: max_total,
            },
        ));
    }
    Ok(())
}

impl TryFrom<v1::Action> for Action {
    type Error = ValidationError;

    fn try_from(action: v1::Action) -> Result<Self, Self::Error> {
        match required("kind", action.kind)? {
            v1::action::Kind::Exec(exec) => Ok(Self::Exec(exec.try_into().within("exec")?)),
            v1::action::Kind::Connect(connect) => {
                Ok(Self::Connect(connect.try_into().within("connect")?))
            }
        }
    }
}

impl From<Action> for v1::Action {
    fn from(action: Action) -> Self {
        let kind = match action {
            Action::Exec(exec) => v1::action::Kind::Exec(exec.into()),
            Action::Connect(connect) => v1::action::Kind::Connect(connect.into()),
        };
        Self { kind: Some(kind) }
    }
}

impl TryFrom<v1::Exec> for ExecAction {
    type Error = ValidationError;

    fn try_from(exec: v1::Exec) -> Result<Self, Self::Error> {
        let cwd = (!exec.cwd.is_empty()).then_some(exec.cwd);
        Self::new(exec.path, exec.argv, cwd)?.with_env(exec.env)
    }
}

impl From<ExecAction> for v1::Exec {
    fn from(exec: ExecAction) -> Self {
        Self {
            path: exec.path,
            argv: exec.argv,
            cwd: exec.cwd.unwrap_or_default(),
            env: exec.env,
        }
    }
}

impl TryFrom<v1::Connect> for ConnectAction {
    type Error = ValidationError;

    fn try_from(connect: v1::Connect) -> Result<Self, Self::Error> {
        if connect.address.len() > limits::MAX_ADDRESS_LEN {
            return Err(ValidationError::new(
                "address",
                Problem::TooLong {
                    len: connect.address.len(),
                    max: limits::MAX_ADDRESS_LEN,
                },
            ));
        }
        let address = connect.address.parse::<IpAddr>().map_err(|_| {
            ValidationError::new("address", Problem::NotAnIpAddress(connect.address))
        })?;
        let port = u16::try_from(connect.port)
            .ok()
            .and_then(NonZeroU16::new)
            .ok_or_else(|| ValidationError::new("port", Problem::PortOutOfRange(connect.port)))?;
        let protocol = Protocol::from_wire(connect.protocol)
            .map_err(|p| ValidationError::new("protocol", p))?;
        Ok(Self {
            address,
            port,
            protocol,
        })
    }
}

impl From<ConnectAction> for v1::Connect {
    fn from(connect: ConnectAction) -> Self {
        Self {
            address: connect.address.to_string(),
            port: u32::from(connect.port.get()),
            protocol: v1::Protocol::from(connect.protocol).into(),
        }
    }
}

impl Protocol {
    /// The protocol of a wire value; `Unspecified` and unknown values are problems.
    pub fn from_wire(value: i32) -> Result<Self, Problem> {
        match v1::Protocol::try_from(value) {
            Ok(v1::Protocol::Tcp) => Ok(Self::Tcp),
            Ok(v1::Protocol::Udp) => Ok(Self::Udp),
            Ok(v1::Protocol::Unspecified) => Err(Problem::Unspecified),
            Err(_) => Err(Problem::UnknownEnumValue(value)),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Protocol> for v1::Protocol {
    fn from(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Tcp => Self::Tcp,
            Protocol::Udp => Self::Udp,
        }
    }
}
