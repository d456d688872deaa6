//! The configuration's tests, through [`load`] as the daemon calls it: each layer,
//! their order, and the settings that are refused.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_derive_from_data_dir() {
    let config = load(
        &Flags {
            data_dir: Some("/d".into()),
            ..Flags::default()
        },
        vec![],
    )
    .unwrap();
    assert_eq!(config.storage_path, PathBuf::from("/d/storage"));
    assert_eq!(config.snapshots_path, PathBuf::from("/d/snapshots"));
    assert_eq!(config.temp_path, PathBuf::from("/d/tmp"));
    assert_eq!(config.socket, PathBuf::from("/d/snapfs.sock"));
    assert_eq!(config.http, None);
    assert_eq!(config.max_request_size_mb, 32);
}

#[test]
fn flags_beat_env_beat_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(
        &file,
        "storage:\n  storage_path: /file/storage\n  temp_path: /file/tmp\n  snapshots_path: /file/snaps\nservice:\n  api_key: from-file\n  http_port: 7000\n",
    )
    .unwrap();
    let flags = Flags {
        config_file: Some(file),
        api_key: Some("from-flag".into()),
        ..Flags::default()
    };
    let config = load(
        &flags,
        env(&[
            ("SNAPFS__STORAGE__TEMP_PATH", "/env/tmp"),
            ("SNAPFS__STORAGE__SNAPSHOTS_PATH", "/env/snaps"),
            ("OTHER", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(config.storage_path, PathBuf::from("/file/storage"));
    assert_eq!(config.temp_path, PathBuf::from("/env/tmp"));
    assert_eq!(config.snapshots_path, PathBuf::from("/env/snaps"));
    assert_eq!(config.api_key.as_deref(), Some("from-flag"));
    assert_eq!(config.http, Some("127.0.0.1:7000".parse().unwrap()));
}

#[test]
fn the_packaged_config_loads_with_its_empty_sections() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, include_str!("../../packaging/config.yaml")).unwrap();
    let flags = Flags {
        config_file: Some(file),
        ..Flags::default()
    };
    let config = load(&flags, vec![]).unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/snapfs"));
    assert_eq!(config.mount, Some(PathBuf::from("/mnt/snapfs")));
    assert!(config.allow_other);
    assert_eq!(config.group.as_deref(), Some("snapfs"));
    assert_eq!(config.http, None);
    // The flags alone say the same.
    let flags = Flags {
        allow_other: true,
        group: Some("ops".into()),
        ..Flags::default()
    };
    let config = load(&flags, vec![]).unwrap();
    assert!(config.allow_other);
    assert_eq!(config.group.as_deref(), Some("ops"));
}

#[test]
fn numeric_env_values_fit_string_keys() {
    let config = load(
        &Flags::default(),
        env(&[
            ("SNAPFS__SERVICE__API_KEY", "12345"),
            ("SNAPFS__SERVICE__HTTP_PORT", "6333"),
        ]),
    )
    .unwrap();
    assert_eq!(config.api_key.as_deref(), Some("12345"));
    assert_eq!(config.http.unwrap().port(), 6333);
}

#[test]
fn listener_limits_have_defaults_and_keys_and_refuse_zero() {
    let config = load(&Flags::default(), vec![]).unwrap();
    assert_eq!(config.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(config.grpc_max_concurrent_streams, 32);
    assert_eq!(config.grpc_max_concurrent_calls, 64);
    assert_eq!(config.connection_auth_timeout.as_secs(), 30);
    let config = load(
        &Flags::default(),
        env(&[
            ("SNAPFS__SERVICE__MAX_CONNECTIONS", "8"),
            ("SNAPFS__SERVICE__CONNECTION_AUTH_TIMEOUT_SECS", "2.5"),
            ("SNAPFS__SERVICE__GRPC_MAX_CONCURRENT_STREAMS", "4"),
            ("SNAPFS__SERVICE__GRPC_MAX_CONCURRENT_CALLS", "3"),
        ]),
    )
    .unwrap();
    assert_eq!(config.max_connections, 8);
    assert_eq!(config.connection_auth_timeout.as_millis(), 2500);
    assert_eq!(config.grpc_max_concurrent_streams, 4);
    assert_eq!(config.grpc_max_concurrent_calls, 3);
    for key in [
        "SNAPFS__SERVICE__MAX_CONNECTIONS",
        "SNAPFS__SERVICE__CONNECTION_AUTH_TIMEOUT_SECS",
        "SNAPFS__SERVICE__GRPC_MAX_CONCURRENT_STREAMS",
        "SNAPFS__SERVICE__GRPC_MAX_CONCURRENT_CALLS",
    ] {
        let err = load(&Flags::default(), env(&[(key, "0")])).unwrap_err();
        assert!(format!("{err:#}").contains("service."), "{key}: {err:#}");
    }
}

#[test]
fn rejects_unsafe_or_wrong_settings() {
    let no_key = Flags {
        http: Some("127.0.0.1:6333".parse().unwrap()),
        ..Flags::default()
    };
    assert!(
        load(&no_key, vec![])
            .unwrap_err()
            .to_string()
            .contains("needs an API key")
    );
    let remote = Flags {
        http: Some("0.0.0.0:6333".parse().unwrap()),
        api_key: Some("k".into()),
        ..Flags::default()
    };
    assert!(
        load(&remote, vec![])
            .unwrap_err()
            .to_string()
            .contains("not a loopback")
    );
    assert!(load(&Flags::default(), env(&[("SNAPFS__STORAGE__BOGUS", "1")])).is_err());
    assert!(
        load(
            &Flags::default(),
            env(&[("SNAPFS__SERVICE__HTTP_PORT", "many")])
        )
        .is_err()
    );
    for bad in ["0", "-5", "never"] {
        let err = load(
            &Flags::default(),
            env(&[("SNAPFS__STORAGE__SNAPSHOT_MAX_FREEZE_SECS", bad)]),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("snapshot_max_freeze_secs")
                || format!("{err:#}").contains("expected a number"),
            "{bad}: {err:#}"
        );
    }
    let ok = load(
        &Flags::default(),
        env(&[("SNAPFS__STORAGE__SNAPSHOT_MAX_FREEZE_SECS", "2.5")]),
    )
    .unwrap();
    assert_eq!(
        ok.snapshot_max_freeze,
        std::time::Duration::from_millis(2500)
    );
}

#[test]
fn the_grpc_listener_follows_the_tcp_rules() {
    let with_key = |grpc: Option<&str>| Flags {
        grpc: grpc.map(|a| a.parse().unwrap()),
        api_key: Some("k".into()),
        ..Flags::default()
    };
    // Qdrant's key, on the shared host (loopback by default).
    let config = load(
        &with_key(None),
        env(&[("SNAPFS__SERVICE__GRPC_PORT", "6334")]),
    )
    .unwrap();
    assert_eq!(config.grpc, Some("127.0.0.1:6334".parse().unwrap()));
    assert_eq!(config.http, None);
    // The flag wins over the key.
    let config = load(
        &with_key(Some("127.0.0.1:7334")),
        env(&[("SNAPFS__SERVICE__GRPC_PORT", "6334")]),
    )
    .unwrap();
    assert_eq!(config.grpc, Some("127.0.0.1:7334".parse().unwrap()));
    // No key, a non-loopback address, a port shared with HTTP: refused.
    let no_key = Flags {
        grpc: Some("127.0.0.1:6334".parse().unwrap()),
        ..Flags::default()
    };
    let err = load(&no_key, vec![]).unwrap_err().to_string();
    assert!(
        err.contains("gRPC listener") && err.contains("needs an API key"),
        "{err}"
    );
    let err = load(&with_key(Some("0.0.0.0:6334")), vec![])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a loopback"), "{err}");
    let allowed = Flags {
        allow_non_loopback: true,
        ..with_key(Some("0.0.0.0:6334"))
    };
    assert_eq!(
        load(&allowed, vec![]).unwrap().grpc,
        Some("0.0.0.0:6334".parse().unwrap())
    );
    let clash = Flags {
        http: Some("127.0.0.1:6334".parse().unwrap()),
        ..with_key(Some("127.0.0.1:6334"))
    };
    assert!(
        load(&clash, vec![])
            .unwrap_err()
            .to_string()
            .contains("cannot share")
    );
}

#[test]
fn fetch_keys() {
    let config = load(&Flags::default(), vec![]).unwrap();
    assert_eq!(config.fetch, crate::fetch::FetchPolicy::default());
    let config = load(
        &Flags::default(),
        env(&[
            (
                "SNAPFS__STORAGE__FETCH_DENY",
                "127.0.0.0/8, bad.example.com",
            ),
            ("SNAPFS__STORAGE__FETCH_ALLOW", "10.0.0.0/8"),
            ("SNAPFS__STORAGE__FETCH_HEADER_SECS", "2"),
            ("SNAPFS__STORAGE__FETCH_S3_BUCKETS", "/other/pre/"),
        ]),
    )
    .unwrap();
    assert_eq!(config.fetch.deny.len(), 2);
    assert_eq!(config.fetch.allow.len(), 1);
    assert_eq!(
        config.fetch.header_timeout,
        std::time::Duration::from_secs(2)
    );
    assert_eq!(config.fetch.s3_buckets, vec!["other/pre".to_string()]);
    // An empty deny list allows link-local too.
    let config = load(
        &Flags::default(),
        env(&[("SNAPFS__STORAGE__FETCH_DENY", "[]")]),
    )
    .unwrap();
    assert!(config.fetch.deny.is_empty());
    for (key, bad) in [
        ("SNAPFS__STORAGE__FETCH_DENY", "not a host!"),
        ("SNAPFS__STORAGE__FETCH_TOTAL_SECS", "0"),
        ("SNAPFS__STORAGE__FETCH_JSON_MAX_BYTES", "0"),
    ] {
        let err = load(&Flags::default(), env(&[(key, bad)])).unwrap_err();
        assert!(
            format!("{err:#}").contains("fetch_"),
            "{key}={bad}: {err:#}"
        );
    }
}

#[test]
fn repository_storage_keys_read_the_password_and_never_show_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-file\n").unwrap();
    let repo_at = |location: &str, extra: &[(&str, &str)]| {
        let mut vars = vec![
            (
                "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE",
                "repository",
            ),
            (
                "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__LOCATION",
                location,
            ),
        ];
        vars.extend_from_slice(extra);
        load(&Flags::default(), env(&vars))
    };
    let repo = |extra: &[(&str, &str)]| repo_at("/srv/repo", extra);
    let path = file.display().to_string();
    let config = repo(&[(
        "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__PASSWORD_FILE",
        &path,
    )])
    .unwrap();
    let repository = config.repository.clone().unwrap();
    assert_eq!(repository.password, "from-file", "the newline is dropped");
    assert_eq!(
        repository.location,
        crate::snapshot::store::repository::Location::Local("/srv/repo".into())
    );
    assert!(config.s3.is_none());
    assert!(!format!("{config:?}").contains("from-file"));
    // An s3: location takes the bucket and prefix from it, the rest from s3_config.
    let config = repo_at(
        "s3:bucket/a/b",
        &[
            (
                "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__PASSWORD",
                "inline",
            ),
            (
                "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__ENDPOINT_URL",
                "http://127.0.0.1:9",
            ),
        ],
    )
    .unwrap();
    match config.repository.unwrap().location {
        crate::snapshot::store::repository::Location::S3(s3) => {
            assert_eq!(s3.bucket.as_deref(), Some("bucket"));
            assert_eq!(s3.prefix, "a/b");
            assert_eq!(s3.endpoint_url.as_deref(), Some("http://127.0.0.1:9"));
        }
        other => panic!("{other:?}"),
    }
    // No password anywhere: refused, saying where one may come from.
    if std::env::var("RESTIC_PASSWORD").is_err() && std::env::var("RESTIC_PASSWORD_FILE").is_err() {
        let err = repo(&[]).unwrap_err();
        assert!(format!("{err:#}").contains("needs a password"), "{err:#}");
    }
    let err = repo(&[(
        "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__PASSWORD_ENV",
        "SNAPFS_NO_SUCH_VARIABLE",
    )])
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("SNAPFS_NO_SUCH_VARIABLE"),
        "{err:#}"
    );
}

