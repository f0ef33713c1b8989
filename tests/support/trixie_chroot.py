"""The Debian trixie chroot holding the real hosts the plugins are tested in:
GIMP 3.0 and Krita 5.2, both on Python 3.13. Built once and reused.

Debian 12 has only GIMP 2.10 (no Python plug-ins) and Krita 5.1; trixie, reachable
through the same Debian mirror, has GIMP 3.0 and Krita 5.2. The chroot lives
outside the repository (``$DI_TRIXIE_CHROOT``, default
``/var/cache/differential-inpaint/trixie``) and is built in a ``.partial``
folder that is renamed only after GIMP runs, so a complete root is one that
exists; a complete root missing packages added to PACKAGES since gets them
installed, not rebuilt.

Only the standard library: ``.ci/run`` calls this with the system python3
before the venv exists::

    python3 tests/support/trixie_chroot.py ensure      # build or reuse
    python3 tests/support/trixie_chroot.py run -- gimp-console-3.0 --version
    python3 tests/support/trixie_chroot.py cleanup     # undo stray mounts

Every command that runs inside gets /proc, /sys, /dev (+ /dev/pts, /dev/shm)
bind-mounted for its duration only, and holds the root's lock meanwhile (one
command at a time); the mounts are undone in a ``finally`` (lazy unmount as the
fallback), and stale ones left by a killed run are undone before the next.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

DEFAULT_ROOT = Path("/var/cache/differential-inpaint/trixie")
SUITE = "trixie"
# xvfb: the plug-in's GimpUi dialog needs an X display (GIMP itself does not).
# python3-pyqt5: Krita's Python plugins need it, and it is only a Recommends of krita.
PACKAGES = ["gimp", "xvfb", "xauth", "krita", "python3-pyqt5"]
HOSTS = ["gimp", "krita"]
# Written inside the root once the packages are installed and GIMP starts:
# JSON {"packages": [...], "versions": {"gimp": "<version>", "krita": "<version>"}}.
MARKER = ".differential-inpaint-complete"
# Order matters: parents before children when mounting, reverse to unmount.
BINDS = ["proc", "sys", "dev", "dev/pts", "dev/shm"]
CHROOT_ENV = {
    "HOME": "/root",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}


class ChrootError(RuntimeError):
    pass


def root() -> Path:
    return Path(os.environ.get("DI_TRIXIE_CHROOT") or DEFAULT_ROOT)


def is_complete(path: Path | None = None) -> bool:
    return ((path or root()) / MARKER).is_file()


def installed_packages(path: Path) -> set[str]:
    try:
        return set(json.loads((path / MARKER).read_text())["packages"])
    except (OSError, ValueError, KeyError, TypeError):
        return {"gimp"}  # a marker from before the list was recorded


def _write_marker(path: Path, packages: Sequence[str], versions: dict[str, str]) -> None:
    marker = {"packages": sorted(packages), "versions": versions}
    (path / MARKER).write_text(json.dumps(marker) + "\n")


def ready(package: str) -> tuple[bool, str]:
    """Whether tests can run `package` (a host: gimp, krita) inside the chroot here, and why not."""
    if os.geteuid() != 0:
        return False, "the trixie chroot (real GIMP 3 and Krita 5.2) needs root"
    if not is_complete() or package not in installed_packages(root()):
        return False, (
            f"no trixie chroot with {package} at {root()}; build it with "
            "`python3 tests/support/trixie_chroot.py ensure` (about two minutes)"
        )
    return True, ""


def can_build() -> tuple[bool, str]:
    """Whether this machine could build (or use) the chroot: root + debootstrap."""
    if os.geteuid() != 0:
        return False, "building and entering the trixie chroot needs root"
    if shutil.which("debootstrap") is None and not is_complete():
        return False, "debootstrap is not installed (apt-get install -y debootstrap)"
    return True, ""


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's own apt uses (no hard-coded host)."""
    if os.environ.get("DI_DEBIAN_MIRROR"):
        return os.environ["DI_DEBIAN_MIRROR"]
    sources = sorted((apt_dir / "sources.list.d").glob("*.sources"))
    for path in sources:
        for stanza in path.read_text().split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and "security" not in suites.group(1):
                return uris.group(1)
    lists = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and "security" not in m.group(2):
                return m.group(1)
    return "http://deb.debian.org/debian"


