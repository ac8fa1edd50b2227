//! The masker against the generated labelled corpus: recall on known formats, false
//! positives on ordinary command lines, idempotence, and that no raw secret survives.
use belay_mask::{MaskConfig, Masker, corpus};

fn masker() -> Masker {
    Masker::new(&MaskConfig::default(), [0x42; 32]).unwrap()
}

#[test]
fn recall_on_known_formats_is_at_least_99_percent_and_every_kind_is_covered() {
    let m = masker();
    let samples = corpus::secret_samples(corpus::SEED, 60);
    let (recall, missed) = corpus::recall(&m, &samples);
    let show: Vec<String> = missed
        .iter()
        .take(10)
        .map(|&i| {
            let s = &samples[i];
            format!(
                "{}: {:?} {:?} -> {:?} {:?}",
                s.kind,
                s.argv,
                s.env,
                m.mask_argv(&s.argv),
                m.mask_env(&s.env)
            )
        })
        .collect();
    assert!(
        recall >= 0.99,
        "recall {recall}; missed e.g.:\n{}",
        show.join("\n")
    );
    // No kind may be missed systematically, even if the total is fine.
    let mut kinds: Vec<&str> = samples.iter().map(|s| s.kind).collect();
    kinds.dedup();
    for kind in kinds {
        let of: Vec<&corpus::Sample> = samples.iter().filter(|s| s.kind == kind).collect();
        let miss = missed.iter().filter(|&&i| samples[i].kind == kind).count();
        assert!(
            miss * 20 <= of.len(),
            "{kind}: {miss} of {} missed",
            of.len()
        );
    }
}

#[test]
fn detected_kind_matches_the_label() {
    let m = masker();
    let samples = corpus::secret_samples(corpus::SEED + 1, 5);
    for s in &samples {
        let (_, fa) = m.mask_argv_report(&s.argv);
        let (_, fe) = m.mask_env_report(&s.env);
        let kinds: Vec<&str> = fa.iter().chain(&fe).map(|f| f.kind.as_str()).collect();
        let want = match s.kind {
            "gcp-key" => "gcp-key-id",
            k => k,
        };
        assert!(
            kinds.contains(&want),
            "{}: found {kinds:?} in {:?} {:?}",
            s.kind,
            s.argv,
            s.env
        );
    }
}

#[test]
fn false_positives_on_ordinary_command_lines_stay_below_1_percent() {
    let m = masker();
    let lines = corpus::ordinary_argv(corpus::SEED, 5000);
    let (rate, hit) = corpus::false_positive_rate(&m, &lines);
    let show: Vec<String> = hit
        .iter()
        .take(10)
        .map(|&i| format!("{:?} -> {:?}", lines[i], m.mask_argv(&lines[i])))
        .collect();
    assert!(
        rate < 0.01,
        "false positive rate {rate}:\n{}",
        show.join("\n")
    );
}

#[test]
fn ordinary_environments_stay_unmasked() {
    let m = masker();
    let env = corpus::ordinary_env(corpus::SEED, 3000);
    let out = m.mask_env(&env);
    let changed: Vec<(&String, &String)> = env.iter().zip(&out).filter(|(a, b)| a != b).collect();
    assert!(
        changed.len() * 100 < env.len(),
        "{} changed, e.g. {:?}",
        changed.len(),
        &changed[..changed.len().min(5)]
    );
}

#[test]
fn masking_is_idempotent_on_the_whole_corpus() {
    let m = masker();
    for s in corpus::secret_samples(corpus::SEED + 2, 10) {
        let once = m.mask_argv(&s.argv);
        assert_eq!(m.mask_argv(&once), once, "argv {:?}", s.argv);
        let env = m.mask_env(&s.env);
        assert_eq!(m.mask_env(&env), env);
        // And as plain text, the way `belay mask` and upstream's second pass see it.
        let text = once.join(" ");
        assert_eq!(m.mask(&text), text);
    }
}

#[test]
fn the_raw_secret_never_appears_in_text_mode_either() {
    // `belay mask` and upstream's second pass see plain text: a joined command line
    // must be masked as well as its argv.
    let m = masker();
    let samples = corpus::secret_samples(corpus::SEED + 3, 20);
    let mut leaks = Vec::new();
    for s in &samples {
        let text = s
            .argv
            .iter()
            .chain(&s.env)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        let out = m.mask(&text);
        if s.secrets.iter().any(|sec| out.contains(sec.as_str())) {
            leaks.push(format!("{}: {text:?} -> {out:?}", s.kind));
        }
    }
    assert!(
        leaks.len() * 100 <= samples.len(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks[..leaks.len().min(10)].join("\n")
    );
}
