//! The Kubernetes harness itself: the API server authorizes with RBAC (the second
//! identity is refused until bound), and kube-controller-manager collects owned
//! objects and deletes namespaces, which the operator tests rely on.

use std::time::{Duration, Instant};

use ferry_e2e::KubeApiServer;
use ferry_e2e::kube::{USER_GROUP, USER_NAME};

/// How long the controllers may take to act.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until `kubectl get <args>` reports NotFound.
fn wait_gone(server: &KubeApiServer, args: &[&str]) {
    let deadline = Instant::now() + CONTROLLER_TIMEOUT;
    loop {
        let output = server.kubectl(["get"].iter().chain(args));
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() && stderr.contains("NotFound") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} still exists after {CONTROLLER_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_second_identity_is_authorized_by_rbac_only() {
    let server = KubeApiServer::shared();
    server.create_namespace("rbac-probe");
    let refused = server.kubectl_as_user(["get", "configmaps", "-n", "rbac-probe"]);
    assert!(
        !refused.status.success(),
        "an unbound user may list configmaps"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("Forbidden") && stderr.contains(USER_NAME),
        "not refused as {USER_NAME}: {stderr}"
    );

    server.kubectl_ok([
        "create",
        "role",
        "read-configmaps",
        "--verb=get,list",
        "--resource=configmaps",
        "-n",
        "rbac-probe",
    ]);
    server.kubectl_ok([
        "create",
        "rolebinding",
        "read-configmaps",
        "--role=read-configmaps",
        &format!("--group={USER_GROUP}"),
        "-n",
        "rbac-probe",
    ]);
    let allowed = server.kubectl_as_user(["get", "configmaps", "-n", "rbac-probe"]);
    assert!(
        allowed.status.success(),
        "bound, still refused: {}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    // The binding is namespaced: elsewhere the user is still refused.
    let elsewhere = server.kubectl_as_user(["get", "configmaps", "-n", "default"]);
    assert!(!elsewhere.status.success());
}

#[test]
fn controller_manager_collects_owned_objects_and_deletes_namespaces() {
    let mut server = KubeApiServer::start();
    server.start_controller_manager();
    let ns = "gc-probe";
    server.create_namespace(ns);
    server.kubectl_ok(["create", "configmap", "owner", "-n", ns]);
    let uid = server.kubectl_ok([
        "get",
        "configmap",
        "owner",
        "-n",
        ns,
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let dependent = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dependent\n  ownerReferences:\n  \
         - apiVersion: v1\n    kind: ConfigMap\n    name: owner\n    uid: {uid}\n"
    );
    let created = server.kubectl_stdin(["create", "-n", ns, "-f", "-"], &dependent);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    server.kubectl_ok(["delete", "configmap", "owner", "-n", ns]);
    wait_gone(&server, &["configmap", "dependent", "-n", ns]);

    // Namespace deletion needs the namespace controller to empty it first.
    server.kubectl_ok(["create", "configmap", "left-behind", "-n", ns]);
    server.kubectl_ok(["delete", "namespace", ns, "--wait=false"]);
    wait_gone(&server, &["namespace", ns]);
}

#[test]
fn an_impersonating_kubeconfig_acts_as_the_named_identity() {
    let server = KubeApiServer::shared();
    let account = "system:serviceaccount:imp-probe:robot";
    let kubeconfig =
        server.kubeconfig_as(account, &["system:serviceaccounts", "system:authenticated"]);
    // A later --kubeconfig overrides the harness's admin one.
    let flag = format!("--kubeconfig={}", kubeconfig.display());
    let whoami = server.kubectl_ok([
        flag.as_str(),
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(whoami, account);
    // And it has that identity's rights: none.
    let refused = server.kubectl([flag.as_str(), "get", "secrets", "-n", "default"]);
    assert!(
        !refused.status.success(),
        "the impersonated account may list secrets"
    );
}
