//! The Helm chart in `charts/ferry`: its CRDs are the repository's, `helm lint`
//! passes and `helm template` renders for several value sets, the values schema
//! refuses what cannot work, and what it renders is accepted by a real kube-apiserver
//! (server-side apply) with RBAC that grants no wildcard and no more than listed.

use std::path::{Path, PathBuf};
use std::process::Output;

use ferry_e2e::{KubeApiServer, KubeTools};

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

fn chart() -> PathBuf {
    repo_path("charts/ferry")
}

/// Value sets every check renders the chart with: `--set` arguments each.
const VALUE_SETS: &[(&str, &[&str])] = &[
    ("defaults", &[]),
    (
        "external-etcd",
        &[
            "etcd.enabled=false",
            "etcd.endpoints={http://etcd-0.example:2379,http://etcd-1.example:2379}",
        ],
    ),
    (
        "namespaced",
        &[
            "operator.watchNamespaces={team-a,team-b}",
            "operator.replicas=2",
        ],
    ),
    (
        "insecure",
        &[
            "tls.enabled=false",
            "auth.enabled=false",
            "etcd.tls.enabled=false",
            "defaultCluster.enabled=true",
        ],
    ),
    (
        "everything",
        &[
            "etcd.replicas=3",
            "defaultCluster.enabled=true",
            "networkPolicy.enabled=true",
            "serviceMonitor.enabled=true",
            "serviceAccount.annotations.example\\.com/role=ferry",
        ],
    ),
    (
        "dashboards",
        &[
            "monitoring.dashboards.enabled=true",
            "monitoring.dashboards.labels.team=streaming",
        ],
    ),
    (
        "monitoring",
        &[
            "monitoring.podMonitor.enabled=true",
            "monitoring.podMonitor.namespaces={team-a}",
            "monitoring.dashboards.enabled=true",
            "monitoring.prometheusRule.enabled=true",
            "monitoring.prometheusRule.thresholds.consumerGroupLag=500",
        ],
    ),
];

fn set_args(sets: &[&str]) -> Vec<String> {
    sets.iter()
        .flat_map(|set| ["--set".to_owned(), (*set).to_owned()])
        .collect()
}

fn helm(tools: &KubeTools, home: &Path, args: &[String]) -> Output {
    tools
        .helm_command(home)
        .args(args)
        .output()
        .expect("run helm")
}

