"""What every host plugin carries besides its own adapter code.

Krita's and GIMP's bundled Pythons have neither msgpack nor websockets, so a
plugin ships the protocol package, the shared job client and pure-Python
copies of both libraries (their C speed-ups are optional and left out, so the
copies run on any CPython >= 3.10, the oldest a supported host bundles).

Layout inside a plugin's package folder:
    protocol/   the sans-IO protocol, unchanged
    client/     the blocking job client (imports `..protocol`), plus a file VERSION
                holding the project's version (read by client/version.py: there is
                no package metadata inside the host's Python), and, when given, daemon.json:
                the command that starts this installation's daemon (daemon_record.py)
    _vendor/    msgpack/ and websockets/; the plugin puts this folder first on sys.path
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
from pathlib import Path

from .daemon_record import StartCommand, check_record, write_record

DISTRIBUTION = "differential-inpaint"
VENDORED = ("msgpack", "websockets")
# vectors/: the protocol's golden test bytes, for hosts' test suites, not for the plugins.
_SKIP = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "*.so", "*.pyd", "*.c", "*.h", "*.pyi", "py.typed", "vectors"
)


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"cannot find the installed package '{module}' to copy into the plugin")
    return Path(next(iter(spec.submodule_search_locations)))


def write_payload(package_dir: Path, daemon: StartCommand | None = None) -> None:
    """Copy protocol/, client/ and _vendor/ into `package_dir` (replacing old copies),
    write client/VERSION from this installation's package metadata and, when given,
    client/daemon.json: how the plugin starts the daemon when none runs."""
    package_dir.mkdir(parents=True, exist_ok=True)
    sources = {
        "protocol": _package_dir("differential_inpaint.protocol"),
        "client": _package_dir("differential_inpaint.client"),
    }
    sources.update({f"_vendor/{name}": _package_dir(name) for name in VENDORED})
    for target, source in sources.items():
        dest = package_dir / target
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(source, dest, ignore=_SKIP)
    version = importlib.metadata.version(DISTRIBUTION)
    (package_dir / "client" / "VERSION").write_text(version + "\n", encoding="utf-8")
    if daemon is not None:
        write_record(package_dir / "client", daemon)


def check_payload(package_dir: Path) -> list[str]:
    """Problems with a written payload, as sentences; empty when it is complete."""
    problems = []
    for required in (
        "protocol/__init__.py",
        "protocol/messages.py",
        "client/__init__.py",
        "client/version.py",
        "client/VERSION",
        "_vendor/msgpack/fallback.py",
        "_vendor/websockets/sync/client.py",
    ):
        if not (package_dir / required).is_file():
            problems.append(f"{package_dir / required} is missing")
    compiled = [str(p) for p in (package_dir / "_vendor").rglob("*") if p.suffix in (".so", ".pyd")]
    if compiled:
        problems.append(f"compiled extensions would tie the plugin to one Python: {', '.join(compiled)}")
    return problems + check_record(package_dir / "client")
