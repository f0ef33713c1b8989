"""`differential-inpaint serve`: start the daemon the Krita and GIMP plugins talk to.

Prints `Differential Inpaint daemon listening on ws://HOST:PORT` (flushed; test
harnesses and scripts read the port from it, see tests/support/daemon.py)
after the model list. SIGINT/SIGTERM stop it cleanly: the running job is
cancelled, its client told, connections closed, exit status 0.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...protocol import DEFAULT_PORT
from ..engine.cli_addons import add_addon_dir_arguments
from ..engine.cli_control import add_controlnet_dir_argument
from ..engine.cli_run import add_depth_model_argument, add_model_part_arguments, add_offload_argument

LISTENING_PREFIX = "Differential Inpaint daemon listening on ws://"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; any other "
        "address requires the token)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one and prints it)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="SPEC",
        help="a model to offer: a name from `differential-inpaint models`, a checkpoint file or "
        "a diffusers folder; repeat for more; the first is the default",
    )
    parser.add_argument(
        "--model-dir",
        action="append",
        default=[],
        metavar="DIR",
        type=Path,
        help="a folder of checkpoints to offer (repeatable), e.g. ComfyUI's models/checkpoints",
    )
    add_model_part_arguments(parser)
    add_depth_model_argument(parser)
    add_addon_dir_arguments(parser)
    add_controlnet_dir_argument(parser)
    add_offload_argument(parser)
    parser.add_argument(
        "--device",
        action="append",
        default=[],
        help="cuda, cuda:1, mps or cpu (default: the best found); repeat for one worker per device, "
        "each with its own models loaded, or 'all' for every CUDA GPU",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="run the jobs on a Ray cluster: its head's HEAD:PORT, or 'auto' for the one this machine "
        "belongs to; one worker per GPU it offers (needs pip install 'differential-inpaint[cluster]')",
    )
    parser.add_argument(
        "--workers",
        type=_at_least_one,
        default=None,
        metavar="N",
        help="with --ray: run N workers (default: one per GPU of the cluster; without GPUs, one per "
        "node on one CPU core each)",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow connections from this browser origin, e.g. http://localhost:3000 "
        "(repeatable; by default every browser origin is refused)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="where the token is kept (created if missing); giving it requires the token even "
        "on loopback (default: <config dir>/differential-inpaint/token, used off loopback)",
    )
    parser.add_argument(
        "--preview-interval",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="at most one preview per job this often (default 0.5; 0 = every step the client keeps up with)",
    )
    parser.add_argument(
        "--max-connections-per-address",
        type=_at_least_one,
        default=32,
        metavar="N",
        help="open connections from one client address (every local program counts as "
        "127.0.0.1); more are refused with HTTP 503 (default 32)",
    )
    parser.add_argument(
        "--max-connections",
        type=_at_least_one,
        default=256,
        metavar="N",
        help="open connections from all clients together (default 256)",
    )
    parser.add_argument(
        "--message-timeout",
        type=_positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="a request must arrive whole within this time of its first bytes, else its "
        "connection is closed (default 60: the largest request at ~37 Mbit/s; raise it for "
        "clients on a slow network)",
    )
    parser.add_argument(
        "--idle-exit",
        type=_seconds_or_zero,
        default=0.0,
        metavar="SECONDS",
        help="stop by itself (as on SIGTERM, exit status 0) once no client has been connected and "
        "no job queued or running for this long; a connected client keeps it running, busy or not "
        "(default 0 = never; install-plugin records 1800 for the daemon a plugin starts)",
    )
    parser.add_argument(
        "--max-batch",
        type=_at_least_one,
        default=None,
        metavar="N",
        help="at most N results of one job (variations, a strength fan) sample together on a GPU "
        "(default: as many as its free memory holds; the CPU always runs them one at a time)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log debug details")


def _number(kind: type, lo: float, lo_open: bool, words: str) -> Callable[[str], Any]:
    """An argparse type: a finite `kind` above (or at least) `lo`, else `words` in the error."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not (value > lo if lo_open else value >= lo) or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {words}, not '{text}'")
        return value

    return parse


_at_least_one = _number(int, 1, False, "a whole number, 1 or more")
_positive_seconds = _number(float, 0.0, True, "a number of seconds above 0")
_seconds_or_zero = _number(float, 0.0, False, "a number of seconds, 0 or more")


def needs_token(host: str, token_file: Path | None) -> bool:
    """Off loopback anyone on the network can connect; an explicit token file opts in anywhere."""
    from .security import is_loopback_address

    return token_file is not None or not is_loopback_address(host)


def _say(text: str = "") -> None:
    print(text, flush=True)