#[test]
fn s3_snapshot_storage_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(
        &file,
        "storage:\n  snapshots_config:\n    snapshots_storage: s3\n    s3_config:\n      bucket: b\n      region: eu-west-1\n      access_key: AKIAFILE\n      secret_key: from-file\n      endpoint_url: http://127.0.0.1:9000\n",
    )
    .unwrap();
    let flags = Flags {
        config_file: Some(file),
        ..Flags::default()
    };
    let config = load(
        &flags,
        env(&[
            (
                "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__SECRET_KEY",
                "from-env",
            ),
            (
                "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__PREFIX",
                "/backups/",
            ),
            (
                "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__PARTS_IN_FLIGHT",
                "2",
            ),
        ]),
    )
    .unwrap();
    let s3 = config.s3.clone().unwrap();
    assert_eq!(s3.bucket.as_deref(), Some("b"));
    assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
    assert_eq!(s3.secret_key.as_deref(), Some("from-env"));
    assert_eq!(s3.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(s3.prefix, "backups");
    assert_eq!(s3.parts_in_flight, 2);
    assert_eq!(s3.part_size, crate::snapshot::store::s3::DEFAULT_PART_SIZE);
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("from-env") && !shown.contains("AKIAFILE"),
        "{shown}"
    );

    // local is the default; an unknown backend or key is refused.
    assert!(load(&Flags::default(), vec![]).unwrap().s3.is_none());
    let err = load(
        &Flags::default(),
        env(&[(
            "SNAPFS__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE",
            "gcs",
        )]),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("local, s3 or repository"),
        "{err:#}"
    );
    assert!(
        load(
            &Flags::default(),
            env(&[("SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__BUKET", "x")])
        )
        .is_err()
    );
}

