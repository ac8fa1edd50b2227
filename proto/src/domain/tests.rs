use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU16;
use std::time::{Duration, SystemTime};

use super::*;
use crate::v1;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(123)
}

fn wire_connect() -> v1::Connect {
    v1::Connect {
        address: "192.0.2.7".into(),
        port: 443,
        protocol: v1::Protocol::Tcp.into(),
    }
}

fn wire_new_request() -> v1::NewRequest {
    v1::NewRequest {
        id: "01J9ZK3D-req.1".into(),
        agent_name: "copilot".into(),
        pid: 4242,
        uid: 1000,
        action: Some(v1::Action {
            kind: Some(v1::action::Kind::Connect(wire_connect())),
        }),
        deadline: Some(at(1_800_000_000).into()),
        default_verdict: v1::Verdict::Deny.into(),
        rule: "egress-unknown".into(),
        owner: String::new(),
        context: None,
    }
}

fn domain_request() -> Request {
    let submitted = NewRequest::try_from(wire_new_request()).unwrap();
    Request::new(
        submitted,
        HostName::new("build-7").unwrap(),
        Identity::new("alice@example.com").unwrap(),
        at(1_799_999_000),
    )
}

/// Converts `wire` and returns the field the error names, failing if it was accepted.
fn rejected_field<W, D>(wire: W) -> String
where
    D: TryFrom<W, Error = ValidationError> + std::fmt::Debug,
{
    D::try_from(wire)
        .expect_err("must be rejected")
        .field()
        .to_owned()
}

fn new_request_with(edit: impl FnOnce(&mut v1::NewRequest)) -> v1::NewRequest {
    let mut wire = wire_new_request();
    edit(&mut wire);
    wire
}

fn connect_with(edit: impl FnOnce(&mut v1::Connect)) -> v1::NewRequest {
    new_request_with(|r| {
        let mut connect = wire_connect();
        edit(&mut connect);
        r.action = Some(v1::Action {
            kind: Some(v1::action::Kind::Connect(connect)),
        });
    })
}

fn exec_with(exec: v1::Exec) -> v1::NewRequest {
    new_request_with(|r| {
        r.action = Some(v1::Action {
            kind: Some(v1::action::Kind::Exec(exec)),
        });
    })
}

fn wire_exec() -> v1::Exec {
    v1::Exec {
        path: "/usr/bin/curl".into(),
        argv: vec!["curl".into(), "https://example.com".into()],
        cwd: "/home/alice".into(),
        env: vec![
            "HOME=/home/alice".into(),
            "API_TOKEN=…[secret:0123abcd]".into(),
        ],
    }
}

#[test]
fn exec_env_is_bounded_like_argv() {
    let Action::Exec(exec) = NewRequest::try_from(exec_with(wire_exec())).unwrap().action else {
        panic!("expected exec");
    };
    assert_eq!(
        exec.env(),
        ["HOME=/home/alice", "API_TOKEN=…[secret:0123abcd]"]
    );
    let too_many = exec_with(v1::Exec {
        env: vec!["A=1".into(); limits::MAX_ENV_ENTRIES + 1],
        ..wire_exec()
    });
    let err = NewRequest::try_from(too_many).unwrap_err();
    assert!(err.to_string().contains("env"), "{err}");
    let too_much = exec_with(v1::Exec {
        env: vec![
            "A".repeat(limits::MAX_ARG_LEN);
            limits::MAX_ENV_TOTAL_LEN / limits::MAX_ARG_LEN + 1
        ],
        ..wire_exec()
    });
    assert!(NewRequest::try_from(too_much).is_err());
    let nul = exec_with(v1::Exec {
        env: vec!["A=\0".into()],
        ..wire_exec()
    });
    let err = NewRequest::try_from(nul).unwrap_err();
    assert!(err.to_string().contains("env[0]"), "{err}");
}

#[test]
fn new_request_round_trips() {
    let wire = wire_new_request();
    let domain = NewRequest::try_from(wire.clone()).unwrap();
    assert_eq!(
        domain.action,
        Action::Connect(ConnectAction {
            address: "192.0.2.7".parse().unwrap(),
            port: NonZeroU16::new(443).unwrap(),
            protocol: Protocol::Tcp,
        })
    );
    assert_eq!(domain.deadline, at(1_800_000_000));
    assert_eq!(v1::NewRequest::from(domain), wire);
}

#[test]
fn exec_round_trips_and_empty_cwd_means_unknown() {
    let wire = exec_with(wire_exec());
    let domain = NewRequest::try_from(wire.clone()).unwrap();
    assert_eq!(v1::NewRequest::from(domain), wire);

    let no_cwd = exec_with(v1::Exec {
        cwd: String::new(),
        argv: vec![],
        ..wire_exec()
    });
    let Action::Exec(exec) = NewRequest::try_from(no_cwd).unwrap().action else {
        panic!("expected exec");
    };
    assert_eq!(exec.cwd(), None);
    assert!(exec.argv().is_empty(), "argc == 0 is legal");
}