/// `helm template <release> charts/ferry -n <namespace>` with `sets`.
fn template(
    tools: &KubeTools,
    home: &Path,
    release: &str,
    namespace: &str,
    sets: &[&str],
) -> Output {
    let mut args = vec![
        "template".to_owned(),
        release.to_owned(),
        chart().display().to_string(),
        "--namespace".to_owned(),
        namespace.to_owned(),
    ];
    args.extend(set_args(sets));
    helm(tools, home, &args)
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn chart_crds_are_the_repositorys_crds() {
    // Helm packages crds/ as plain files (symlinks do not survive packaging), so the
    // chart holds copies; they must stay byte-for-byte what the operator generates.
    let generated = repo_path("crds");
    let packaged = chart().join("crds");
    assert_eq!(
        file_names(&generated),
        file_names(&packaged),
        "charts/ferry/crds must hold exactly the files of crds/: cp crds/*.yaml charts/ferry/crds/"
    );
    for name in file_names(&generated) {
        let want = std::fs::read(generated.join(&name)).expect("read crd");
        let have = std::fs::read(packaged.join(&name)).expect("read chart crd");
        assert!(
            want == have,
            "charts/ferry/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/ferry/crds/"
        );
    }
}

#[test]
fn helm_lint_and_template_pass_for_every_value_set() {
    let tools = KubeTools::locate();
    let home = tempfile::tempdir().expect("tempdir");
    for (name, sets) in VALUE_SETS {
        let mut args = vec![
            "lint".to_owned(),
            "--strict".to_owned(),
            chart().display().to_string(),
        ];
        args.extend(set_args(sets));
        let lint = helm(&tools, home.path(), &args);
        assert!(
            lint.status.success(),
            "helm lint ({name}) failed:\n{}{}",
            String::from_utf8_lossy(&lint.stdout),
            String::from_utf8_lossy(&lint.stderr)
        );
        let rendered = template(&tools, home.path(), "ferry", "ferry-system", sets);
        assert!(
            rendered.status.success(),
            "helm template ({name}) failed:\n{}",
            String::from_utf8_lossy(&rendered.stderr)
        );
    }
}

/// The operator Deployment's `FERRY_*` variables, as rendered (`- name: FERRY_X`).
fn operator_env_names(rendered: &str) -> Vec<String> {
    let deployment = rendered
        .split("\n---")
        .find(|doc| doc.contains("kind: Deployment") && doc.contains("ferry-operator"))
        .expect("the operator Deployment is rendered");
    deployment
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- name: "))
        .filter(|name| name.starts_with("FERRY_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_variable_the_chart_gives_the_operator_is_one_it_reads() {
    // A misspelt variable is silently ignored: the chart once set FERRY_BROKER_IMAGE
    // while the operator read FERRY_OPERATOR_BROKER_IMAGE, so brokers ran an image
    // that exists nowhere.
    let help = std::process::Command::new(ferry_e2e::operator::operator_binary())
        .arg("--help")
        .output()
        .expect("run ferry-operator --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let tools = KubeTools::locate();
    let home = tempfile::tempdir().expect("tempdir");
    for (name, sets) in VALUE_SETS {
        let rendered = template(&tools, home.path(), "ferry", "ferry-system", sets);
        assert!(rendered.status.success(), "helm template ({name}) failed");
        let names = operator_env_names(&String::from_utf8_lossy(&rendered.stdout));
        assert!(
            names.iter().any(|n| n == "FERRY_OPERATOR_BROKER_IMAGE"),
            "({name}) the operator is not told its broker image: {names:?}"
        );
        for variable in names {
            assert!(
                help.contains(&format!("[env: {variable}")),
                "({name}) the chart sets {variable}, which ferry-operator does not read"
            );
        }
    }
}

#[test]
fn values_schema_refuses_what_cannot_work() {
    let tools = KubeTools::locate();
    let home = tempfile::tempdir().expect("tempdir");
    let refused: &[(&[&str], &str)] = &[
        // Neither a bundled nor an external etcd.
        (&["etcd.enabled=false"], "endpoints"),
        (
            &["etcd.endpoints={etcd:2379}", "etcd.enabled=false"],
            "endpoints",
        ),
        // An even etcd cluster has no better quorum than the odd one below it.
        (&["etcd.replicas=2"], "replicas"),
        (&["defaultCluster.name=Not_A_Label"], "name"),
        (&["operator.port=0"], "port"),
        (&["operator.unknownSetting=1"], "unknownSetting"),
        (&["tls.enabled=maybe"], "enabled"),
        (&["monitoring.podMonitor.scheme=ftp"], "scheme"),
        (
            &["monitoring.prometheusRule.thresholds.diskFreePercent=150"],
            "diskFreePercent",
        ),
        (
            &["monitoring.prometheusRule.thresholds.hostDownFor=soon"],
            "hostDownFor",
        ),
        (&["monitoring.dashboards.unknown=1"], "unknown"),
    ];
    for (sets, field) in refused {
        let output = template(&tools, home.path(), "ferry", "ferry-system", sets);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "helm template accepted {sets:?}");
        assert!(
            stderr.contains("values don't meet the specifications of the schema")
                && stderr.contains(field),
            "helm template refused {sets:?}, but not by the schema on {field}:\n{stderr}"
        );
    }
}

#[test]
fn tls_and_authentication_are_on_unless_the_values_turn_them_off() {
    let tools = KubeTools::locate();
    let home = tempfile::tempdir().expect("tempdir");
    for (sets, on) in [
        (&["defaultCluster.enabled=true"][..], true),
        (
            &[
                "defaultCluster.enabled=true",
                "tls.enabled=false",
                "auth.enabled=false",
            ][..],
            false,
        ),
    ] {
        let output = template(&tools, home.path(), "ferry", "ferry-system", sets);
        assert!(output.status.success(), "helm template {sets:?} failed");
        let rendered = String::from_utf8_lossy(&output.stdout);
        // The cluster the operator creates for Queues and Topics that name none.
        for flag in ["--default-cluster-tls", "--default-cluster-auth"] {
            assert!(
                rendered.contains(&format!("- {flag}={on}")),
                "{sets:?}: the operator is not given {flag}={on}"
            );
        }
        // The bundled etcd: TLS with client certificates unless turned off too.
        let etcd_secure = rendered.contains("- --client-cert-auth")
            && rendered.contains("--etcd=https://ferry-etcd-0.ferry-etcd-headless");
        assert!(
            etcd_secure,
            "{sets:?}: the bundled etcd is not TLS with client certificates"
        );
        // The chart's own default cluster.
        let cluster = rendered
            .split("\n---")
            .find(|doc| doc.contains("kind: BrokerCluster"))
            .expect("the default BrokerCluster is rendered");
        for field in ["enabled", "serviceAccountTokens", "authorization"] {
            assert!(
                cluster.contains(&format!("{field}: {on}")),
                "{sets:?}: the default cluster lacks {field}: {on}:\n{cluster}"
            );
        }
    }
}

/// GitHub's anchor of a Markdown heading: lower case, spaces to dashes, and only
/// letters, digits, dashes and underscores kept.
fn heading_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn monitoring_renders_a_pod_monitor_rules_with_runbooks_and_dashboards_for_the_sidecar() {
    let tools = KubeTools::locate();
    let home = tempfile::tempdir().expect("tempdir");
    let off = template(&tools, home.path(), "ferry", "ferry-system", &[]);
    assert!(off.status.success(), "helm template failed");
    let off = String::from_utf8_lossy(&off.stdout);
    for kind in [
        "kind: PodMonitor",
        "kind: PrometheusRule",
        "grafana_dashboard",
    ] {
        assert!(!off.contains(kind), "{kind} is rendered by default");
    }

    let sets = [
        "monitoring.podMonitor.enabled=true",
        "monitoring.dashboards.enabled=true",
        "monitoring.dashboards.label=grafana_dashboards_ferry",
        "monitoring.dashboards.namespace=grafana",
        "monitoring.prometheusRule.enabled=true",
        "monitoring.prometheusRule.thresholds.diskFreePercent=7",
    ];
    let output = template(&tools, home.path(), "ferry", "ferry-system", &sets);
    assert!(
        output.status.success(),
        "helm template {sets:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = String::from_utf8(output.stdout).expect("UTF-8 manifests");
    let docs: Vec<&str> = rendered.split("\n---").collect();

    // The PodMonitor selects the pods the operator's StatefulSets make and scrapes
    // the port the operator names `metrics`.
    let monitor = docs
        .iter()
        .find(|doc| doc.contains("kind: PodMonitor"))
        .expect("a PodMonitor");
    for line in [
        "app.kubernetes.io/name: ferry-broker",
        "- port: metrics",
        "any: true",
        "targetLabel: ferry_cluster",
        "jobLabel: app.kubernetes.io/name",
    ] {
        assert!(
            monitor.contains(line),
            "the PodMonitor lacks {line:?}:\n{monitor}"
        );
    }

    // One ConfigMap per dashboard file, labelled for the sidecar, whose JSON parses
    // and picks its data source by variable.
    let dashboards = file_names(&chart().join("dashboards"));
    let maps: Vec<&&str> = docs
        .iter()
        .filter(|doc| {
            doc.contains("kind: ConfigMap") && doc.contains("grafana_dashboards_ferry: \"1\"")
        })
        .collect();
    assert_eq!(maps.len(), dashboards.len(), "{dashboards:?}");
    for map in maps {
        assert!(map.contains("namespace: grafana"), "{map}");
        let (_, json) = map.split_once(".json: |-\n").expect("a dashboard key");
        let json: String = json
            .lines()
            .map(|line| line.strip_prefix("    ").unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n");
        let dashboard: serde_json::Value = serde_json::from_str(&json)
            .unwrap_or_else(|err| panic!("a dashboard ConfigMap holds no JSON: {err}"));
        let variables = dashboard["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            variables
                .iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
            "{} has no datasource variable",
            dashboard["title"]
        );
        assert!(
            json.contains("${datasource}"),
            "{} does not use $datasource",
            dashboard["title"]
        );
    }

    // Every alert has a summary, a description and a runbook in docs/operations.md.
    let rule = docs
        .iter()
        .find(|doc| doc.contains("kind: PrometheusRule"))
        .expect("a PrometheusRule");
    assert!(
        rule.contains("* 100 < 7"),
        "the disk threshold is not the value's:\n{rule}"
    );
    let operations = std::fs::read_to_string(repo_path("docs/operations.md")).expect("docs");
    let anchors: Vec<String> = operations
        .lines()
        .filter_map(|line| line.strip_prefix("### "))
        .map(heading_anchor)
        .collect();
    let alerts: Vec<&str> = rule.split("- alert: ").skip(1).collect();
    assert!(alerts.len() >= 13, "alerts: {}", alerts.len());
    for alert in alerts {
        let name = alert.lines().next().unwrap_or_default().trim();
        for field in ["summary:", "description:", "runbook_url:", "severity:"] {
            assert!(alert.contains(field), "{name} has no {field}");
        }
        let anchor = alert
            .split("runbook_url: ")
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .and_then(|url| url.split_once('#'))
            .map(|(_, anchor)| anchor.trim().to_owned())
            .unwrap_or_default();
        assert_eq!(anchor, heading_anchor(name), "{name}'s runbook anchor");
        assert!(
            anchors.contains(&anchor),
            "{name}: docs/operations.md has no section #{anchor}"
        );
    }
}

/// Every rule of every ClusterRole and Role the chart renders, from the server.
fn rbac_rules(server: &KubeApiServer) -> Vec<serde_json::Value> {
    let json = server.kubectl_ok([
        "get",
        "clusterroles,roles",
        "--all-namespaces",
        "-l",
        "app.kubernetes.io/part-of=ferry",
        "-o",
        "json",
    ]);
    let list: serde_json::Value = serde_json::from_str(&json).expect("kubectl prints JSON");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .flat_map(|role| role["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// `kubectl auth can-i` as the chart's operator ServiceAccount.
fn operator_can(
    server: &KubeApiServer,
    account: &str,
    verb: &str,
    resource: &str,
    namespace: &str,
) -> bool {
    let output = server.kubectl([
        "auth",
        "can-i",
        &format!("--as={account}"),
        verb,
        resource,
        "-n",
        namespace,
    ]);
    let answer = String::from_utf8_lossy(&output.stdout);
    match answer.trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {verb} {resource}: {other} {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

#[test]
fn rendered_chart_applies_to_a_real_api_server_with_least_privilege() {
    let server = KubeApiServer::shared();
    let tools = server.tools().clone();
    server.install_crds(&chart().join("crds"));
    for extra in ["team-a", "team-b", "elsewhere"] {
        server.create_namespace(extra);
    }

    for (index, (name, sets)) in VALUE_SETS.iter().enumerate() {
        // The ServiceMonitor's, PodMonitor's and PrometheusRule's CRDs belong to the
        // Prometheus Operator, absent here; `helm template` above renders them.
        if sets.iter().any(|set| {
            set.starts_with("serviceMonitor.enabled=true")
                || set.starts_with("monitoring.podMonitor.enabled=true")
                || set.starts_with("monitoring.prometheusRule.enabled=true")
        }) {
            continue;
        }
        let release = format!("ferry{index}");
        let namespace = format!("ferry-{name}");
        server.create_namespace(&namespace);
        // The API server warns about pod templates that break the restricted Pod
        // Security Standard in a namespace labelled so.
        server.kubectl_ok([
            "label",
            "namespace",
            &namespace,
            "pod-security.kubernetes.io/warn=restricted",
        ]);
        let rendered = template(
            &tools,
            &server.work_dir().join("helm"),
            &release,
            &namespace,
            sets,
        );
        assert!(
            rendered.status.success(),
            "helm template ({name}): {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let manifests = String::from_utf8(rendered.stdout).expect("UTF-8 manifests");
        let applied = server.kubectl_stdin(
            [
                "apply",
                "--server-side",
                "--field-manager=helm-e2e",
                "-f",
                "-",
            ],
            &manifests,
        );
        let stderr = String::from_utf8_lossy(&applied.stderr);
        assert!(applied.status.success(), "apply ({name}) failed:\n{stderr}");
        assert!(
            !stderr.contains("PodSecurity"),
            "({name}) breaks the restricted Pod Security Standard:\n{stderr}"
        );
    }

    // The restricted check above can fail: a pod template that runs as root is warned.
    server.create_namespace("pss-probe");
    server.kubectl_ok([
        "label",
        "namespace",
        "pss-probe",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    let root = server.kubectl([
        "create",
        "deployment",
        "root",
        "--image=busybox",
        "-n",
        "pss-probe",
    ]);
    assert!(
        String::from_utf8_lossy(&root.stderr).contains("PodSecurity"),
        "the API server did not warn about a non-restricted pod template"
    );

    let rules = rbac_rules(&server);
    assert!(!rules.is_empty(), "the chart created no RBAC rules");
    for rule in &rules {
        for key in [
            "apiGroups",
            "resources",
            "verbs",
            "resourceNames",
            "nonResourceURLs",
        ] {
            let values = rule[key].as_array().cloned().unwrap_or_default();
            assert!(
                values
                    .iter()
                    .all(|value| value.as_str().is_some_and(|v| !v.contains('*'))),
                "a rule grants a wildcard in {key}: {rule}"
            );
        }
    }

    // What the operator may and may not do, asked of the API server's authorizer.
    let all = "system:serviceaccount:ferry-defaults:ferry0-operator";
    for (verb, resource) in [
        ("patch", "queues.ferry.dev"),
        ("update", "topics.ferry.dev/status"),
        ("watch", "accesspolicies.ferry.dev"),
        ("patch", "accesspolicies.ferry.dev/status"),
        ("update", "brokerclusters.ferry.dev/finalizers"),
        ("create", "statefulsets.apps"),
        ("patch", "poddisruptionbudgets.policy"),
        ("create", "events.events.k8s.io"),
        ("watch", "pods"),
        ("delete", "networkpolicies.networking.k8s.io"),
        // A TLS BrokerCluster's CA and host certificates, by name.
        ("get", "secrets"),
        ("patch", "secrets"),
    ] {
        assert!(
            operator_can(&server, all, verb, resource, "elsewhere"),
            "cannot {verb} {resource}"
        );
    }
    for (verb, resource) in [
        ("delete", "statefulsets.apps"),
        // Secrets it did not make are none of its business.
        ("list", "secrets"),
        ("watch", "secrets"),
        ("create", "pods"),
        ("delete", "queues.ferry.dev"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
    ] {
        assert!(
            !operator_can(&server, all, verb, resource, "elsewhere"),
            "may {verb} {resource}"
        );
    }
    assert!(operator_can(
        &server,
        all,
        "update",
        "leases.coordination.k8s.io",
        "ferry-defaults"
    ));
    assert!(!operator_can(
        &server,
        all,
        "update",
        "leases.coordination.k8s.io",
        "elsewhere"
    ));

    // With watch namespaces the operator's rights end at them.
    let namespaced = "system:serviceaccount:ferry-namespaced:ferry2-operator";
    assert!(operator_can(
        &server,
        namespaced,
        "patch",
        "queues.ferry.dev",
        "team-a"
    ));
    assert!(operator_can(
        &server,
        namespaced,
        "patch",
        "queues.ferry.dev",
        "team-b"
    ));
    assert!(!operator_can(
        &server,
        namespaced,
        "patch",
        "queues.ferry.dev",
        "elsewhere"
    ));
}

#[test]
fn helm_install_creates_the_release_and_its_crds() {
    let server = KubeApiServer::shared();
    let install = server
        .helm_command()
        .args(["install", "ferry-helm"])
        .arg(chart())
        .args([
            "--namespace",
            "ferry-helm",
            "--create-namespace",
            "--set",
            "defaultCluster.enabled=true",
        ])
        .output()
        .expect("run helm");
    assert!(
        install.status.success(),
        "helm install failed:\n{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let status = server
        .helm_command()
        .args([
            "status",
            "ferry-helm",
            "--namespace",
            "ferry-helm",
            "-o",
            "json",
        ])
        .output()
        .expect("run helm");
    let status: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("helm status prints JSON");
    assert_eq!(status["info"]["status"], "deployed");
    // Helm installed the CRDs from the chart's crds/ before the default BrokerCluster.
    let hosts = server.kubectl_ok([
        "get",
        "brokercluster",
        "default",
        "-n",
        "ferry-helm",
        "-o",
        "jsonpath={.spec.hosts}",
    ]);
    assert_eq!(hosts, "3");
    server.kubectl_ok([
        "get",
        "deployment",
        "ferry-helm-operator",
        "-n",
        "ferry-helm",
    ]);
    server.kubectl_ok(["get", "statefulset", "ferry-helm-etcd", "-n", "ferry-helm"]);
}