# --- mounts -----------------------------------------------------------------


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first."""
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target == prefix or target.startswith(prefix + "/"):
            found.append(target)
    return sorted(set(found), key=len, reverse=True)


def unmount_all(path: Path) -> None:
    """Undo every mount below ``path``; lazily if a busy one refuses."""
    for target in _mounts_under(path):
        if subprocess.run(["umount", target], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", target], capture_output=True)
    left = _mounts_under(path)
    if left:
        raise ChrootError(f"could not unmount {left}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # One user of a root at a time: mounts and builds must not interleave.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _mounted(path: Path) -> Iterator[None]:
    unmount_all(path)  # stale mounts from a run that was killed
    try:
        for name in BINDS:
            source, target = Path("/") / name, path / name
            if not source.is_dir():
                continue
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
            # Keep the host's sub-mounts from propagating in (or out).
            subprocess.run(["mount", "--make-private", str(target)], capture_output=True)
        yield
    finally:
        unmount_all(path)


def _chroot(
    path: Path,
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    capture: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run argv in the (already mounted) root; kill its whole process group on timeout."""
    proc = subprocess.Popen(
        ["chroot", str(path), *argv],
        env={**CHROOT_ENV, **(env or {})},
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
        text=True,
        errors="replace",  # a host's stray non-UTF-8 output must not lose the rest
        start_new_session=True,  # its own group, so GIMP's plug-in children die with it
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    # Plug-in processes that outlived gimp would keep /dev busy.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out or "", "")


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    capture: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command inside the complete chroot with the binds mounted for its duration."""
    path = root()
    if not is_complete(path):
        raise ChrootError(f"no complete trixie chroot at {path}; run `trixie_chroot.py ensure` first")
    with _locked(path), _mounted(path):
        return _chroot(path, argv, env=env, timeout=timeout, capture=capture)


# --- build -------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"[trixie-chroot] {message}", file=sys.stderr, flush=True)


def _install(path: Path, packages: Sequence[str], quiet: bool) -> dict[str, str]:
    """apt-get install `packages` inside `path`; returns the hosts' package versions."""
    if Path("/etc/resolv.conf").is_file():  # apt inside needs DNS
        shutil.copyfile("/etc/resolv.conf", path / "etc/resolv.conf")
    with _mounted(path):
        quiet_apt = ["-qq"] if quiet else ["-q"]
        for argv in (
            ["apt-get", *quiet_apt, "update"],
            ["apt-get", *quiet_apt, "install", "-y", "--no-install-recommends", *packages],
            ["apt-get", "clean"],
        ):
            result = _chroot(path, argv, capture=quiet)
            if result.returncode != 0:
                raise ChrootError(f"{' '.join(argv)} failed:\n{result.stdout}")
        # The package lists are 100+ MB and only needed while installing.
        subprocess.run(["find", str(path / "var/lib/apt/lists"), "-type", "f", "-delete"])
        check = _chroot(path, ["gimp-console-3.0", "--version"], capture=True, timeout=120)
        # Krita is started by its own tests (a start costs seconds); dpkg says what is there.
        query = _chroot(path, ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *HOSTS], capture=True)
    if check.returncode != 0 or "3." not in check.stdout:
        raise ChrootError(f"gimp-console-3.0 does not start:\n{check.stdout}")
    versions = dict(line.split(" ", 1) for line in query.stdout.splitlines() if " " in line)
    missing = [host for host in HOSTS if host not in versions]
    if query.returncode != 0 or missing:
        raise ChrootError(f"not installed: {missing}\n{query.stdout}")
    return versions


def ensure(*, quiet: bool = False) -> Path:
    """Return a complete chroot, building it first if there is none."""
    path = root()
    with _locked(path):
        if is_complete(path):
            unmount_all(path)
            missing = sorted(set(PACKAGES) - installed_packages(path))
            if missing:  # a root built before PACKAGES grew: add, do not rebuild
                _log(f"adding {' '.join(missing)} to {path}")
                versions = _install(path, missing, quiet)
                _write_marker(path, sorted(installed_packages(path) | set(PACKAGES)), versions)
            return path
        if shutil.which("debootstrap") is None:
            raise ChrootError("debootstrap is not installed: apt-get install -y debootstrap")
        partial = path.with_name(path.name + ".partial")
        if partial.exists():
            unmount_all(partial)
            # --one-file-system: never follow into a mount that survived.
            subprocess.run(["rm", "-rf", "--one-file-system", str(partial)], check=True)
        mirror = debian_mirror()
        started = time.monotonic()
        _log(f"debootstrap {SUITE} from {mirror} into {partial}")
        # quiet: debootstrap's output is kept and shown only if it fails.
        boot = subprocess.run(
            ["debootstrap", "--variant=minbase", SUITE, str(partial), mirror],
            stdout=subprocess.PIPE if quiet else None,
            stderr=subprocess.STDOUT if quiet else None,
            text=True,
        )
        if boot.returncode != 0:
            raise ChrootError(f"debootstrap failed (exit {boot.returncode}):\n{boot.stdout or ''}")
        # No daemons may start inside the chroot while packages install.
        policy = partial / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        _log(f"installing {' '.join(PACKAGES)} ({time.monotonic() - started:.0f} s so far)")
        versions = _install(partial, PACKAGES, quiet)
        _write_marker(partial, PACKAGES, versions)
        if path.exists():  # an incomplete root of an older layout
            unmount_all(path)
            subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)
        partial.rename(path)
        _log(f"ready in {time.monotonic() - started:.0f} s: {versions}")
        return path


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ensure_parser = sub.add_parser("ensure", help="build the chroot unless a complete one exists")
    ensure_parser.add_argument("--quiet", action="store_true", help="only errors and a summary")
    sub.add_parser("cleanup", help="unmount anything left mounted inside the chroot")
    run_parser = sub.add_parser("run", help="run a command inside (binds mounted meanwhile)")
    run_parser.add_argument("argv", nargs=argparse.REMAINDER)
    opts = parser.parse_args(args)
    if opts.command == "ensure":
        print(ensure(quiet=opts.quiet))
    elif opts.command == "cleanup":
        unmount_all(root())
        unmount_all(root().with_name(root().name + ".partial"))
    else:
        argv = opts.argv[1:] if opts.argv[:1] == ["--"] else opts.argv
        return run(argv, capture=False).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
