//! A private test network of Linux network namespaces, so a test can cut one host off
//! from etcd and the other hosts — which addresses on loopback cannot do, because
//! every host's outgoing connections leave from 127.0.0.1.
//!
//! Each host runs in its own namespace (`ip netns exec`) with two links to the test's
//! (root) namespace:
//!
//! - the **cluster link**: a veth pair whose root end is a port of a bridge holding
//!   `10.231.N.1/24`, the host at `10.231.N.(index + 2)`. etcd listens on the bridge
//!   address too; hosts reach etcd, each other and the test's producers over it.
//!   [`TestNetwork::cut`] takes the root end down, so the host reaches nothing over
//!   it and nothing reaches the host; [`TestNetwork::heal`] brings it back up.
//! - the **side door**: a veth pair of its own, `10.232.N.(4·index + 1)/30` in the
//!   root namespace and `.(4·index + 2)` in the host's, which a cut never touches. The
//!   cluster never uses it (hosts advertise their cluster-link address); it lets the
//!   test play a client that stands on the cut host's side of the partition.
//!
//! These addresses live only on this private bridge and these veth pairs: nothing
//! has an uplink or a default route, and the root namespace does not route between
//! them, so no test packet leaves the machine and the cut host has no path around
//! the cut. If bridged traffic is filtered (`br_netfilter` with an iptables FORWARD
//! policy of DROP, as Docker sets up), hosts cannot reach each other: run the tests
//! on a machine without such rules.
//!
//! `N` is a subnet number claimed for the network's lifetime by binding the abstract
//! Unix socket `ferry-e2e-netns-N`, which the kernel releases when the process dies,
//! however it dies. So parallel tests and parallel test runs never share a subnet,
//! and whatever carries `N` in its name while nobody holds the claim — namespaces,
//! links — was left by a test run that was killed: before a network is built, such
//! leftovers are deleted on every unclaimed subnet, and on the one it claims.
//! Everything is deleted again on drop, also when a test panics.
//!
//! Needs root and iproute2's `ip`. [`available_or_skip`] decides what a test does
//! where namespaces cannot be made: skip it, or under `CI=true` fail.

use std::net::Ipv4Addr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The most hosts: one /30 side-door link each in a /24.
pub const MAX_HOSTS: usize = 63;
/// The port hosts listen on: each namespace has ports of its own, so it is free.
pub const HOST_PORT: u16 = 7070;

/// Subnet numbers a network may claim (the third octet of its addresses).
const SUBNETS: u16 = 256;
/// The name of the claim socket of subnet `N` is this followed by `N`.
const CLAIM_PREFIX: &str = "ferry-e2e-netns-";

/// A host's place in the test network.
#[derive(Debug, Clone)]
pub struct NetnsHost {
    /// The namespace it runs in.
    pub namespace: String,
    /// Its cluster-link address: what it listens on and advertises.
    pub ip: Ipv4Addr,
    /// Its side-door address, which a cut does not touch.
    pub side_door_ip: Ipv4Addr,
    /// The root end of its cluster link, which a cut takes down.
    cluster_link: String,
    /// The root end of its side door.
    side_link: String,
}

/// A bridge, per-host namespaces and veth pairs; all deleted on drop.
pub struct TestNetwork {
    subnet: u8,
    hosts: Vec<NetnsHost>,
    /// Holds the subnet's claim until the network is torn down.
    _claim: UnixListener,
}

impl TestNetwork {
    /// Claims a subnet, deletes what a killed run left on it, and builds a network
    /// for `hosts` hosts.
    pub fn create(hosts: usize) -> Result<Self, String> {
        if !(1..=MAX_HOSTS).contains(&hosts) {
            return Err(format!(
                "a test network has 1 to {MAX_HOSTS} hosts, not {hosts}"
            ));
        }
        sweep_unclaimed();
        let (subnet, claim) = claim_subnet()?;
        let mut network = Self {
            subnet,
            hosts: Vec::new(),
            _claim: claim,
        };
        remove_leftovers(subnet)?;
        // From here on, a failure drops `network`, which deletes what was made.
        network.build(hosts)?;
        Ok(network)
    }

