//! `payflow admin setup` against a plain Temporal dev server started without payflow's search
//! attributes: it creates the namespace when asked, registers the attributes, is idempotent,
//! and refuses a type conflict before adding anything.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use payflow::cli_admin::{
    AttributeStatus, NamespaceStatus, SetupArgs, parse_retention, render, setup,
};
use payflow::cli_notify::TemporalArgs;
use payflow::devserver::{find_temporal_cli, free_port, wait_ready};
use payflow_client::definitions::search_attributes;
use temporalio_client::tonic::Request;
use temporalio_client::{Connection, ConnectionOptions, Url};
use temporalio_common::protos::temporal::api::enums::v1::IndexedValueType;
use temporalio_common::protos::temporal::api::operatorservice::v1::{
    AddSearchAttributesRequest, ListSearchAttributesRequest,
};

/// `temporal server start-dev` with no `--search-attribute` (in memory, headless); killed
/// when the returned child is dropped or the test process dies.
async fn plain_dev_server() -> (tokio::process::Child, String) {
    let port = free_port().expect("free port");
    let mut cmd = tokio::process::Command::new(find_temporal_cli().expect("Temporal CLI"));
    cmd.args([
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--headless",
        "--log-level",
        "error",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd.spawn().expect("start temporal dev server");
    let address = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !wait_ready(&address, Duration::from_millis(500)).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dev server at {address} did not come up in 60 s"
        );
    }
    (child, address)
}

fn args(address: &str, namespace: &str, create_namespace: bool) -> SetupArgs {
    SetupArgs {
        temporal: TemporalArgs {
            address: address.to_string(),
            namespace: namespace.to_string(),
            config: None,
        },
        create_namespace,
        retention: parse_retention("2d").unwrap(),
        json: false,
    }
}

/// The namespace's custom search attributes as the operator service lists them.
async fn listed(address: &str, namespace: &str) -> HashMap<String, i32> {
    let conn = Connection::connect(ConnectionOptions::new(Url::parse(address).unwrap()).build())
        .await
        .expect("connect");
    conn.operator_service()
        .list_search_attributes(Request::new(ListSearchAttributesRequest {
            namespace: namespace.to_string(),
        }))
        .await
        .expect("list search attributes")
        .into_inner()
        .custom_attributes
}

fn expected_type(kind: &str) -> i32 {
    match kind {
        "Keyword" => IndexedValueType::Keyword as i32,
        "Int" => IndexedValueType::Int as i32,
        other => panic!("unexpected type {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_registers_search_attributes_idempotently() {
    let (_server, address) = plain_dev_server().await;
    let ns = "payflow-admin";

    // The namespace does not exist: refused without --create-namespace.
    let refused = setup(&args(&address, ns, false)).await.unwrap_err();
    assert!(
        format!("{refused:#}").contains("--create-namespace"),
        "{refused:#}"
    );

    let first = setup(&args(&address, ns, true)).await.expect("first setup");
    assert_eq!(first.namespace_status, NamespaceStatus::Created);
    assert_eq!(first.retention_secs, Some(2 * 86_400));
    assert_eq!(first.search_attributes.len(), search_attributes::ALL.len());
    assert!(
        first
            .search_attributes
            .iter()
            .all(|a| a.status == AttributeStatus::Added),
        "{first:?}"
    );

    // Again: nothing to do, everything already present.
    let second = setup(&args(&address, ns, true))
        .await
        .expect("second setup");
    assert_eq!(second.namespace_status, NamespaceStatus::Existing);
    assert!(
        second
            .search_attributes
            .iter()
            .all(|a| a.status == AttributeStatus::Present),
        "{second:?}"
    );
    let shown = render(&second);
    assert!(shown.contains("namespace payflow-admin at"), "{shown}");
    assert!(
        shown.contains("ready: 7 search attributes (0 added)"),
        "{shown}"
    );
    let json = serde_json::to_value(&second).unwrap();
    assert_eq!(json["namespace_status"], "existing");
    assert_eq!(json["search_attributes"][4]["name"], "AmountMinor");
    assert_eq!(json["search_attributes"][4]["type"], "Int");
    assert_eq!(json["search_attributes"][4]["status"], "present");

    // What the server lists: every attribute with its declared type.
    let attrs = listed(&address, ns).await;
    for (name, kind) in search_attributes::ALL {
        assert_eq!(
            attrs.get(name),
            Some(&expected_type(kind)),
            "{name}: {attrs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_conflict_is_a_clear_error_and_adds_nothing() {
    let (_server, address) = plain_dev_server().await;
    let ns = "default";
    // Someone registered PayState as Text.
    let conn = Connection::connect(ConnectionOptions::new(Url::parse(&address).unwrap()).build())
        .await
        .expect("connect");
    conn.operator_service()
        .add_search_attributes(Request::new(AddSearchAttributesRequest {
            search_attributes: HashMap::from([(
                "PayState".to_string(),
                IndexedValueType::Text as i32,
            )]),
            namespace: ns.to_string(),
        }))
        .await
        .expect("add PayState as Text");

    let err = setup(&args(&address, ns, false)).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("PayState is registered as Text, payflow needs Keyword"),
        "{msg}"
    );
    assert!(msg.contains("nothing was added"), "{msg}");
    let attrs = listed(&address, ns).await;
    assert!(!attrs.contains_key("MerchantId"), "{attrs:?}");
}
