use super::*;

fn full() -> v1::RequestContext {
    v1::RequestContext {
        ancestry: vec![
            v1::Ancestor {
                pid: 812,
                comm: "bash".into(),
                exe: "/usr/bin/bash".into(),
            },
            v1::Ancestor {
                pid: 1,
                comm: "systemd".into(),
                exe: String::new(),
            },
        ],
        user: "dev".into(),
        cgroup: "/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope".into(),
        container_id: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
        pod_uid: "0b6f3a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
        cwd: "/home/dev/project".into(),
        subject: "copilot".into(),
        hostnames: vec!["api.example.com".into(), "example.com.".into()],
        intent: Some(v1::DeclaredIntent {
            text: "run the migration the user asked for".into(),
            model: "gpt-x".into(),
            session_id: "s-1".into(),
            tool_call_id: String::new(),
            user_request_id: String::new(),
            declared_by_pid: 812,
            declared_at: Some(std::time::SystemTime::UNIX_EPOCH.into()),
        }),
    }
}

fn refused(wire: v1::RequestContext) -> ValidationError {
    RequestContext::try_from(wire).expect_err("must be refused")
}

#[test]
fn a_full_context_round_trips() {
    let parsed = RequestContext::try_from(full()).unwrap();
    assert_eq!(parsed.ancestry().len(), 2);
    assert_eq!(parsed.ancestry()[0].exe(), Some("/usr/bin/bash"));
    assert_eq!(parsed.ancestry()[1].exe(), None);
    assert_eq!(parsed.user(), Some("dev"));
    assert_eq!(parsed.hostnames(), ["api.example.com", "example.com."]);
    assert_eq!(v1::RequestContext::from(parsed), full());
}

#[test]
fn absent_and_empty_are_the_empty_context() {
    assert!(parse_optional(None).unwrap().is_empty());
    let empty = parse_optional(Some(v1::RequestContext::default())).unwrap();
    assert!(empty.is_empty());
    assert_eq!(to_optional(empty), None);
    assert!(to_optional(RequestContext::try_from(full()).unwrap()).is_some());
}

/// A field path and a change that makes it malformed.
type Case = (&'static str, fn(&mut v1::RequestContext));

#[test]
fn malformed_fields_are_named() {
    let cases: Vec<Case> = vec![
        ("ancestry[1].pid", |c| c.ancestry[1].pid = 0),
        ("ancestry[0].comm", |c| {
            c.ancestry[0].comm = "ba\u{1b}[2Jsh".into()
        }),
        ("ancestry[0].exe", |c| c.ancestry[0].exe = "bash".into()),
        ("user", |c| c.user = "dev\nroot".into()),
        ("cgroup", |c| c.cgroup = "system.slice".into()),
        ("container_id", |c| {
            c.container_id = "0123456789ABCDEF".into()
        }),
        ("pod_uid", |c| c.pod_uid = "not-a-uid".into()),
        ("cwd", |c| c.cwd = "relative/dir".into()),
        ("subject", |c| c.subject = "\u{7}".into()),
        ("hostnames[1]", |c| c.hostnames[1] = "evil host".into()),
        ("hostnames[0]", |c| c.hostnames[0] = "a..b".into()),
        ("hostnames[0]", |c| c.hostnames[0] = String::new()),
    ];
    for (field, edit) in cases {
        let mut wire = full();
        edit(&mut wire);
        assert_eq!(refused(wire).field(), field);
    }
}

#[test]
fn oversized_contexts_are_refused() {
    let mut wire = full();
    wire.ancestry = vec![wire.ancestry[0].clone(); limits::MAX_ANCESTRY + 1];
    assert_eq!(
        *refused(wire).problem(),
        Problem::TooMany {
            count: limits::MAX_ANCESTRY + 1,
            max: limits::MAX_ANCESTRY
        }
    );

    let mut wire = full();
    wire.hostnames = vec!["a.example".into(); limits::MAX_HOSTNAMES + 1];
    assert_eq!(refused(wire).field(), "hostnames");

    let mut wire = full();
    wire.ancestry[0].comm = "x".repeat(limits::MAX_COMM_LEN + 1);
    assert_eq!(refused(wire).field(), "ancestry[0].comm");

    let mut wire = full();
    wire.cwd = format!("/{}", "d".repeat(limits::MAX_PATH_LEN));
    assert_eq!(refused(wire).field(), "cwd");

    // Every field within its own bound, together too much.
    let mut wire = full();
    let long_exe = format!("/{}", "e".repeat(limits::MAX_PATH_LEN - 1));
    wire.ancestry = (1..=limits::MAX_ANCESTRY as u32)
        .map(|pid| v1::Ancestor {
            pid,
            comm: "sh".into(),
            exe: long_exe.clone(),
        })
        .collect();
    let err = refused(wire);
    assert_eq!(err.field(), "total_size");
    assert!(
        matches!(err.problem(), Problem::TooLong { max, .. } if *max == limits::MAX_CONTEXT_TOTAL_LEN)
    );
}

#[test]
fn errors_inside_a_request_name_the_full_path() {
    let mut wire = full();
    wire.cwd = "x".into();
    let err = parse_optional(Some(wire)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid context.cwd: must be an absolute path"
    );
}

#[test]
fn a_bad_intent_is_refused_with_its_path() {
    let mut wire = full();
    wire.intent.as_mut().unwrap().text = "\u{7}".into();
    assert!(refused(wire).to_string().contains("intent"));
}