    /// The bridge's address in the root namespace: where etcd listens for hosts.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, 1)
    }

    /// Host `index`.
    pub fn host(&self, index: usize) -> &NetnsHost {
        self.hosts
            .get(index)
            .unwrap_or_else(|| panic!("no host {index} in a network of {}", self.hosts.len()))
    }

    /// Cuts host `index` off: its cluster link goes down, so it reaches neither etcd
    /// nor the other hosts, and none of them (nor the test, but over the side door)
    /// reaches it. Packets in flight are lost; connections stay open.
    pub fn cut(&self, index: usize) {
        let link = &self.host(index).cluster_link;
        ip(&["link", "set", link, "down"]).unwrap_or_else(|err| panic!("cut host {index}: {err}"));
    }

    /// Undoes [`Self::cut`]: TCP retransmits what was sent meanwhile.
    pub fn heal(&self, index: usize) {
        let link = &self.host(index).cluster_link;
        ip(&["link", "set", link, "up"]).unwrap_or_else(|err| panic!("heal host {index}: {err}"));
    }

    fn bridge(&self) -> String {
        format!("fe2e{}-br", self.subnet)
    }

    fn build(&mut self, hosts: usize) -> Result<(), String> {
        let bridge = self.bridge();
        ip(&[
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        ip(&[
            "link",
            "set",
            &bridge,
            "alias",
            "ferry e2e test network, no uplink",
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.gateway()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for index in 0..hosts {
            self.add_host(index)?;
        }
        Ok(())
    }

    fn add_host(&mut self, index: usize) -> Result<(), String> {
        let n = self.subnet;
        let offset = u8::try_from(index).expect("at most MAX_HOSTS hosts");
        let host = NetnsHost {
            namespace: format!("fe2e{n}-h{index}"),
            ip: Ipv4Addr::new(10, 231, n, offset + 2),
            side_door_ip: Ipv4Addr::new(10, 232, n, 4 * offset + 2),
            cluster_link: format!("fe2e{n}-c{index}"),
            side_link: format!("fe2e{n}-s{index}"),
        };
        let side_link = &host.side_link;
        let side_root_ip = Ipv4Addr::new(10, 232, n, 4 * offset + 1);
        let ns = host.namespace.clone();
        // Recorded first, so that drop deletes the namespace if a later step fails.
        self.hosts.push(host.clone());
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        // Cluster link: root end on the bridge, the other end `eth0` in the namespace.
        let link = &host.cluster_link;
        ip(&[
            "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", link, "master", &self.bridge(), "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", host.ip),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        // Side door: a point-to-point /30 between the root namespace and this host.
        ip(&[
            "link", "add", side_link, "type", "veth", "peer", "name", "side0", "netns", &ns,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{side_root_ip}/30"),
            "dev",
            side_link,
        ])?;
        ip(&["link", "set", side_link, "up"])?;
        let side_ip = format!("{}/30", host.side_door_ip);
        ip(&["-n", &ns, "addr", "add", &side_ip, "dev", "side0"])?;
        ip(&["-n", &ns, "link", "set", "side0", "up"])?;
        Ok(())
    }

    /// Deletes the namespaces (their processes lose their links), then the root ends
    /// of the veth pairs and the bridge. Best effort: a step that fails is reported
    /// and the rest still runs; what is left goes when the subnet is claimed again.
    fn tear_down(&self) {
        let mut failures = Vec::new();
        for host in &self.hosts {
            for args in [
                ["netns", "delete", host.namespace.as_str()],
                ["link", "delete", host.cluster_link.as_str()],
                ["link", "delete", host.side_link.as_str()],
            ] {
                failures.extend(ip(&args).err());
            }
        }
        failures.extend(ip(&["link", "delete", &self.bridge()]).err());
        // A link goes with its namespace, so "cannot find device" is no failure.
        failures.retain(|failure| !failure.contains("Cannot find device"));
        if !failures.is_empty() {
            eprintln!(
                "test network 10.231.{}.0/24 teardown: {failures:?}",
                self.subnet
            );
        }
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        self.tear_down();
    }
}

/// Claims the first free subnet number, starting from one derived from the process
/// id so concurrent runs rarely contend.
fn claim_subnet() -> Result<(u8, UnixListener), String> {
    let start = u16::try_from(std::process::id() % u32::from(SUBNETS)).unwrap_or(0);
    for step in 0..SUBNETS {
        let subnet = u8::try_from((start + step) % SUBNETS).expect("below 256");
        if let Some(claim) = claim(subnet)? {
            return Ok((subnet, claim));
        }
    }
    Err(format!("all {SUBNETS} test subnets are in use"))
}

/// Claims subnet number `subnet`; `None` if another network holds it.
fn claim(subnet: u8) -> Result<Option<UnixListener>, String> {
    let name = format!("{CLAIM_PREFIX}{subnet}");
    let addr = SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|err| format!("abstract socket name {name}: {err}"))?;
    // Only "in use" means another network holds it; any other error is ours.
    match UnixListener::bind_addr(&addr) {
        Ok(listener) => Ok(Some(listener)),
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => Ok(None),
        Err(err) => Err(format!("claim subnet {subnet} ({name}): {err}")),
    }
}

/// Namespaces and links of subnet `subnet` all start with this.
fn name_prefix(subnet: u8) -> String {
    format!("fe2e{subnet}-")
}

/// The subnet number in a namespace or link name made here (`fe2eN-…`).
fn subnet_of(name: &str) -> Option<u8> {
    let (number, _) = name.strip_prefix("fe2e")?.split_once('-')?;
    number.parse().ok()
}

/// Deletes namespaces and links of `subnet` that a killed run left behind; the
/// caller holds the subnet's claim, which proves their owner is gone.
fn remove_leftovers(subnet: u8) -> Result<(), String> {
    let prefix = name_prefix(subnet);
    for namespace in list_namespaces()? {
        if namespace.starts_with(&prefix) {
            ip(&["netns", "delete", &namespace])?;
        }
    }
    for link in list_links()? {
        // Deleting one end of a veth pair deletes the other, in whatever namespace.
        if link.starts_with(&prefix) {
            ip(&["link", "delete", &link])?;
        }
    }
    Ok(())
}

/// Deletes what killed runs left on subnets nobody holds now, so leftovers do not
/// pile up on subnets this process does not happen to claim. Best effort: what
/// cannot be deleted is reported and left for the next run.
fn sweep_unclaimed() {
    let names = list_namespaces().and_then(|mut names| {
        names.extend(list_links()?);
        Ok(names)
    });
    let subnets: std::collections::BTreeSet<u8> = match names {
        Ok(names) => names.iter().filter_map(|name| subnet_of(name)).collect(),
        Err(err) => return eprintln!("test network sweep: {err}"),
    };
    for subnet in subnets {
        // Held only for the sweep; another network may claim the subnet right after.
        let swept = claim(subnet).and_then(|held| match held {
            Some(_claim) => remove_leftovers(subnet),
            None => Ok(()),
        });
        if let Err(err) = swept {
            eprintln!("test network sweep of subnet {subnet}: {err}");
        }
    }
}

/// iproute2's `ip`: on the path, else where Debian puts it (`/usr/sbin`, which is
/// not on every user's path).
pub(crate) fn ip_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("ip"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("ip"))
}

/// Runs `ip ARGS`; its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    ip_output(args).map(drop)
}

/// Runs `ip ARGS` and returns its stdout, or its stderr on failure.
fn ip_output(args: &[&str]) -> Result<String, String> {
    let output = Command::new(ip_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("run ip {}: {err} (is iproute2 installed?)", args.join(" ")))?;
    if !output.status.success() {
        return Err(format!(
            "ip {}: {} {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Names of the network namespaces `ip netns` knows (lines are `NAME` or
/// `NAME (id: N)`).
fn list_namespaces() -> Result<Vec<String>, String> {
    Ok(ip_output(&["netns", "list"])?
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// Names of the root namespace's links (`ip -o link` lines are `N: NAME[@PEER]: …`).
fn list_links() -> Result<Vec<String>, String> {
    Ok(ip_output(&["-o", "link", "show"])?
        .lines()
        .filter_map(|line| {
            let name = line.split(": ").nth(1)?;
            Some(name.split('@').next().unwrap_or(name).to_owned())
        })
        .collect())
}

/// Whether this machine can make namespaces: a namespace is added and deleted again.
pub fn check_available() -> Result<(), String> {
    // Tests of one binary probe at once from their threads: the name must differ.
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("fe2e-probe-{}-{n}", std::process::id());
    ip(&["netns", "add", &probe])?;
    ip(&["netns", "delete", &probe])
}

/// Whether a test that needs namespaces can run here. Under `CI=true` it must: a
/// machine without them fails the test with the reason. Elsewhere (no root, no
/// `ip`) the test is skipped with the reason printed.
pub fn available_or_skip(test: &str) -> bool {
    match check_available() {
        Ok(()) => true,
        Err(reason) if std::env::var("CI").is_ok_and(|ci| ci == "true") => panic!(
            "{test} needs network namespaces (root and iproute2's ip; .ci/setup installs \
             iproute2), and CI=true forbids skipping it: {reason}"
        ),
        Err(reason) => {
            eprintln!("SKIPPED {test}: network namespaces are not available here: {reason}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;
    use std::time::Duration;

    use super::*;

    #[test]
    fn two_networks_never_share_a_subnet() {
        let (first, _held) = claim_subnet().expect("a free subnet");
        let (second, _also_held) = claim_subnet().expect("another free subnet");
        assert_ne!(first, second);
    }

    /// The root namespace reaches a host over its cluster link until the cut and
    /// again after the heal, and over its side door throughout.
    #[test]
    fn a_cut_closes_the_cluster_link_only() {
        if !available_or_skip("netns::a_cut_closes_the_cluster_link_only") {
            return;
        }
        let network = TestNetwork::create(1).expect("a test network");
        let host = network.host(0).clone();
        let reach = |ip: Ipv4Addr| {
            TcpStream::connect_timeout(&(ip, 9).into(), Duration::from_millis(500))
                .map(drop)
                .map_err(|err| err.kind())
        };
        // Nothing listens on port 9 in the namespace: a reachable host answers with
        // a reset (ConnectionRefused); a cut one does not answer at all.
        let refused = Err(std::io::ErrorKind::ConnectionRefused);
        // A link just made (or brought back up) may drop the first packets on a busy
        // machine; reachability is judged over a few attempts.
        let answers = |ip: Ipv4Addr| (0..10).any(|_| reach(ip) == refused);
        assert!(answers(host.ip));
        assert!(answers(host.side_door_ip));
        network.cut(0);
        assert_ne!(reach(host.ip), refused, "the cut host still answers");
        assert!(answers(host.side_door_ip), "the side door stays open");
        network.heal(0);
        assert!(answers(host.ip), "the healed host answers again");
        let names = (host.namespace.clone(), network.bridge());
        drop(network);
        assert!(!list_namespaces().expect("namespaces").contains(&names.0));
        assert!(!list_links().expect("links").contains(&names.1));
    }

    /// What a killed run left (a namespace and a link on a subnet it held) is gone
    /// once the next network is made, whichever subnet that one claims.
    #[test]
    fn leftovers_of_a_killed_run_are_swept() {
        if !available_or_skip("netns::leftovers_of_a_killed_run_are_swept") {
            return;
        }
        let (subnet, held) = claim_subnet().expect("a free subnet");
        // Names no network makes, so a test running alongside cannot be mistaken for
        // a leftover, whichever subnet it claims.
        let namespace = format!("fe2e{subnet}-left");
        let link = format!("fe2e{subnet}-left");
        ip(&["netns", "add", &namespace]).expect("a leftover namespace");
        ip(&["link", "add", &link, "type", "bridge"]).expect("a leftover bridge");
        // The run dies: its claim goes with it.
        drop(held);
        let network = TestNetwork::create(1).expect("a test network");
        assert!(!list_namespaces().expect("namespaces").contains(&namespace));
        assert!(!list_links().expect("links").contains(&link));
        drop(network);
    }
}