/// The serve flags are parsed by clap straight into [`Flags`]: every flag lands
/// in its field, `--config` in `config_file`, and clap's own rules hold.
#[test]
fn serve_flags_parse_into_the_config_flags() {
    use clap::Parser;
    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        flags: Flags,
    }
    let parsed = Serve::try_parse_from([
        "serve",
        "--config",
        "/etc/snapfs.yaml",
        "--data-dir",
        "/d",
        "--http",
        "127.0.0.1:6333",
        "--grpc",
        "127.0.0.1:6334",
        "--api-key",
        "k",
        "--allow-non-loopback",
        "--demo",
        "--mount",
        "/m",
        "--storage-snapshot",
        "/s.snapshot",
        "--force",
        "--socket",
        "/d/s.sock",
    ])
    .unwrap()
    .flags;
    assert_eq!(parsed.config_file, Some(PathBuf::from("/etc/snapfs.yaml")));
    assert_eq!(parsed.data_dir, Some(PathBuf::from("/d")));
    assert_eq!(parsed.http, Some("127.0.0.1:6333".parse().unwrap()));
    assert_eq!(parsed.grpc, Some("127.0.0.1:6334".parse().unwrap()));
    assert_eq!(parsed.api_key.as_deref(), Some("k"));
    assert!(parsed.allow_non_loopback && parsed.demo && parsed.force);
    assert_eq!(parsed.mount, Some(PathBuf::from("/m")));
    assert_eq!(parsed.storage_snapshot, Some(PathBuf::from("/s.snapshot")));
    assert_eq!(parsed.socket, Some(PathBuf::from("/d/s.sock")));
    // --force needs --storage-snapshot.
    assert!(Serve::try_parse_from(["serve", "--force"]).is_err());
    // Parsed flags reach the configuration.
    let config = load(&parsed, vec![]).unwrap_err();
    assert!(config.to_string().contains("/etc/snapfs.yaml"), "{config}");
}
