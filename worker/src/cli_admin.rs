//! `payflow admin setup`: prepares a Temporal namespace for payflow on a real cluster.
//!
//! Registers payflow's search attributes (the one list, `search_attributes::ALL` in
//! `payflow-client`, which the dev server gets as `--search-attribute` flags) through the
//! operator service, and with `--create-namespace` creates the namespace first when it is
//! missing. Idempotent: an attribute already present with payflow's type is fine; one present
//! with another type is a conflict that stops setup before anything is added.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use payflow_client::definitions::search_attributes;
use serde::Serialize;
use temporalio_client::tonic::{Code, Request, Status};
use temporalio_client::{Connection, ConnectionOptions, RegisterNamespaceOptions};
use temporalio_common::protos::temporal::api::enums::v1::IndexedValueType;
use temporalio_common::protos::temporal::api::operatorservice::v1::{
    AddSearchAttributesRequest, ListSearchAttributesRequest,
};
use temporalio_common::protos::temporal::api::workflowservice::v1::DescribeNamespaceRequest;

use crate::cli_notify::TemporalArgs;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Register payflow's search attributes in a namespace (creating the namespace with
    /// `--create-namespace`). Safe to run again.
    Setup(SetupArgs),
}

#[derive(clap::Args, Debug)]
pub struct SetupArgs {
    #[command(flatten)]
    pub temporal: TemporalArgs,
    /// Create the namespace when it does not exist.
    #[arg(long)]
    pub create_namespace: bool,
    /// Workflow history retention of a namespace created here: a number of days (`7d`) or
    /// hours (`72h`). An existing namespace keeps its own.
    #[arg(long, default_value = "3d", value_parser = parse_retention)]
    pub retention: Duration,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What setup found and did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SetupReport {
    pub address: String,
    pub namespace: String,
    pub namespace_status: NamespaceStatus,
    /// The namespace's workflow retention, in seconds, when the server reports one.
    pub retention_secs: Option<i64>,
    pub search_attributes: Vec<AttributeReport>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceStatus {
    Created,
    Existing,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AttributeReport {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: AttributeStatus,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttributeStatus {
    /// Registered by this run.
    Added,
    /// Already registered with payflow's type.
    Present,
}

/// `7d`, `72h`, `90m` (minutes, for tests against a dev server) into a duration.
pub fn parse_retention(s: &str) -> Result<Duration, String> {
    let bad = || format!("retention {s:?}: expected a number of days or hours, e.g. 7d or 72h");
    let s = s.trim();
    if !s.is_ascii() {
        return Err(bad());
    }
    let (digits, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let secs = match unit {
        "d" => n.checked_mul(86_400),
        "h" => n.checked_mul(3_600),
        "m" => n.checked_mul(60),
        _ => None,
    }
    .ok_or_else(bad)?;
    if secs == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

/// payflow's search attributes with their server types, from the one declared list.
pub fn wanted_attributes() -> anyhow::Result<Vec<(&'static str, &'static str, IndexedValueType)>> {
    search_attributes::ALL
        .iter()
        .map(|(name, kind)| {
            let proto = format!("INDEXED_VALUE_TYPE_{}", kind.to_ascii_uppercase());
            IndexedValueType::from_str_name(&proto)
                .map(|t| (*name, *kind, t))
                .with_context(|| format!("search attribute {name}: unknown type {kind}"))
        })
        .collect()
}

/// A server type as `temporal operator search-attribute` and `search_attributes::ALL` spell it.
fn type_name(t: i32) -> String {
    let name = match IndexedValueType::try_from(t) {
        Ok(IndexedValueType::Text) => "Text",
        Ok(IndexedValueType::Keyword) => "Keyword",
        Ok(IndexedValueType::Int) => "Int",
        Ok(IndexedValueType::Double) => "Double",
        Ok(IndexedValueType::Bool) => "Bool",
        Ok(IndexedValueType::Datetime) => "Datetime",
        Ok(IndexedValueType::KeywordList) => "KeywordList",
        Ok(IndexedValueType::Unspecified) | Err(_) => return format!("type {t}"),
    };
    name.to_string()
}

/// How long a namespace created just now may take to be served by every frontend (their
/// namespace caches refresh on a timer).
const NAMESPACE_READY: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

/// Runs setup against the cluster and returns what it found and did.
pub async fn setup(args: &SetupArgs) -> anyhow::Result<SetupReport> {
    let address = &args.temporal.address;
    let namespace = &args.temporal.namespace;
    let wanted = wanted_attributes()?;
    let url = url::Url::parse(address).with_context(|| format!("Temporal address {address}"))?;
    let conn = Connection::connect(
        ConnectionOptions::new(url)
            .identity(format!("payflow-admin@{}", std::process::id()))
            .build(),
    )
    .await
    .with_context(|| format!("connect to Temporal at {address}"))?;
    let mut workflow = conn.workflow_service();
    let mut operator = conn.operator_service();

    let describe = || DescribeNamespaceRequest {
        namespace: namespace.clone(),
        ..Default::default()
    };
    let (namespace_status, retention_secs) =
        match workflow.describe_namespace(Request::new(describe())).await {
            Ok(r) => (NamespaceStatus::Existing, retention_of(r.get_ref())),
            Err(s) if s.code() == Code::NotFound => {
                if !args.create_namespace {
                    bail!(
                        "namespace {namespace} does not exist at {address}; create it \
                         (`--create-namespace`, retention `--retention`) or choose another"
                    );
                }
                let request = RegisterNamespaceOptions::builder()
                    .namespace(namespace.clone())
                    .description("payflow: payments, refunds, payouts and merchant callbacks")
                    .workflow_execution_retention_period(args.retention)
                    .build();
                let status = match workflow
                    .register_namespace(Request::new(request.into()))
                    .await
                {
                    Ok(_) => NamespaceStatus::Created,
                    // Created concurrently by someone else: fine.
                    Err(s) if s.code() == Code::AlreadyExists => NamespaceStatus::Existing,
                    Err(s) => return Err(grpc(s)).context(format!("create namespace {namespace}")),
                };
                let described = wait_for_namespace(&mut workflow, describe).await?;
                (status, retention_of(&described))
            }
            Err(s) => return Err(grpc(s)).context(format!("describe namespace {namespace}")),
        };

    let existing = list_custom(&mut operator, namespace).await?;
    let mut conflicts = Vec::new();
    let mut missing = HashMap::new();
    for (name, kind, t) in &wanted {
        match existing.get(*name) {
            Some(have) if *have == *t as i32 => {}
            Some(have) => conflicts.push(format!(
                "{name} is registered as {}, payflow needs {kind}",
                type_name(*have)
            )),
            None => {
                missing.insert(name.to_string(), *t as i32);
            }
        }
    }
    if !conflicts.is_empty() {
        bail!(
            "search attribute type conflict in namespace {namespace}: {}; nothing was added \
             (remove or rename the conflicting attributes, then run setup again)",
            conflicts.join("; ")
        );
    }
    if !missing.is_empty() {
        let request = AddSearchAttributesRequest {
            search_attributes: missing.clone(),
            namespace: namespace.clone(),
        };
        match operator.add_search_attributes(Request::new(request)).await {
            Ok(_) => {}
            // Added concurrently: the check below says whether with our types.
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => {
                return Err(grpc(s))
                    .context(format!("add search attributes to namespace {namespace}"));
            }
        }
    }
    // What the server now lists (registration may take a moment to be visible everywhere).
    let deadline = tokio::time::Instant::now() + NAMESPACE_READY;
    let listed = loop {
        let listed = list_custom(&mut operator, namespace).await?;
        let wrong: Vec<String> = wanted
            .iter()
            .filter(|(name, _, t)| listed.get(*name) != Some(&(*t as i32)))
            .map(|(name, kind, _)| match listed.get(*name) {
                Some(have) => format!("{name} is {} (needs {kind})", type_name(*have)),
                None => format!("{name} is missing"),
            })
            .collect();
        if wrong.is_empty() {
            break listed;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "search attributes in namespace {namespace} after setup: {}",
                wrong.join("; ")
            );
        }
        tokio::time::sleep(POLL).await;
    };
    let search_attributes = wanted
        .iter()
        .filter(|(name, _, _)| listed.contains_key(*name))
        .map(|(name, kind, _)| AttributeReport {
            name: name.to_string(),
            kind: kind.to_string(),
            status: if missing.contains_key(*name) {
                AttributeStatus::Added
            } else {
                AttributeStatus::Present
            },
        })
        .collect();
    Ok(SetupReport {
        address: address.clone(),
        namespace: namespace.clone(),
        namespace_status,
        retention_secs,
        search_attributes,
    })
}

fn grpc(s: Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

fn retention_of(
    r: &temporalio_common::protos::temporal::api::workflowservice::v1::DescribeNamespaceResponse,
) -> Option<i64> {
    r.config
        .as_ref()
        .and_then(|c| c.workflow_execution_retention_ttl.as_ref())
        .map(|d| d.seconds)
}

/// Describes the namespace until the server answers for it (a new namespace may be unknown to
/// a frontend for a few seconds).
async fn wait_for_namespace(
    workflow: &mut Box<dyn temporalio_client::grpc::WorkflowService>,
    describe: impl Fn() -> DescribeNamespaceRequest,
) -> anyhow::Result<
    temporalio_common::protos::temporal::api::workflowservice::v1::DescribeNamespaceResponse,
> {
    let deadline = tokio::time::Instant::now() + NAMESPACE_READY;
    loop {
        match workflow.describe_namespace(Request::new(describe())).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if s.code() == Code::NotFound && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(POLL).await;
            }
            Err(s) => return Err(grpc(s)).context("describe the new namespace"),
        }
    }
}

/// The namespace's custom search attributes (name -> type), waiting out a namespace that a
/// frontend does not know yet.
async fn list_custom(
    operator: &mut Box<dyn temporalio_client::grpc::OperatorService>,
    namespace: &str,
) -> anyhow::Result<BTreeMap<String, i32>> {
    let deadline = tokio::time::Instant::now() + NAMESPACE_READY;
    loop {
        let request = ListSearchAttributesRequest {
            namespace: namespace.to_string(),
        };
        match operator.list_search_attributes(Request::new(request)).await {
            Ok(r) => return Ok(r.into_inner().custom_attributes.into_iter().collect()),
            Err(s) if s.code() == Code::NotFound && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(POLL).await;
            }
            Err(s) => {
                return Err(grpc(s))
                    .context(format!("list search attributes of namespace {namespace}"));
            }
        }
    }
}

/// The report for a person.
pub fn render(r: &SetupReport) -> String {
    let mut out = String::new();
    let retention = r
        .retention_secs
        .map(|s| {
            if s % 86_400 == 0 {
                format!(", retention {}d", s / 86_400)
            } else if s % 3_600 == 0 {
                format!(", retention {}h", s / 3_600)
            } else {
                format!(", retention {}s", s)
            }
        })
        .unwrap_or_default();
    let ns = match r.namespace_status {
        NamespaceStatus::Created => "created",
        NamespaceStatus::Existing => "exists",
    };
    out.push_str(&format!(
        "namespace {} at {}: {ns}{retention}\n",
        r.namespace, r.address
    ));
    out.push_str("search attributes:\n");
    let width = r
        .search_attributes
        .iter()
        .map(|a| a.name.len())
        .max()
        .unwrap_or(0);
    for a in &r.search_attributes {
        let status = match a.status {
            AttributeStatus::Added => "added",
            AttributeStatus::Present => "already present",
        };
        out.push_str(&format!(
            "  {:width$}  {:8} {status}\n",
            a.name,
            a.kind,
            width = width
        ));
    }
    let added = r
        .search_attributes
        .iter()
        .filter(|a| a.status == AttributeStatus::Added)
        .count();
    out.push_str(&format!(
        "ready: {} search attributes ({added} added)\n",
        r.search_attributes.len()
    ));
    out
}

pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Setup(args) => {
            let report = setup(&args).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render(&report));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_parses_days_hours_minutes() {
        assert_eq!(parse_retention("3d"), Ok(Duration::from_secs(3 * 86_400)));
        assert_eq!(parse_retention("72h"), Ok(Duration::from_secs(72 * 3_600)));
        assert_eq!(parse_retention("90m"), Ok(Duration::from_secs(90 * 60)));
        for bad in ["", "d", "3", "0d", "3w", "-1d", "1.5d", "3日"] {
            assert!(parse_retention(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_declared_attribute_has_a_server_type() {
        let wanted = wanted_attributes().unwrap();
        assert_eq!(wanted.len(), search_attributes::ALL.len());
        let amount = wanted.iter().find(|(n, _, _)| *n == "AmountMinor").unwrap();
        assert_eq!(amount.2, IndexedValueType::Int);
        assert!(
            wanted
                .iter()
                .filter(|(n, _, _)| *n != "AmountMinor")
                .all(|(_, _, t)| *t == IndexedValueType::Keyword)
        );
    }

    #[test]
    fn renders_for_people() {
        let r = SetupReport {
            address: "http://t:7233".into(),
            namespace: "payflow".into(),
            namespace_status: NamespaceStatus::Created,
            retention_secs: Some(3 * 86_400),
            search_attributes: vec![
                AttributeReport {
                    name: "MerchantId".into(),
                    kind: "Keyword".into(),
                    status: AttributeStatus::Added,
                },
                AttributeReport {
                    name: "AmountMinor".into(),
                    kind: "Int".into(),
                    status: AttributeStatus::Present,
                },
            ],
        };
        assert_eq!(
            render(&r),
            "namespace payflow at http://t:7233: created, retention 3d\n\
             search attributes:\n  \
             MerchantId   Keyword  added\n  \
             AmountMinor  Int      already present\n\
             ready: 2 search attributes (1 added)\n"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["namespace_status"], "created");
        assert_eq!(json["search_attributes"][1]["type"], "Int");
        assert_eq!(json["search_attributes"][0]["status"], "added");
    }
}
