"""Runs inside real GIMP 3 (gimp-console's python-fu-eval), not under pytest: the
plug-in, installed with a start command and no daemon running, starts the daemon.

Reads the JSON spec at SPEC (set by the -b code): out, port, bad_port, bad_record,
plugin_dir. Writes one verdict per scenario to `out` as it goes; nothing here
asserts (test_autostart.py judges). The scenarios run in order and depend on it:
default, first, second, concurrent, bad, remote.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
import traceback
from typing import Any

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

PROCEDURE = "python-fu-differential-inpaint"
with open(SPEC) as _f:  # noqa: F821 - SPEC is set by the -b code
    spec = json.load(_f)
for _path in (spec["plugin_dir"] + "/differential_inpaint_gimp/_vendor", spec["plugin_dir"]):
    if _path not in sys.path:
        sys.path.insert(0, _path)
from differential_inpaint_gimp import gimp_io  # noqa: E402
from differential_inpaint_gimp.client import Settings, flow, launcher  # noqa: E402

SERVER = f"ws://127.0.0.1:{spec['port']}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pixels(layer: Gimp.Layer) -> str:
    rect = Gegl.Rectangle.new(0, 0, layer.get_width(), layer.get_height())
    return sha(bytes(layer.get_buffer().get(rect, 1.0, "R'G'B'A u8", Gegl.AbyssPolicy.NONE)))


def image_with_selection() -> tuple[Gimp.Image, Gimp.Layer]:
    image = Gimp.Image.new(160, 120, Gimp.ImageBaseType.RGB)
    layer = Gimp.Layer.new(image, "source", 160, 120, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    data = bytes((x * 7 + y * 3) % 256 for y in range(120) for x in range(160) for _ in range(4))
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, 160, 120), "R'G'B'A u8", data)
    buffer.flush()
    image.select_ellipse(Gimp.ChannelOps.REPLACE, 40, 30, 60, 50)
    return image, layer


def names(image: Gimp.Image) -> list[str]:
    return [layer.get_name() for layer in image.get_layers()]


def run_procedure(args: dict[str, Any]) -> dict[str, Any]:
    """One NONINTERACTIVE run of the installed plug-in (its own process, as from the menu)."""
    image, layer = image_with_selection()
    before, drawable = names(image), pixels(layer)
    proc = Gimp.get_pdb().lookup_procedure(PROCEDURE)
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    for name, value in args.items():
        config.set_property(name, value)
    started = time.monotonic()
    result = proc.run(config)
    return {
        "seconds": round(time.monotonic() - started, 2),
        "status": result.index(0).value_nick,
        "message": result.index(1) if result.length() > 1 else None,
        "layers_before": before,
        "layers_after": names(image),
        "drawable_unchanged": pixels(layer) == drawable,
    }


def starts_logged(port: int) -> int:
    try:
        with open(launcher.log_path(port), encoding="utf-8", errors="replace") as f:
            return f.read().count(launcher.HEADER)
    except OSError:
        return 0


def daemon_facts() -> dict[str, Any]:
    state = launcher.state(SERVER)
    pid = launcher.started_pid(SERVER)
    return {
        "state": list(state),
        "pid": pid,
        "detached": pid is not None and os.getsid(pid) == pid != os.getsid(0),
        "starts_logged": starts_logged(spec["port"]),
    }


def default() -> dict[str, Any]:
    proc = Gimp.get_pdb().lookup_procedure(PROCEDURE)
    found = {arg.name: arg.get_default_value() for arg in proc.get_arguments() if arg.name == "server-url"}
    return {"server_url_default": found.get("server-url"), "state_before": list(launcher.state(SERVER))}


def first() -> dict[str, Any]:
    # server-url left at its default: the address the record names.
    return {**run_procedure({"prompt": "started on demand", "steps": 2}), **daemon_facts()}


def second() -> dict[str, Any]:
    return {**run_procedure({"prompt": "reused", "steps": 2, "server-url": SERVER}), **daemon_facts()}


def concurrent() -> dict[str, Any]:
    """Two first runs at once (the plug-in's job code on two threads of this process)."""
    verdict: dict[str, Any] = {
        "stopped": launcher.stop(SERVER),
        "state_after_stop": list(launcher.state(SERVER)),
    }
    jobs = []
    for i in range(2):
        image, layer = image_with_selection()
        chosen = Settings.from_values({"prompt": f"concurrent {i}", "steps": 2, "server": SERVER})
        jobs.append((image, flow.prepare(gimp_io.GimpDocument(image, layer), chosen), chosen))
    outcomes: dict[int, Any] = {}

    def follow(i: int) -> None:
        _image, job, chosen = jobs[i]
        try:
            outcomes[i] = flow.follow(job, chosen, client="autostart-test")
        except Exception as exc:
            outcomes[i] = f"{exc.__class__.__name__}: {getattr(exc, 'message', exc)}"

    threads = [threading.Thread(target=follow, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    verdict["outcomes"] = []
    for i, (image, job, _chosen) in enumerate(jobs):
        outcome = outcomes.get(i)
        if isinstance(outcome, str) or outcome is None:
            verdict["outcomes"].append(outcome or "no outcome")
            continue
        flow.finish(job, outcome)
        verdict["outcomes"].append(names(image))
    return {**verdict, **daemon_facts()}


def bad() -> dict[str, Any]:
    """A start command that fails: as `install-plugin gimp --serve-args "--model nope:missing
    --port Q"` would record it."""
    record = os.path.join(spec["plugin_dir"], "differential_inpaint_gimp", "client", launcher.RECORD_NAME)
    saved = record + ".good"
    shutil.copyfile(record, saved)
    shutil.copyfile(spec["bad_record"], record)
    try:
        bad_server = f"ws://127.0.0.1:{spec['bad_port']}"
        verdict = run_procedure({"prompt": "never", "server-url": bad_server})
        verdict["bad_pid"] = launcher.started_pid(bad_server)
        return verdict
    finally:
        shutil.move(saved, record)


def remote() -> dict[str, Any]:
    runtime = str(launcher.runtime_dir())
    before = sorted(os.listdir(runtime)) if os.path.isdir(runtime) else []
    verdict = run_procedure({"prompt": "remote", "server-url": f"ws://192.0.2.1:{spec['port']}"})
    verdict["runtime_unchanged"] = (sorted(os.listdir(runtime)) if os.path.isdir(runtime) else []) == before
    return verdict


def main() -> None:
    verdicts: dict[str, Any] = {}
    for scenario in (default, first, second, concurrent, bad, remote):
        try:
            verdicts[scenario.__name__] = scenario()
        except Exception:
            verdicts[scenario.__name__] = {"crashed": traceback.format_exc()}
        with open(spec["out"], "w") as f:
            json.dump(verdicts, f, indent=1)


main()
