#!/usr/bin/env python3
"""Proves that scripts/test.sh installs every Debian package the tests use.

A machine with packages installed by hand can hide one missing from the install list (it
happened: strongSwan's `openssl` plugin comes from libstrongswan-standard-plugins, which the
list lacked, and CI stayed green on a machine that had it). So this does not trust the
machine: it collects what the tests use from their sources - every program they start
(`require_commands(&[..])`, `Command::new("..")`, `ns.spawn("..")`, `.command("..")`,
`.exec("..")`, `.exec_ok("..")`, the desktop harness's PROGRAMS table), every strongSwan plugin
they load (the CHARON_*_PLUGINS constants) - plus the libraries and files listed in EXTRA
below, finds the Debian package that ships each one (`dpkg -S`), and fails, naming the package,
unless that package is in the install list or is pulled in by one that is (Depends /
Pre-Depends, not Recommends: the list installs with --no-install-recommends), or is Essential.

Usage: check-test-packages.py [--packages "p1 p2 ..."]  (default: APT_PACKAGES of test.sh)
Exit 0 when every need is covered; 1 with one line per uncovered need otherwise.
"""

import glob
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Where the tests (and the helpers they use) live.
TEST_SOURCES = [
    "tests/src",
    "tests/tests",
    "certs/tests",
    "client-core/tests",
    "client-gui/tests",
]

# Programs the binaries under test start themselves (the tests run them).
RUNTIME_PROGRAMS = ["ip"]

# Names that look like programs in the sources but are not started as such in tests,
# with the reason.
NOT_NEEDED = {
    # client-core calls resolvectl only when systemd-resolved runs; test namespaces use
    # resolv.conf.
    "resolvectl": "only used when systemd-resolved is running",
}

# What the tests load that is not a program on PATH: (kind, name, why).
#   kind "lib": a shared library found by ldconfig; "file": a path (glob).
EXTRA = [
    ("file", "/usr/lib/python3/dist-packages/pyatspi/__init__.py", "AT-SPI client of the GUI e2e"),
    ("file", "/usr/lib/x86_64-linux-gnu/dri/swrast_dri.so", "Mesa software GL for the GUI window"),
    ("file", "/usr/share/vulkan/icd.d/lvp_icd.*.json", "lavapipe: kittest snapshots render on it"),
    ("lib", "libvulkan.so.1", "Vulkan loader for the snapshots"),
    ("lib", "libEGL.so.1", "the GUI window"),
    ("lib", "libxkbcommon-x11.so.0", "the GUI window"),
    ("lib", "libXcursor.so.1", "the GUI window"),
    ("lib", "libXrandr.so.2", "the GUI window"),
    ("lib", "libXi.so.6", "the GUI window"),
    ("lib", "libX11-xcb.so.1", "the GUI window"),
    ("program", "x86_64-w64-mingw32-gcc", "the Windows cross-check builds ring's C parts"),
    ("program", "iperf3", "throughput through tunnels"),
]

STRONGSWAN_PLUGIN_DIR = "/usr/lib/ipsec/plugins"


def read_sources():
    for base in TEST_SOURCES:
        for path in glob.glob(os.path.join(ROOT, base, "**", "*.rs"), recursive=True):
            with open(path, encoding="utf-8") as f:
                yield os.path.relpath(path, ROOT), f.read()


PROGRAM_CALLS = re.compile(
    r'(?:Command::new|\.spawn|\.command|\.exec|\.exec_ok|run_ok|ns_exec)\(\s*"([A-Za-z0-9_./+-]+)"'
)
REQUIRE = re.compile(r"require_commands\(\s*&\[([^\]]*)\]", re.S)
PROGRAMS_TABLE = re.compile(r"pub const PROGRAMS[^=]*=\s*&\[(.*?)\];", re.S)
PLUGINS = re.compile(r'pub const CHARON\w*PLUGINS: &str = "((?:[^"\\]|\\\n)*)"', re.S)
STRING = re.compile(r'"([^"]+)"')


