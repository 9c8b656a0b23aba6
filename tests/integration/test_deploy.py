"""deploy/: the Kubernetes manifests, the systemd unit and the Containerfile.

No cluster and no container engine here: the manifests are parsed and
cross-checked against each other and against the proxy config they carry
(ports, probes, drain timing, selectors, the config mount, the headless
Service behind discovery: DNS); that config is validated with the real
`switchyard -t`; the unit goes through `systemd-analyze verify` when it is
installed; the Containerfile is read (Debian 12 bases, Debian packages only,
the libraries the binary links).
"""

import math
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, binary, run_switchyard

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
UNIT = DEPLOY / "systemd" / "switchyard.service"
CONTAINERFILE = DEPLOY / "container" / "Containerfile"
IMAGE_CONFIG = DEPLOY / "container" / "switchyard.yaml"
INSTALLED_BINARY = "/usr/local/bin/switchyard"

POD_LABELS_NEEDED = ("app.kubernetes.io/name",)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def duration_s(text):
    """A switchyard duration ("250ms", "30s", "5m", "2h") in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text).strip())
    assert m, f"not a duration: {text!r}"
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]]


def expand_defaults(text):
    """${NAME:-default} -> default, as switchyard does with NAME unset."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", text)


def addr_port(address):
    return int(str(address).rsplit(":", 1)[1])


def addr_host(address):
    host = str(address).rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


def k8s_docs():
    """(path, document) for every YAML document under deploy/kubernetes."""
    out = []
    for path in sorted(K8S.rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path, doc))
    return out


def cpu_count(q):
    """A Kubernetes CPU quantity ("2", "1500m", 0.5) in CPUs."""
    q = str(q)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


def selector_matches(selector, labels):
    """A LabelSelector (matchLabels and matchExpressions) against a label set."""
    ml = selector.get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in ml.items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and labels.get(key) in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return bool(ml or selector.get("matchExpressions"))


class Manifests:
    """The objects of deploy/kubernetes, and what they say together."""

    def __init__(self):
        self.docs = k8s_docs()
        self.objs = [d for _, d in self.docs if d.get("kind") != "Kustomization"]

    def of_kind(self, kind):
        return [o for o in self.objs if o.get("kind") == kind]

    @property
    def deployment(self):
        deps = [d for d in self.of_kind("Deployment")
                if any("switchyard" in (c.get("image") or "")
                       for c in d["spec"]["template"]["spec"]["containers"])]
        assert len(deps) == 1, f"expected one switchyard Deployment, found {len(deps)}"
        return deps[0]

    @property
    def pod_spec(self):
        return self.deployment["spec"]["template"]["spec"]

    @property
    def pod_labels(self):
        return self.deployment["spec"]["template"]["metadata"]["labels"]

    @property
    def container(self):
        cs = [c for c in self.pod_spec["containers"] if "switchyard" in (c.get("image") or "")]
        assert len(cs) == 1
        return cs[0]

    def args(self):
        """The container's args with $(VAR) expanded as the kubelet does,
        each resourceFieldRef resolved from the container's resources."""
        c = self.container
        env = {}
        for e in c.get("env") or []:
            if "value" in e:
                env[e["name"]] = str(e["value"])
            ref = (e.get("valueFrom") or {}).get("resourceFieldRef")
            if ref:
                res = ref["resource"]  # e.g. limits.cpu
                section, name = res.split(".", 1)
                qty = c["resources"][section][name]
                assert name == "cpu", f"resourceFieldRef {res}: only cpu handled here"
                divisor = cpu_count(ref.get("divisor", "1"))
                env[e["name"]] = str(math.ceil(cpu_count(qty) / divisor))
        argv = list(c.get("command") or []) + [str(a) for a in c.get("args") or []]
        return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                       lambda m: env.get(m[1], m[0]), a) for a in argv]

    def flag(self, short, long):
        """Value of -X VALUE / --long VALUE / --long=VALUE in the args."""
        a = self.args()
        for i, x in enumerate(a):
            if x in (short, long) and i + 1 < len(a):
                return a[i + 1]
            if x.startswith(long + "="):
                return x.split("=", 1)[1]
        return None

    @property
    def config_path(self):
        p = self.flag("-c", "--config")
        assert p, f"no -c in the args: {self.args()}"
        return p

    def container_port(self, port):
        """A probe's or targetPort's port (number or name) as a number."""
        if isinstance(port, int):
            return port
        if str(port).isdigit():
            return int(port)
        for p in self.container.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        pytest.fail(f"no container port named {port!r}")

    def config_map_for_config(self):
        """(ConfigMap, key) that the -c file comes from, through the volume
        mounted on the file's directory."""
        path = Path(self.config_path)
        mounts = [m for m in self.container.get("volumeMounts") or []
                  if Path(m["mountPath"]) == path.parent]
        assert len(mounts) == 1, (
            f"-c {path}: expected one volumeMount at {path.parent}, found "
            f"{[m['mountPath'] for m in self.container.get('volumeMounts') or []]}")
        mount = mounts[0]
        assert "subPath" not in mount and "subPathExpr" not in mount, (
            "a subPath mount never sees ConfigMap updates: --watch-config needs the directory")
        vols = [v for v in self.pod_spec.get("volumes") or [] if v["name"] == mount["name"]]
        assert len(vols) == 1 and "configMap" in vols[0], f"volume {mount['name']} is not a ConfigMap"
        ref = vols[0]["configMap"]
        key = path.name
        for item in ref.get("items") or []:
            if item["path"] == path.name:
                key = item["key"]
        cms = [c for c in self.of_kind("ConfigMap") if c["metadata"]["name"] == ref["name"]]
        assert len(cms) == 1, f"ConfigMap {ref['name']} is not among the manifests"
        assert key in (cms[0].get("data") or {}), f"ConfigMap {ref['name']} has no key {key}"
        return cms[0], key

    @property
    def config_text(self):
        cm, key = self.config_map_for_config()
        return cm["data"][key]

    @property
    def config(self):
        return yaml.safe_load(expand_defaults(self.config_text))