#[test]
fn ipv6_address_round_trips_in_canonical_form() {
    let wire = connect_with(|c| {
        c.address = "2001:db8::1".into();
        c.protocol = v1::Protocol::Udp.into();
    });
    let domain = NewRequest::try_from(wire.clone()).unwrap();
    let Action::Connect(connect) = &domain.action else {
        panic!("expected connect");
    };
    assert_eq!(
        connect.address,
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
    );
    assert_eq!(v1::NewRequest::from(domain), wire);
}

#[test]
fn request_round_trips_in_every_state() {
    let pending = domain_request();
    let outcomes = [
        None,
        Some(Outcome::Decided {
            verdict: Verdict::Allow,
            reviewer: Identity::new("bob").unwrap(),
        }),
        Some(Outcome::Decided {
            verdict: Verdict::Kill,
            reviewer: Identity::new("bob").unwrap(),
        }),
        Some(Outcome::Expired {
            verdict: Verdict::Deny,
        }),
        Some(Outcome::Cancelled),
    ];
    for outcome in outcomes {
        let mut request = pending.clone();
        request.resolution = outcome.map(|outcome| Resolution {
            outcome,
            reason: Reason::new("looked fine\nto me").unwrap(),
            resolved_at: at(1_799_999_500),
        });
        let wire = v1::Request::from(request.clone());
        assert_eq!(wire.state, v1::RequestState::from(request.state()) as i32);
        assert_eq!(Request::try_from(wire).unwrap(), request);
    }
}

#[test]
fn messages_round_trip() {
    let hello = Hello {
        host: HostName::new("build-7").unwrap(),
        version: Name::new("0.1.0").unwrap(),
        owner: Identity::new("alice").unwrap(),
    };
    let messages = [
        AgentMessage::Hello(hello),
        AgentMessage::Request(NewRequest::try_from(wire_new_request()).unwrap()),
        AgentMessage::VerdictApplied(VerdictApplied {
            request_id: RequestId::new("r1").unwrap(),
            verdict: Verdict::Kill,
        }),
        AgentMessage::Withdraw(Withdraw {
            request_id: RequestId::new("r1").unwrap(),
            reason: Reason::new("process exited").unwrap(),
        }),
    ];
    for message in messages {
        let wire = v1::AgentMessage::from(message.clone());
        assert_eq!(AgentMessage::try_from(wire).unwrap(), message);
    }

    let decision = Decision {
        request_id: RequestId::new("r1").unwrap(),
        verdict: Verdict::Deny,
        reason: Reason::empty(),
        state: RequestState::Expired,
    };
    assert_eq!(
        Decision::try_from(v1::Decision::from(decision.clone())).unwrap(),
        decision
    );

    let decide = ReviewerDecision {
        request_id: RequestId::new("r1").unwrap(),
        verdict: Verdict::Allow,
        reason: Reason::new("ok").unwrap(),
        reviewer: Identity::new("bob").unwrap(),
        scope: crate::domain::Scope::Once,
    };
    assert_eq!(
        ReviewerDecision::try_from(v1::DecideRequest::from(decide.clone())).unwrap(),
        decide
    );
}

#[test]
fn decision_for_request_follows_the_outcome() {
    let mut request = domain_request();
    assert_eq!(Decision::for_request(&request), None, "pending");

    request.resolution = Some(Resolution {
        outcome: Outcome::Expired {
            verdict: Verdict::Deny,
        },
        reason: Reason::new("deadline passed").unwrap(),
        resolved_at: at(1_800_000_000),
    });
    let decision = Decision::for_request(&request).unwrap();
    assert_eq!(decision.verdict, Verdict::Deny);
    assert_eq!(decision.state, RequestState::Expired);

    request.resolution.as_mut().unwrap().outcome = Outcome::Cancelled;
    assert_eq!(Decision::for_request(&request), None, "cancelled");
}

#[test]
fn rejects_empty_or_malformed_id() {
    let field = rejected_field::<_, NewRequest>(new_request_with(|r| r.id.clear()));
    assert_eq!(field, "id");
    let err = NewRequest::try_from(new_request_with(|r| r.id = "a b".into())).unwrap_err();
    assert_eq!(err.problem(), &Problem::ForbiddenChar(' '));
    let err = NewRequest::try_from(new_request_with(|r| {
        r.id = "x".repeat(limits::MAX_ID_LEN + 1);
    }))
    .unwrap_err();
    assert!(matches!(err.problem(), Problem::TooLong { max, .. } if *max == limits::MAX_ID_LEN));
}

