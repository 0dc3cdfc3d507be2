"""Build the TA-dlpfwd add-on package: ``python packaging/splunk/build.py [--out dist]``.

1. Copies ``packaging/splunk/TA-dlpfwd`` to a build directory.
2. Vendors dlpfwd and its runtime dependencies (and splunk-sdk) into ``bin/lib`` with
   ``pip install --target`` -- for the heavy forwarder's Python: pass ``--python-version`` and
   ``--platform`` (e.g. ``3.11`` and ``manylinux2014_x86_64``) when building on another machine,
   because orjson, msgspec, cryptography and isal are binary wheels.
3. Stamps dlpfwd's version into ``default/app.conf`` and writes ``TA-dlpfwd-<version>.tgz``.

Vendored code is never committed: ``bin/lib`` exists only in the build output.

The vendored package is meant for heavy forwarders of Splunk Enterprise: its binary wheels are
for one platform, and it carries dlpfwd's syslog sink (UDP), both of which Splunk Cloud's
AppInspect refuses. For Splunk Cloud search tiers use ``--skip-vendor`` (knowledge objects
only), which passes AppInspect with no failures.
``--skip-vendor`` packages the add-on alone (layout checks, dashboards-only installs).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
APP = "TA-dlpfwd"
EXCLUDE = ("__pycache__", "*.pyc", "local", "lib")


def version() -> str:
    text = (ROOT / "forwarder" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not match:
        raise SystemExit("cannot read forwarder.__version__")
    return match.group(1)


def vendor(lib: Path, python_version: str, platform: str) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-compile",  # AppInspect fails packages with .pyc files
        "--target",
        str(lib),
        str(ROOT),
        "splunk-sdk>=2.0",
    ]
    if python_version or platform:
        command += ["--only-binary=:all:"]
        if python_version:
            command += ["--python-version", python_version]
        if platform:
            command += ["--platform", platform]
    subprocess.run(command, check=True)
    for cache in list(lib.rglob("__pycache__")):
        shutil.rmtree(cache)
    for compiled in lib.rglob("*.py[co]"):
        compiled.unlink()


def build(out: Path, skip_vendor: bool = False, python_version: str = "", platform: str = "") -> Path:
    """Build the package into ``out``; returns the .tgz path."""
    v = version()
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / APP
        shutil.copytree(HERE / APP, app, ignore=shutil.ignore_patterns(*EXCLUDE))
        conf = app / "default" / "app.conf"
        conf.write_text(re.sub(r"(?m)^version = .*$", f"version = {v}", conf.read_text(encoding="utf-8")))
        if not skip_vendor:
            vendor(app / "bin" / "lib", python_version, platform)
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"{APP}-{v}.tgz"
        with tarfile.open(target, "w:gz") as tar:
            tar.add(app, arcname=APP)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "dist"), help="output directory (default: dist/)")
    parser.add_argument("--skip-vendor", action="store_true", help="do not vendor dlpfwd into bin/lib")
    parser.add_argument("--python-version", default="", help="target Python for binary wheels, e.g. 3.11")
    parser.add_argument("--platform", default="", help="target platform tag, e.g. manylinux2014_x86_64")
    args = parser.parse_args(argv)
    print(build(Path(args.out), args.skip_vendor, args.python_version, args.platform))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