@pytest.fixture(scope="module")
def m():
    return Manifests()


# ---------------------------------------------------------------------------
# Kubernetes manifests
# ---------------------------------------------------------------------------

def test_manifests_parse_and_have_the_expected_kinds(m):
    assert m.docs, f"no manifests under {K8S}"
    for path, d in m.docs:
        assert d.get("apiVersion") and d.get("kind"), f"{path}: apiVersion and kind"
        if d["kind"] != "Kustomization":
            assert d.get("metadata", {}).get("name"), f"{path}: {d['kind']} without a name"
    seen = {}
    for o in m.objs:
        k = (o["kind"], o["metadata"]["name"])
        assert k not in seen, f"{k} defined twice"
        seen[k] = o
    kinds = {o["kind"] for o in m.objs}
    for kind in ("Deployment", "Service", "ConfigMap", "PodDisruptionBudget"):
        assert kind in kinds, f"no {kind} in {K8S}"
    services = m.of_kind("Service")
    assert [s for s in services if s["spec"].get("clusterIP") != "None"], "no Service for the proxy"
    assert [s for s in services if s["spec"].get("clusterIP") == "None"], "no headless Service"
    pdb = m.of_kind("PodDisruptionBudget")[0]
    assert pdb["apiVersion"] == "policy/v1"
    assert m.deployment["apiVersion"] == "apps/v1"


