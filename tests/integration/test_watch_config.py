"""--watch-config: the proxy reloads when its config file changes, however it
is replaced: written in place, renamed over, or swapped the way a Kubernetes
ConfigMap volume does it (a "..data" symlink to a timestamped folder). A bad
file is refused and the old config keeps serving; a file whose bytes did not
change is not reloaded."""
import os
import time

from conftest import admin_metrics, free_ports, wait_for
from h1util import get


def config(port, admin, tb_addr, tag):
    return f"""\
listeners:
  - {{name: main, address: "127.0.0.1:{port}", url_map: m}}
admin: {{address: "127.0.0.1:{admin}"}}
url_maps:
  - name: m
    default_service: tb
    header_action:
      response_headers_to_add: [{{header_name: x-tag, header_value: "{tag}"}}]
backend_services:
  - name: tb
    endpoints: [{{address: "{tb_addr}"}}]
"""


def tag(port):
    r = get(port, "/x")
    assert r.status == 200, r
    return r.header("x-tag")


def reloads(admin):
    return admin_metrics(admin).get("switchyard_config_reloads_total")


def start_watching(proxy, testbed, layout):
    """Start a watching proxy whose config file is laid out by `layout(text)`
    (which writes the first version and returns the -c path)."""
    tb = testbed()
    port, admin = free_ports(2)
    make = lambda t: config(port, admin, tb.addr, t)
    path = layout(make("v1"))
    px = proxy(make("unused"), extra_args=("-c", path, "--watch-config"),
               expect_ports=[port, admin])
    assert wait_for(lambda: reloads(admin) is not None, 5)
    assert tag(port) == "v1"
    return px, port, admin, make


def start_plain(proxy, testbed, tmp_path):
    """A watching proxy whose config is a plain file in its own folder."""
    d = tmp_path / "etc"
    d.mkdir()
    path = d / "switchyard.yaml"

    def layout(text):
        path.write_text(text)
        return str(path)

    return d, path, start_watching(proxy, testbed, layout)


def test_rename_over_and_in_place_writes_reload(proxy, testbed, tmp_path):
    d, path, (px, port, admin, make) = start_plain(proxy, testbed, tmp_path)
    assert "watching" in px.stderr()
    # An editor's save: write a temporary file, rename it over the config.
    tmp = d / ".switchyard.yaml.swp"
    tmp.write_text(make("v2"))
    os.replace(tmp, path)
    assert wait_for(lambda: tag(port) == "v2", 5), px.stderr()
    # Written in place.
    path.write_text(make("v3"))
    assert wait_for(lambda: tag(port) == "v3", 5), px.stderr()
    assert reloads(admin) == 2
    # A file next to it changing is none of its business.
    (d / "other.yaml").write_text("x: 1\n")
    time.sleep(0.5)   # longer than the 200 ms settle time
    assert reloads(admin) == 2


def test_kubernetes_configmap_swap_reloads(proxy, testbed, tmp_path):
    """A ConfigMap volume: switchyard.yaml -> ..data/switchyard.yaml, and an
    update points ..data at a new folder in one rename."""
    d = tmp_path / "configmap"
    d.mkdir()

    def version_dir(name, text):
        v = d / name
        v.mkdir()
        (v / "switchyard.yaml").write_text(text)

    def swap(name):
        tmp_link = d / "..data_tmp"
        os.symlink(name, tmp_link)
        os.replace(tmp_link, d / "..data")

    def layout(text):
        version_dir("..2026_12_03_00_00_00.1", text)
        swap("..2026_12_03_00_00_00.1")
        os.symlink("..data/switchyard.yaml", d / "switchyard.yaml")
        return str(d / "switchyard.yaml")

    px, port, admin, make = start_watching(proxy, testbed, layout)
    version_dir("..2026_12_03_00_01_00.2", make("v2"))
    swap("..2026_12_03_00_01_00.2")
    assert wait_for(lambda: tag(port) == "v2", 5), px.stderr()
    assert reloads(admin) == 1


def test_bad_file_is_refused_and_same_bytes_do_not_reload(proxy, testbed, tmp_path):
    d, path, (px, port, admin, make) = start_plain(proxy, testbed, tmp_path)
    path.write_text(make("v1").replace("url_map: m", "url_map: nope"))
    assert wait_for(lambda: "reload refused" in px.stderr(), 5), px.stderr()
    assert "switchyard.yaml:2:" in px.stderr()   # FILE:LINE:COL of the error
    assert tag(port) == "v1"                     # the old config keeps serving
    assert admin_metrics(admin).get("switchyard_config_reload_failures_total") == 1
    # The same bytes again (a touch, or a ConfigMap resync): nothing to do.
    path.write_text(make("v1"))
    time.sleep(0.5)
    os.utime(path)
    time.sleep(0.5)
    assert reloads(admin) == 0
    assert tag(port) == "v1"
    path.write_text(make("v4"))
    assert wait_for(lambda: tag(port) == "v4", 5), px.stderr()
    assert reloads(admin) == 1