#[test]
fn rejects_missing_action_and_missing_action_kind() {
    let err = NewRequest::try_from(new_request_with(|r| r.action = None)).unwrap_err();
    assert_eq!((err.field(), err.problem()), ("action", &Problem::Missing));
    let field = rejected_field::<_, NewRequest>(new_request_with(|r| {
        r.action = Some(v1::Action { kind: None });
    }));
    assert_eq!(field, "action.kind");
}

#[test]
fn rejects_port_zero_and_ports_above_u16() {
    for port in [0, 65_536] {
        let err = NewRequest::try_from(connect_with(|c| c.port = port)).unwrap_err();
        assert_eq!(err.field(), "action.connect.port");
        assert_eq!(err.problem(), &Problem::PortOutOfRange(port));
    }
}

#[test]
fn rejects_addresses_that_are_not_ip_literals() {
    for address in ["", "example.com", "192.0.2.256", "192.0.2.1:80"] {
        let err = NewRequest::try_from(connect_with(|c| c.address = address.into())).unwrap_err();
        assert_eq!(err.field(), "action.connect.address", "{address:?}");
    }
    let err = NewRequest::try_from(connect_with(|c| c.address = "1".repeat(100))).unwrap_err();
    assert!(matches!(err.problem(), Problem::TooLong { .. }));
}

#[test]
fn rejects_unspecified_and_unknown_enums() {
    let err = NewRequest::try_from(connect_with(|c| c.protocol = 0)).unwrap_err();
    assert_eq!(
        (err.field(), err.problem()),
        ("action.connect.protocol", &Problem::Unspecified)
    );
    let err = NewRequest::try_from(new_request_with(|r| r.default_verdict = 0)).unwrap_err();
    assert_eq!(
        (err.field(), err.problem()),
        ("default_verdict", &Problem::Unspecified)
    );
    let err = NewRequest::try_from(new_request_with(|r| r.default_verdict = 99)).unwrap_err();
    assert_eq!(err.problem(), &Problem::UnknownEnumValue(99));

    let decide = v1::DecideRequest {
        request_id: "r1".into(),
        verdict: v1::Verdict::Unspecified.into(),
        reason: String::new(),
        reviewer: "bob".into(),
        scope: None,
    };
    assert_eq!(rejected_field::<_, ReviewerDecision>(decide), "verdict");
}

#[test]
fn rejects_missing_deadline() {
    let field = rejected_field::<_, NewRequest>(new_request_with(|r| r.deadline = None));
    assert_eq!(field, "deadline");
}

#[test]
fn rejects_oversize_exec_fields() {
    let long_path = exec_with(v1::Exec {
        path: format!("/{}", "a".repeat(limits::MAX_PATH_LEN)),
        ..wire_exec()
    });
    assert_eq!(
        rejected_field::<_, NewRequest>(long_path),
        "action.exec.path"
    );

    let too_many = exec_with(v1::Exec {
        argv: vec!["x".into(); limits::MAX_ARGV_ENTRIES + 1],
        ..wire_exec()
    });
    assert_eq!(
        rejected_field::<_, NewRequest>(too_many),
        "action.exec.argv"
    );

    let long_arg = exec_with(v1::Exec {
        argv: vec!["ok".into(), "y".repeat(limits::MAX_ARG_LEN + 1)],
        ..wire_exec()
    });
    assert_eq!(
        rejected_field::<_, NewRequest>(long_arg),
        "action.exec.argv[1]"
    );

    let too_much_in_total = exec_with(v1::Exec {
        argv: vec![
            "z".repeat(limits::MAX_ARG_LEN);
            limits::MAX_ARGV_TOTAL_LEN / limits::MAX_ARG_LEN + 1
        ],
        ..wire_exec()
    });
    let err = NewRequest::try_from(too_much_in_total).unwrap_err();
    assert_eq!(err.field(), "action.exec.argv");
    assert!(
        matches!(err.problem(), Problem::TooLong { max, .. } if *max == limits::MAX_ARGV_TOTAL_LEN)
    );

    let empty_path = exec_with(v1::Exec {
        path: String::new(),
        ..wire_exec()
    });
    assert_eq!(
        rejected_field::<_, NewRequest>(empty_path),
        "action.exec.path"
    );

    let nul_in_cwd = exec_with(v1::Exec {
        cwd: "/tmp\0x".into(),
        ..wire_exec()
    });
    assert_eq!(
        rejected_field::<_, NewRequest>(nul_in_cwd),
        "action.exec.cwd"
    );
}