def test_kustomization_lists_every_manifest(m):
    kz = [(p, d) for p, d in m.docs if d.get("kind") == "Kustomization"]
    if not kz:
        pytest.skip("no kustomization.yaml")
    path, d = kz[0]
    listed = {str((path.parent / r).resolve()) for r in d.get("resources") or []}
    files = {str(p.resolve()) for p, doc in m.docs if doc.get("kind") != "Kustomization"}
    assert listed == files, f"kustomization resources {sorted(listed)} != manifests {sorted(files)}"
    kubectl = shutil.which("kubectl")
    if kubectl:  # offline: renders the overlay, no cluster needed
        r = subprocess.run([kubectl, "kustomize", str(path.parent)], capture_output=True,
                           text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        rendered = [d for d in yaml.safe_load_all(r.stdout) if d]
        assert len(rendered) == len(m.objs)


def test_deployment_replicas_and_args(m):
    d = m.deployment
    assert d["spec"]["replicas"] == 3
    args = m.args()
    assert "--watch-config" in args, args
    assert m.config_path == "/etc/switchyard/switchyard.yaml"
    # --workers follows the CPU limit: sysconf() in a container counts the
    # node's CPUs, not the container's share.
    workers = m.flag("-w", "--workers")
    assert workers is not None, f"no --workers: {args}"
    assert workers.isdigit() and 1 <= int(workers) <= 256, f"--workers {workers!r}"
    limit = m.container["resources"]["limits"]["cpu"]
    assert int(workers) == math.ceil(cpu_count(limit)), (workers, limit)


def test_resources_requests_and_limits(m):
    r = m.container["resources"]
    for section in ("requests", "limits"):
        for res in ("cpu", "memory"):
            assert res in r.get(section, {}), f"resources.{section}.{res}"
    overload = ((m.config.get("limits") or {}).get("overload") or {}).get("memory")
    if overload:  # the proxy sheds load before the kernel kills it
        units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
        lim = r["limits"]["memory"]
        lim_b = int(lim[:-2]) * units[lim[-2:]]
        ov = re.fullmatch(r"(\d+)(KiB|MiB|GiB)", overload)
        assert ov and int(ov[1]) * units[ov[2][:2]] < lim_b, (overload, lim)


def test_listener_and_admin_ports_match_the_config(m):
    cfg = m.config
    listener_ports = {addr_port(l["address"]) for l in cfg["listeners"]}
    admin_port = addr_port(cfg["admin"]["address"])
    # Reachable from the kubelet and the Service: not loopback.
    for a in [l["address"] for l in cfg["listeners"]] + [cfg["admin"]["address"]]:
        assert addr_host(a) not in ("127.0.0.1", "localhost", "::1"), f"{a} is loopback-only"
    ports = {p["name"]: int(p["containerPort"]) for p in m.container["ports"]}
    assert ports.get("admin") == admin_port, (ports, admin_port)
    assert ports.get("http") in listener_ports, (ports, listener_ports)
    svc = [s for s in m.of_kind("Service") if s["spec"].get("clusterIP") != "None"]
    assert svc
    for s in svc:
        for p in s["spec"]["ports"]:
            target = m.container_port(p.get("targetPort", p["port"]))
            assert target in listener_ports, f"Service {s['metadata']['name']} -> {target}"
            assert target != admin_port, "the admin API must not be behind the client Service"


def test_probes_use_the_admin_port(m):
    cfg = m.config
    admin_port = addr_port(cfg["admin"]["address"])
    rp = m.container["readinessProbe"]["httpGet"]
    assert rp["path"] == "/ready"
    assert m.container_port(rp["port"]) == admin_port
    lp = m.container["livenessProbe"]
    assert "httpGet" in lp or "tcpSocket" in lp
    probe = lp.get("httpGet") or lp.get("tcpSocket")
    assert m.container_port(probe["port"]) == admin_port
    # /ready answers 503 while draining: as a liveness probe it would have the
    # kubelet kill a replica in the middle of its drain.
    assert lp.get("httpGet", {}).get("path") != "/ready"


def prestop_seconds(c):
    hook = c["lifecycle"]["preStop"]
    if "sleep" in hook:
        return int(hook["sleep"]["seconds"])
    cmd = " ".join(hook["exec"]["command"])
    m = re.search(r"sleep\s+(\d+)", cmd)
    return int(m[1]) if m else 0


def test_drain_fits_in_the_termination_grace_period(m):
    c = m.container
    assert "preStop" in (c.get("lifecycle") or {}), "no preStop hook"
    drain = duration_s(m.config.get("drain_timeout", "30s"))
    grace = m.pod_spec["terminationGracePeriodSeconds"]
    pre = prestop_seconds(c)
    assert pre >= 1, "preStop should hold the pod while it leaves the endpoints"
    assert grace > pre + drain, f"grace {grace}s <= preStop {pre}s + drain_timeout {drain}s"


def test_security_context(m):
    pod = m.pod_spec.get("securityContext") or {}
    c = m.container.get("securityContext") or {}

    def eff(key):
        return c.get(key, pod.get(key))

    assert eff("runAsNonRoot") is True
    if eff("runAsUser") is not None:
        assert eff("runAsUser") != 0
    assert c.get("readOnlyRootFilesystem") is True
    assert c.get("allowPrivilegeEscalation") is False
    assert c.get("privileged") in (None, False)
    caps = c.get("capabilities") or {}
    assert "ALL" in (caps.get("drop") or [])
    assert not caps.get("add"), "no capability is needed for ports above 1024"
    # With every capability dropped the proxy cannot bind below 1024.
    for p in m.container["ports"]:
        assert int(p["containerPort"]) >= 1024


def test_selectors_match_the_pod_labels(m):
    labels = m.pod_labels
    for k in POD_LABELS_NEEDED:
        assert k in labels
    d = m.deployment
    assert selector_matches(d["spec"]["selector"], labels), "Deployment selector"
    for s in m.of_kind("Service"):
        if s["spec"].get("clusterIP") == "None":
            continue
        sel = s["spec"]["selector"]
        assert sel and all(labels.get(k) == v for k, v in sel.items()), (
            f"Service {s['metadata']['name']} selector {sel} vs pod labels {labels}")
    pdbs = m.of_kind("PodDisruptionBudget")
    assert pdbs
    for p in pdbs:
        assert selector_matches(p["spec"]["selector"], labels), (
            f"PDB {p['metadata']['name']} selector vs pod labels {labels}")
        assert ("maxUnavailable" in p["spec"]) != ("minAvailable" in p["spec"])
        mu = p["spec"].get("maxUnavailable")
        if isinstance(mu, int):
            assert 1 <= mu < d["spec"]["replicas"]
    for tsc in m.pod_spec.get("topologySpreadConstraints") or []:
        assert selector_matches(tsc["labelSelector"], labels)
    aff = (m.pod_spec.get("affinity") or {}).get("podAntiAffinity") or {}
    for term in aff.get("requiredDuringSchedulingIgnoredDuringExecution") or []:
        assert selector_matches(term["labelSelector"], labels)
    for w in aff.get("preferredDuringSchedulingIgnoredDuringExecution") or []:
        assert selector_matches(w["podAffinityTerm"]["labelSelector"], labels)
    assert m.pod_spec.get("topologySpreadConstraints") or aff, "replicas not spread over nodes"


def test_config_mount_matches_the_c_argument(m):
    cm, key = m.config_map_for_config()  # asserts the mount, the volume and the key
    mount = [x for x in m.container["volumeMounts"]
             if Path(x["mountPath"]) == Path(m.config_path).parent][0]
    assert mount.get("readOnly") is True


def test_grpc_backend_is_discovered_through_the_headless_service(m):
    cfg = m.config
    headless = {s["metadata"]["name"]: s for s in m.of_kind("Service")
                if s["spec"].get("clusterIP") == "None"}
    svc = {b["name"]: b for b in cfg["backend_services"]}
    assert "grpc-backend" in svc
    b = svc["grpc-backend"]
    assert b.get("discovery") == "DNS"
    assert b.get("protocol") == "H2C"
    assert duration_s(b.get("dns_refresh_rate", "5s")) <= 30
    hcs = {h["name"]: h for h in cfg.get("health_checks") or []}
    assert any(hcs[n]["type"] == "GRPC" for n in b.get("health_checks") or []), "GRPC health check"
    found = False
    for ep in b["endpoints"]:
        host, port = addr_host(ep["address"]).rstrip("."), addr_port(ep["address"])
        parts = host.split(".")
        if len(parts) >= 2 and parts[0] in headless:
            s = headless[parts[0]]
            ns = s["metadata"].get("namespace", "default")
            assert parts[1] == ns, f"{host}: the Service is in namespace {ns}"
            assert port in [int(p["port"]) for p in s["spec"]["ports"]], (
                f"{ep['address']}: port not served by Service {parts[0]}")
            assert not s["spec"].get("publishNotReadyAddresses"), "unready pods would be endpoints"
            found = True
    assert found, f"no endpoint of grpc-backend names a headless Service ({list(headless)})"
    # Routed: some rule of some url map sends traffic to it.
    assert "grpc-backend" in yaml.safe_dump(cfg["url_maps"])
    # and the legacy HTTP backend is there too (the url map's default)
    assert any(s.get("protocol", "HTTP") == "HTTP" for s in cfg["backend_services"])


def test_configmap_config_is_accepted_by_switchyard(m, tmp_path):
    # `switchyard -t` only checks the syntax of a DNS service's host names;
    # it must not need to resolve grpc-backend.default.svc.cluster.local.
    p = tmp_path / "switchyard.yaml"
    p.write_text(m.config_text)
    r = run_switchyard(["-t", "-c", p], timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout


def test_deployment_args_are_accepted_by_switchyard(m, tmp_path):
    # The container's args exactly as the kubelet passes them ($(SY_WORKERS)
    # expanded), the config file moved to tmp, plus -t: every flag parses.
    p = tmp_path / "switchyard.yaml"
    p.write_text(m.config_text)
    args = [str(p) if a == m.config_path else a for a in m.args()]
    if args and "switchyard" in args[0]:  # a `command:` naming the binary
        args = args[1:]
    r = run_switchyard(args + ["-t"], timeout=20)
    assert r.returncode == 0, f"switchyard {' '.join(args)} -t:\n{r.stdout}{r.stderr}"


def test_image_config_is_accepted_by_switchyard():
    r = run_switchyard(["-t", "-c", IMAGE_CONFIG], timeout=20,
                       env={"PORT": "", "SY_ADMIN_PORT": "", "SY_BACKEND": ""})
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------------------
# Containerfile
# ---------------------------------------------------------------------------

def containerfile_instructions():
    """(INSTRUCTION, argument text) with continuations joined, comments dropped."""
    out, cur = [], ""
    for line in CONTAINERFILE.read_text().splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        ins, _, rest = cur.partition(" ")
        out.append((ins.upper(), rest.strip()))
        cur = ""
    return out


def apt_installed_packages(run_text):
    """Package names of every `apt-get install` in a RUN."""
    pkgs = []
    for part in re.split(r"&&|;|\|\|", run_text):
        words = shlex.split(part)
        words = [w for w in words if "=" not in w or w.startswith("-")]  # VAR=x prefixes
        if "apt-get" in words and "install" in words:
            i = words.index("install")
            pkgs += [w for w in words[i + 1:] if not w.startswith("-")]
    return pkgs


def stages():
    """[(from_text, [(INSTRUCTION, arg)...])] per build stage."""
    out = []
    for ins, arg in containerfile_instructions():
        if ins == "FROM":
            out.append((arg, []))
        else:
            assert out, f"{ins} before FROM"
            out[-1][1].append((ins, arg))
    return out


def test_containerfile_bases_are_debian_12():
    st = stages()
    assert len(st) >= 2, "a builder stage and a runtime stage"
    for frm, _ in st:
        image = frm.split()[0]
        assert re.fullmatch(r"(docker\.io/)?(library/)?debian:(12|bookworm)(-slim)?(@sha256:[0-9a-f]{64})?",
                            image), f"FROM {frm}: not Debian 12"


def test_containerfile_installs_only_debian_packages():
    text = " ".join(a for i, a in containerfile_instructions() if i == "RUN")
    for bad in (r"\bcurl\b", r"\bwget\b", r"\bpip3? install", r"\bnpm\b", r"\bgo install",
                r"\bgit clone", r"https?://"):
        assert not re.search(bad, text), f"Containerfile RUN downloads outside apt: {bad}"
    for ins, arg in containerfile_instructions():
        if ins == "ADD":
            assert not re.search(r"https?://", arg), f"ADD {arg}"
    for _, body in stages():
        for ins, arg in body:
            if ins == "RUN" and "apt-get install" in arg:
                assert "apt-get update" in arg, "apt-get update in the same RUN as install"
                assert "--no-install-recommends" in arg


def test_containerfile_builds_and_runs_as_documented():
    st = stages()
    build_body = st[0][1]
    runs = " ".join(a for i, a in build_body if i == "RUN")
    assert re.search(r"\bmake\b.*\ball\b", runs), "the builder runs `make all`"
    build_pkgs = set(apt_installed_packages(runs))
    for p in ("build-essential", "pkg-config", "libnghttp2-dev", "libevent-dev", "libssl-dev",
              "libyaml-dev", "libhttp-parser-dev", "libpcre2-dev", "libsystemd-dev"):
        assert p in build_pkgs, f"builder lacks {p}"
    # The Makefile's `all` writes build/switchyard (B ?= build).
    assert re.search(r"^B \?= build$", (REPO / "Makefile").read_text(), re.M)
    final = st[-1][1]
    copies = [a for i, a in final if i == "COPY" and "--from=" in a]
    assert any(re.search(r"\S*/build/switchyard\s+" + re.escape(INSTALLED_BINARY), a)
               for a in copies), copies
    users = [a for i, a in final if i == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("0", "root"), users
    # Numeric, so Kubernetes' runAsNonRoot can verify it; and the same uid
    # the Deployment pins.
    assert user.isdigit(), f"USER {users[-1]}: use a numeric uid"
    pod_uid = (Manifests().pod_spec.get("securityContext") or {}).get("runAsUser")
    if pod_uid is not None:
        assert int(user) == pod_uid
    entry = [a for i, a in final if i == "ENTRYPOINT"]
    assert entry and INSTALLED_BINARY in entry[-1]
    exposed = {int(p.split("/")[0]) for i, a in final if i == "EXPOSE" for p in a.split()}
    cfg = yaml.safe_load(expand_defaults(IMAGE_CONFIG.read_text()))
    assert addr_port(cfg["listeners"][0]["address"]) in exposed
    assert addr_port(cfg["admin"]["address"]) in exposed


def test_containerfile_runtime_packages_cover_the_binary():
    """Every shared library of the built proxy comes from a package the
    runtime stage installs (or one of their dependencies, or libc6), and
    every package named exists in Debian here."""
    runtime_pkgs = set()
    for ins, arg in stages()[-1][1]:
        if ins == "RUN":
            runtime_pkgs.update(apt_installed_packages(arg))
    for p in ("libnghttp2-14", "libevent-2.1-7", "libevent-openssl-2.1-7",
              "libevent-pthreads-2.1-7", "libssl3", "libyaml-0-2", "libhttp-parser2.9",
              "libpcre2-8-0", "libsystemd0"):
        assert p in runtime_pkgs, f"runtime stage lacks {p}"
    assert not [p for p in runtime_pkgs if p.endswith("-dev")], "no -dev package at run time"
    if not (shutil.which("dpkg-query") and shutil.which("ldd") and shutil.which("dpkg")):
        pytest.skip("not a Debian system")
    # The names are Debian's: installed here, or known to apt.
    for p in sorted(runtime_pkgs):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
        if "install ok installed" in r.stdout:
            continue
        r = subprocess.run(["apt-cache", "policy", p], capture_output=True, text=True, timeout=20)
        assert re.search(r"Candidate: (?!\(none\))", r.stdout), f"{p}: not a Debian package here"
    allowed = set(runtime_pkgs) | {"libc6"}
    for p in runtime_pkgs:  # one level of Depends (libevent-core-2.1-7, ...)
        r = subprocess.run(["dpkg-query", "-W", "-f=${Depends}", p], capture_output=True, text=True)
        allowed |= {re.split(r"[\s(:]", d.strip())[0] for alt in r.stdout.split(",")
                    for d in alt.split("|") if d.strip()}
    exe = str(binary("switchyard"))
    ldd = subprocess.run(["ldd", exe], capture_output=True, text=True, timeout=20)
    assert ldd.returncode == 0, ldd.stderr
    path_of = {m[1]: m[2] for m in re.finditer(r"^\s*(\S+)\s+=>\s+(/\S+)", ldd.stdout, re.M)}
    # The libraries the binary itself names (DT_NEEDED); theirs come with
    # their packages' Depends. Without readelf: everything ldd lists.
    needed = list(path_of)
    if shutil.which("readelf"):
        dyn = subprocess.run(["readelf", "-d", exe], capture_output=True, text=True, timeout=20)
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn.stdout)
    # Not the sanitizer runtimes of the test build (nor what they pull in).
    sanitizer = r"lib(a|ub|l|t)san|libstdc\+\+|libgcc_s"
    libs = [path_of[n] for n in needed if n in path_of and not re.search(sanitizer, n)]
    owners = subprocess.run(["dpkg", "-S"] + [str(Path(p).resolve()) for p in libs] + libs,
                            capture_output=True, text=True, timeout=20).stdout
    by_lib = {}
    for line in owners.splitlines():
        pkg, _, path = line.partition(": ")
        by_lib.setdefault(Path(path).name, set()).update(
            x.strip().split(":")[0] for x in pkg.split(","))
    for lib in libs:
        pkgs = by_lib.get(Path(lib).name) or by_lib.get(Path(lib).resolve().name)
        assert pkgs, f"{lib}: owned by no package"
        assert pkgs & allowed, f"{lib} comes from {pkgs}, not installed in the runtime stage"


# ---------------------------------------------------------------------------
# systemd unit
# ---------------------------------------------------------------------------

def unit_settings():
    """{section: {key: [values]}} of the unit file."""
    out, section = {}, None
    for line in UNIT.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith(("#", ";")):
            continue
        if s.startswith("["):
            section = s.strip("[]")
            out.setdefault(section, {})
            continue
        k, _, v = s.partition("=")
        out[section].setdefault(k.strip(), []).append(v.strip())
    return out


def test_systemd_unit_settings():
    svc = unit_settings()["Service"]

    def one(k):
        assert k in svc, f"{k}= missing"
        return svc[k][-1]

    # sd_notify: READY=1 when the listeners accept (tests/integration/test_process.py)
    assert one("Type") == "notify"
    assert svc.get("NotifyAccess", ["main"])[-1] == "main"
    start = shlex.split(one("ExecStart"))
    assert start[0] == INSTALLED_BINARY
    assert start[start.index("-c") + 1] == "/etc/switchyard/switchyard.yaml"
    reloads = svc["ExecReload"]
    assert any(re.fullmatch(r"/(usr/)?bin/kill -HUP \$MAINPID", r) for r in reloads)
    # validated first, so that `systemctl reload` fails on a bad config
    assert shlex.split(reloads[0])[:2] == [INSTALLED_BINARY, "-t"], reloads
    assert one("KillSignal") == "SIGTERM"
    # Longer than the drain (drain_timeout defaults to 30s), so systemd does
    # not SIGKILL a proxy that is still letting exchanges finish.
    assert duration_s(one("TimeoutStopSec")) > 30
    assert one("Restart") == "on-failure"
    assert int(one("LimitNOFILE")) >= 65536
    assert one("DynamicUser") == "yes"
    assert one("ProtectSystem") == "strict"
    assert one("ProtectHome") in ("yes", "true", "read-only", "tmpfs")
    assert one("PrivateTmp") == "yes"
    assert one("NoNewPrivileges") == "yes"
    assert one("CapabilityBoundingSet") == "CAP_NET_BIND_SERVICE"
    assert one("AmbientCapabilities") == "CAP_NET_BIND_SERVICE"
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in svc["SystemCallFilter"][0].split()


def test_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    # Not a skip: scripts/deps.sh installs systemd, so CI runs this.
    assert analyze, "systemd-analyze is not installed (scripts/deps.sh installs systemd)"
    # verify wants every Exec* binary to exist: point them at the built one.
    real = str(binary("switchyard"))
    unit = tmp_path / "switchyard.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_BINARY, real))
    r = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True,
                       text=True, timeout=30)
    ours = [l for l in (r.stdout + r.stderr).splitlines() if "switchyard" in l]
    assert r.returncode == 0 and not ours, r.stdout + r.stderr


def test_built_with_sd_notify():
    """Type=notify needs a binary built with libsystemd (scripts/deps.sh
    installs libsystemd-dev; the Makefile finds it with pkg-config): one
    built without it would never say READY=1 and systemd would kill it."""
    r = run_switchyard(["--version"])
    assert r.returncode == 0, r.stderr
    assert re.match(r"^switchyard \S+ \(sd_notify\)$", r.stdout.strip()), r.stdout
    if shutil.which("readelf"):
        dyn = subprocess.run(["readelf", "-d", str(binary("switchyard"))], capture_output=True,
                             text=True, timeout=20).stdout
        assert "libsystemd.so.0" in dyn, "not linked with libsystemd"