def listen_error(host: str, port: int, exc: OSError) -> str:
    """The one start-up line for a socket that cannot be bound, with what to do about it."""
    # asyncio's bind error repeats the address in its text; the errno says it all (a failed
    # name lookup's negative code does not: its own text does).
    code = exc.errno or 0
    reason = os.strerror(code) if code > 0 else (exc.strerror or str(exc))
    line = f"error: cannot listen on {host}:{port}: {reason}"
    if exc.errno == errno.EADDRINUSE:
        advice = "Is another daemon already running? Stop it, or pick another port with --port."
    elif exc.errno == errno.EACCES:
        advice = "Ports below 1024 need administrator rights; pick another port with --port."
    elif exc.errno == errno.EADDRNOTAVAIL:
        advice = "That address is not one of this machine's; check --host."
    else:
        advice = "Check --host and --port."
    return f"{line}. {advice}"


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:
        # websockets logs every refused handshake and bad frame at INFO with tracebacks.
        logging.getLogger("websockets").setLevel(logging.WARNING)
    if not 0 <= args.port <= 65535:
        _say(f"error: --port must be 0-65535, not {args.port}")
        return 2
    if args.preview_interval < 0:
        _say("error: --preview-interval must be 0 or more")
        return 2

    from .security import TokenError, default_token_path, load_or_create_token

    token, created = None, False
    token_path = args.token_file or default_token_path()
    if needs_token(args.host, args.token_file):
        try:
            token, created = load_or_create_token(token_path)
        except TokenError as exc:
            _say(f"error: {exc}")
            return 2
    import asyncio

    try:
        return asyncio.run(_main(args, token, token_path if token else None, created))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return 130


def _engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Engine's arguments but the device: the same for the daemon and each worker."""
    return {
        "model_dirs": tuple(args.model_dir),
        "text_encoders": tuple(args.text_encoder),
        "vae": args.vae,
        "default_model": (args.model or [None])[0],
        "max_batch": args.max_batch,
        "offload": args.offload,
        "depth_model": args.depth_model,
        "depth_model_paths": False,  # a client names the depth models found, never a path
        "lora_dirs": tuple(args.lora_dir),
        "lora_paths": False,  # so are LoRAs and IP-Adapters
        "ip_adapter_dirs": tuple(args.ip_adapter_dir),
        "ip_adapter_paths": False,
        "controlnet_dirs": tuple(args.controlnet_dir),
        "controlnet_paths": False,  # likewise the ControlNets
        "part_paths": False,  # and the text encoders and VAEs of FLUX.1 / SD3 single files
    }


def _load_engine(args: argparse.Namespace, device: str | None = None):  # noqa: ANN202 - the engine's own types
    """The daemon's engine: it runs the jobs on its one device, or (given device "cpu" while
    workers run them) only names the models and schedulers, loading none."""
    from ..engine import Engine

    runs_jobs = device is None
    if device is None and args.device:
        device = args.device[0]
    engine = Engine(device=device, **_engine_options(args))
    if args.depth_model:
        # A --depth-model that is not one stops the start; loaded now (by the engine that
        # runs the jobs), the first depth job finds it ready.
        if runs_jobs:
            engine.depth_models.load(None)
        else:
            engine.depth_models.resolve(None)
    return engine


def _devices(args: argparse.Namespace) -> list[str]:
    """The --device list, 'all' made every CUDA GPU; EngineError when it cannot be."""
    from ..engine.errors import EngineError

    if "all" not in args.device:
        return list(args.device)
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not count:
        raise EngineError("--device all found no CUDA GPU; name the device instead (cpu, mps)")
    return [f"cuda:{index}" for index in range(count)] + [d for d in args.device if d != "all"]


def _supervisor(args: argparse.Namespace, devices: list[str]) -> Any:
    """What starts the workers when they are not one engine of this process: the devices'
    processes, or the cluster's actors (ClusterError); None for the one-device daemon."""
    from .workers import ProcessWorker, WorkerSupervisor, local_host_options

    host = {"models": tuple(args.model), "preview_interval": args.preview_interval}
    if args.ray:
        from .cluster import connect

        options = {"engine_options": _engine_options(args), "torch_threads": None, **host}
        return connect(args.ray, options, args.workers).supervisor()
    if len(devices) < 2:
        return None
    names = [
        d if devices.count(d) == 1 else f"{d}#{devices[: i + 1].count(d)}" for i, d in enumerate(devices)
    ]

    async def start(slot: int) -> Any:
        options = local_host_options(devices[slot], _engine_options(args), devices, **host)
        return await ProcessWorker.start(names[slot], options)

    async def slots() -> int:
        return len(devices)

    return WorkerSupervisor(start, slots)