#[test]
fn rejects_identities_that_could_pass_for_another() {
    for owner in ["", " alice", "alice\n", "al ice"] {
        let hello = v1::Hello {
            host: "build-7".into(),
            version: "0.1.0".into(),
            owner: owner.into(),
        };
        assert_eq!(rejected_field::<_, Hello>(hello), "owner", "{owner:?}");
    }
    let err = Identity::new("x".repeat(limits::MAX_IDENTITY_LEN + 1)).unwrap_err();
    assert!(matches!(err.problem(), Problem::TooLong { .. }));
}

#[test]
fn rejects_oversize_reason_but_accepts_empty() {
    assert!(Reason::new("").is_ok());
    let withdraw = v1::Withdraw {
        request_id: "r1".into(),
        reason: "r".repeat(limits::MAX_REASON_LEN + 1),
    };
    assert_eq!(rejected_field::<_, Withdraw>(withdraw), "reason");
}

#[test]
fn nested_fields_are_named_by_their_full_path() {
    let message = v1::AgentMessage {
        kind: Some(v1::agent_message::Kind::Request(connect_with(|c| {
            c.port = 0
        }))),
    };
    let err = AgentMessage::try_from(message).unwrap_err();
    assert_eq!(err.field(), "request.action.connect.port");
    assert_eq!(
        AgentMessage::try_from(v1::AgentMessage { kind: None })
            .unwrap_err()
            .field(),
        "kind"
    );
}

#[test]
fn validation_error_becomes_invalid_argument_naming_the_field() {
    let err = NewRequest::try_from(connect_with(|c| c.port = 0)).unwrap_err();
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "invalid action.connect.port: must be in 1..=65535, got 0"
    );
}

#[test]
fn rejects_requests_whose_state_and_resolution_disagree() {
    let pending = v1::Request::from(domain_request());

    let mut approved_without_resolution = pending.clone();
    approved_without_resolution.state = v1::RequestState::Approved.into();
    assert_eq!(
        rejected_field::<_, Request>(approved_without_resolution),
        "resolution"
    );

    let resolution = v1::Resolution {
        verdict: v1::Verdict::Deny.into(),
        reason: String::new(),
        reviewer: "bob".into(),
        resolved_at: Some(at(1_800_000_000).into()),
    };
    let mut pending_with_resolution = pending.clone();
    pending_with_resolution.resolution = Some(resolution.clone());
    assert_eq!(
        rejected_field::<_, Request>(pending_with_resolution),
        "resolution"
    );

    let mut approved_with_deny = pending.clone();
    approved_with_deny.state = v1::RequestState::Approved.into();
    approved_with_deny.resolution = Some(resolution.clone());
    assert_eq!(
        rejected_field::<_, Request>(approved_with_deny),
        "resolution.verdict"
    );

    let mut denied_without_reviewer = pending.clone();
    denied_without_reviewer.state = v1::RequestState::Denied.into();
    denied_without_reviewer.resolution = Some(v1::Resolution {
        reviewer: String::new(),
        ..resolution
    });
    assert_eq!(
        rejected_field::<_, Request>(denied_without_reviewer),
        "resolution.reviewer"
    );

    let mut unspecified_state = pending;
    unspecified_state.state = 0;
    assert_eq!(rejected_field::<_, Request>(unspecified_state), "state");
}

#[test]
fn rejects_decisions_that_cannot_be_applied() {
    let decision = v1::Decision {
        request_id: "r1".into(),
        verdict: v1::Verdict::Allow.into(),
        reason: String::new(),
        state: v1::RequestState::Denied.into(),
    };
    assert_eq!(rejected_field::<_, Decision>(decision.clone()), "state");
    let pending = v1::Decision {
        state: v1::RequestState::Pending.into(),
        ..decision
    };
    assert_eq!(rejected_field::<_, Decision>(pending), "state");
}

#[test]
fn text_constructors_name_a_default_field() {
    assert_eq!(RequestId::new("").unwrap_err().field(), "request_id");
    assert_eq!(HostName::new("a\tb").unwrap_err().field(), "host");
}

#[test]
fn a_verdict_has_one_name_in_json_text_and_on_the_wire() {
    for (verdict, name, wire) in [
        (Verdict::Allow, "allow", v1::Verdict::Allow),
        (Verdict::Deny, "deny", v1::Verdict::Deny),
        (Verdict::Kill, "kill", v1::Verdict::Kill),
    ] {
        assert_eq!(verdict.as_str(), name);
        assert_eq!(name.parse::<Verdict>(), Ok(verdict));
        assert_eq!(v1::Verdict::from(verdict), wire);
        assert_eq!(Verdict::try_from(wire), Ok(verdict));
    }
    assert_eq!(
        "maybe".parse::<Verdict>().unwrap_err().to_string(),
        "unknown verdict \"maybe\" (expected allow, deny or kill)"
    );
    assert_eq!(
        Verdict::try_from(v1::Verdict::Unspecified),
        Err(Problem::Unspecified)
    );
}