def collect_needs():
    """(kind, name, where) for everything the test sources use."""
    needs = {}
    for rel, text in read_sources():
        for m in PROGRAM_CALLS.finditer(text):
            needs.setdefault(("program", m.group(1)), rel)
        for m in REQUIRE.finditer(text):
            for s in STRING.findall(m.group(1)):
                needs.setdefault(("program", s), rel)
        for m in PROGRAMS_TABLE.finditer(text):
            # ("program", "package") pairs: the first string of each pair.
            for pair in re.findall(r'\(\s*"([^"]+)"\s*,\s*"[^"]+"\s*\)', m.group(1)):
                needs.setdefault(("program", pair), rel)
        for m in PLUGINS.finditer(text):
            for name in m.group(1).replace("\\\n", " ").split():
                needs.setdefault(("plugin", name), rel)
    for p in RUNTIME_PROGRAMS:
        needs.setdefault(("program", p), "gatehoused / gatehouse (runtime)")
    for kind, name, why in EXTRA:
        needs.setdefault((kind, name), why)
    return {k: v for k, v in needs.items() if not (k[0] == "program" and k[1] in NOT_NEEDED)}


def locate(kind, name):
    """Candidate paths of a need on this machine (empty if it is not here)."""
    if kind == "program":
        path = name if name.startswith("/") else shutil.which(name)
        if not path or not os.path.exists(path):
            return []
        cands = [path, os.path.realpath(path)]
    elif kind == "plugin":
        cands = [os.path.join(STRONGSWAN_PLUGIN_DIR, f"libstrongswan-{name}.so")]
    elif kind == "lib":
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
        cands = [line.split("=>")[-1].strip() for line in out.splitlines()
                 if line.strip().startswith(name + " ")]
        cands += [os.path.realpath(c) for c in cands]
    else:
        cands = glob.glob(name)
    found = [c for c in cands if os.path.exists(c)]
    # usrmerge: dpkg may know /sbin/ip where PATH finds /usr/sbin/ip, and the reverse.
    more = []
    for c in found:
        if c.startswith("/usr/") and c.split("/")[2] in ("bin", "sbin", "lib"):
            more.append(c[4:])
        elif c.split("/")[1] in ("bin", "sbin", "lib"):
            more.append("/usr" + c)
    return found + more


def owner(paths):
    for p in paths:
        r = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            # "pkg[:arch][, pkg2]: /path" (diversions print "diversion by ..." lines first).
            for line in r.stdout.splitlines():
                if line.startswith("diversion by"):
                    continue
                pkgs = line.rsplit(": ", 1)[0]
                return pkgs.split(",")[0].strip().split(":")[0]
    return None


def closure(packages):
    """The install list plus everything it depends on (no Recommends)."""
    r = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
         "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages],
        capture_output=True, text=True)
    names = set(packages)
    for line in r.stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        if ":" in line and line.split(":", 1)[0].strip() in ("Depends", "PreDepends", "|Depends", "|PreDepends"):
            name = line.split(":", 1)[1].strip()
        elif not line.startswith(("Depends", "PreDepends", "|", "Recommends", "Suggests")):
            name = line
        else:
            continue
        names.add(name.strip("<>").split(":")[0])
    return names


def essential(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Essential} ${Priority}", pkg],
                       capture_output=True, text=True)
    return r.returncode == 0 and (r.stdout.startswith("yes") or r.stdout.endswith("required"))


def install_list():
    text = open(os.path.join(ROOT, "scripts", "test.sh"), encoding="utf-8").read()
    # Comments may hold parentheses: drop them before looking for the list's end.
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    m = re.search(r"APT_PACKAGES=\(([^)]*)\)", code)
    if not m:
        sys.exit("scripts/test.sh has no APT_PACKAGES=( ... ) list")
    return m.group(1).split()


def main():
    args = sys.argv[1:]
    if args[:1] == ["--packages"] and len(args) == 2:
        packages = args[1].split()
    elif not args:
        packages = install_list()
    else:
        sys.exit(__doc__)
    covered = closure(packages)
    needs = collect_needs()
    problems = []
    for (kind, name), where in sorted(needs.items()):
        paths = locate(kind, name)
        if not paths:
            problems.append(f"{kind} {name} (used by {where}) is not on this machine: find the "
                            f"Debian package that ships it and add it to APT_PACKAGES in scripts/test.sh")
            continue
        pkg = owner(paths)
        if pkg is None:
            problems.append(f"{kind} {name} ({paths[0]}, used by {where}) belongs to no Debian "
                            f"package: the tests must not depend on hand-installed files")
            continue
        if pkg in covered or essential(pkg):
            continue
        problems.append(f"package {pkg} is not in APT_PACKAGES of scripts/test.sh, but the tests "
                        f"need it: {kind} {name} ({paths[0]}, used by {where})")
    if problems:
        for p in problems:
            print(f"MISSING: {p}")
        sys.exit(1)
    print(f"every one of {len(needs)} programs, plugins and libraries the tests use comes from "
          f"the {len(packages)} listed packages or their dependencies")


if __name__ == "__main__":
    main()