def _print_models(catalog) -> None:  # noqa: ANN001
    _say("Models offered:")
    for model in catalog.models:
        mark = "  (default)" if model.name == catalog.default else ""
        _say(f"  {model.name}  [{model.family}]{mark}")
    for title, addons in (("LoRAs", catalog.loras), ("IP-Adapters", catalog.ip_adapters)):
        if addons:
            _say(f"{title} offered: " + ", ".join(f"{a.name} [{a.family}]" for a in addons))
    if catalog.controlnets:
        _say("ControlNets offered: " + ", ".join(f"{c.name} [{c.family}]" for c in catalog.controlnets))
    for title, parts in (("Text encoders", catalog.text_encoders), ("VAEs", catalog.vaes)):
        if parts:
            _say(
                f"{title} offered (FLUX.1 / SD3 single files): "
                + ", ".join(f"{p.name} [{p.role}]" for p in parts)
            )
    if catalog.only_builtin:
        _say(
            "No checkpoint was found, so only the built-in tiny test models are offered: they have "
            "random weights and paint noise, for testing only. To paint for real, add a Stable "
            "Diffusion 1.5 or SDXL checkpoint: --model /path/to/model.safetensors, or "
            "--model-dir /path/to/ComfyUI/models/checkpoints (repeatable)."
        )


async def _main(args: argparse.Namespace, token: str | None, token_path: Path | None, created: bool) -> int:
    import asyncio
    import signal

    from ..engine.errors import EngineError
    from .models import build_catalog
    from .server import DaemonServer, ServerConfig, serve_until

    log = logging.getLogger("differential_inpaint.daemon")
    from .cluster import ClusterError
    from .workers import WorkerStartError

    if args.ray and args.device:
        _say("error: --ray runs the jobs on the cluster's GPUs: leave out --device")
        return 2
    if args.workers and not args.ray:
        _say("error: --workers is for --ray; on this machine, give one --device per worker")
        return 2
    try:
        devices = _devices(args)
        supervisor = _supervisor(args, devices)
        # With workers elsewhere, the daemon's own engine only lists models: on the CPU.
        device = "cpu" if supervisor is not None else None
        engine = await asyncio.to_thread(_load_engine, args, device)
        catalog = await asyncio.to_thread(build_catalog, engine, args.model)
    except (EngineError, ClusterError) as exc:
        _say(f"error: {exc}")
        return 2
    if not catalog.models:
        _say("error: no model to offer; give one with --model or --model-dir")
        return 2
    config = ServerConfig(
        host=args.host,
        port=args.port,
        allowed_origins=tuple(args.allow_origin),
        token=token,
        preview_interval=args.preview_interval,
        message_timeout=args.message_timeout,
        max_connections_per_address=args.max_connections_per_address,
        max_connections=args.max_connections,
        idle_exit=args.idle_exit,
    )
    server = DaemonServer(engine, catalog, config, supervisor=supervisor)
    if supervisor is not None:
        _say("Starting the workers...")
    try:
        port = await server.start()
    except WorkerStartError as exc:
        _say(f"error: {exc}")
        return 2
    except OSError as exc:
        _say(listen_error(args.host, args.port, exc))
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stop_count = 0

    def request_stop(signum: int) -> None:
        nonlocal stop_count
        stop_count += 1
        if stop_count > 1:
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            import os

            os._exit(1)
        log.info("%s received: stopping (again to force)", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        # Windows has no add_signal_handler: Ctrl-C raises KeyboardInterrupt there.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, request_stop, signum)

    _print_models(catalog)
    if args.depth_model:
        _say(f"Depth model (for jobs that name none): {engine.depth_models.resolve(None).name}")
    if args.allow_origin:
        _say(f"Browser origins allowed: {', '.join(args.allow_origin)}")
    if token is not None:
        _say(
            f"A token is required{' (newly generated)' if created else ''}. "
            f"It is stored in {token_path} (readable by you only). "
            f"Paste it into the plugin's Token field; show it with: cat {token_path}"
        )
    host = f"[{args.host}]" if ":" in args.host else args.host
    if host in ("0.0.0.0", "[::]"):
        _say("Listening on every network interface; other machines connect with this one's address.")
    log.info("device %s; %d model(s); default %s", server.device or "?", len(catalog.models), catalog.default)
    _say(f"{LISTENING_PREFIX}{host}:{port}")
    await serve_until(server, stop)
    return 0


if __name__ == "__main__":  # python -m differential_inpaint.backend.daemon.cli
    parser = argparse.ArgumentParser(prog="differential-inpaint serve")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
