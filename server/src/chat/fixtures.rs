//! Requests for the chat unit tests.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU16;
use std::time::{Duration, SystemTime};

use belay_proto::domain::{
    Action, ConnectAction, ExecAction, HostName, Identity, Name, NewRequest, Protocol, Request,
    RequestContext, RequestId, Verdict,
};
use belay_proto::v1;

pub fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// A pending request of `host`, owned by `owner`, watched as `subject`.
pub fn request(host: &str, owner: &str, subject: &str) -> Request {
    let context = v1::RequestContext {
        subject: subject.into(),
        user: "deploy".into(),
        cwd: "/srv/app".into(),
        ..Default::default()
    };
    request_with(
        host,
        owner,
        RequestContext::try_from(context).unwrap(),
        connect(),
    )
}

pub fn connect() -> Action {
    Action::Connect(ConnectAction {
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        port: NonZeroU16::new(443).unwrap(),
        protocol: Protocol::Tcp,
    })
}

pub fn exec(path: &str, argv: &[&str]) -> Action {
    Action::Exec(
        ExecAction::new(path, argv.iter().map(|a| (*a).to_owned()).collect(), None).unwrap(),
    )
}

pub fn request_with(host: &str, owner: &str, context: RequestContext, action: Action) -> Request {
    let submitted = NewRequest {
        id: RequestId::new(format!("{host}:1")).unwrap(),
        agent_name: Name::new("copilot").unwrap(),
        pid: 77,
        uid: 1000,
        action,
        deadline: at(1_800_000_300),
        default_verdict: Verdict::Deny,
        rule: Name::new("egress").unwrap(),
        owner: None,
        context,
    };
    Request::new(
        submitted,
        HostName::new(host).unwrap(),
        Identity::new(owner).unwrap(),
        at(1_800_000_000),
    )
}
