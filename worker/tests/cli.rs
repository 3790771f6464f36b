//! The `payflow` command line as an operator meets it.

use std::process::Command;

fn payflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_payflow"))
}

#[test]
fn help_lists_the_subcommands() {
    let out = payflow().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["dev", "worker", "check-config"] {
        assert!(text.contains(sub), "{sub} missing from:\n{text}");
    }
}

#[test]
fn dev_with_a_broken_config_fails_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("payflow-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("broken.toml");
    let good = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/payflow.dev.toml"
    ))
    .unwrap();
    std::fs::write(
        &config,
        good.replace("listen = \"127.0.0.1:8088\"", "listen = \"not-an-address\""),
    )
    .unwrap();
    let out = payflow()
        .args(["dev", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&config)
        .env_remove("TEMPORAL_ADDRESS")
        .output()
        .unwrap();
    assert!(!out.status.success(), "a broken config must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ingress.listen"),
        "error should name the key:\n{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_config_accepts_the_dev_config_shape() {
    // The checked-in dev config refers to keys under .data; point it at generated ones.
    let dir = std::env::temp_dir().join(format!("payflow-cfg-{}", std::process::id()));
    let keys = dir.join("keys");
    payflow::devkeys::DevKeys::ensure(&keys).unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/payflow.dev.toml"
    ))
    .unwrap()
    .replace("../.data/keys/", &format!("{}/", keys.display()));
    let config = dir.join("payflow.toml");
    std::fs::write(&config, text).unwrap();
    let out = payflow()
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_compose_config_is_valid() {
    let path = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/payflow.compose.toml"
    ));
    // Shape and values only: its secrets live on the production host.
    let c = payflow::config::Config::load_with_env(path, std::iter::empty()).unwrap();
    assert_eq!(c.telemetry.log_format, payflow::config::LogFormat::Json);
    assert_eq!(c.channels.len(), 1);
}
