"""Finding models where painters keep them, and the model spec grammar.

A model spec is one of:

- ``builtin:NAME``      a built-in tiny model (``builtin:tiny-sd15``, ``builtin:tiny-sdxl``,
                        ``builtin:tiny-sd15-inpaint``, ``builtin:tiny-sdxl-inpaint``,
                        ``builtin:tiny-flux``, ``builtin:tiny-flux-schnell``, ``builtin:tiny-flux-fill``,
                        ``builtin:tiny-sd3``);
- ``hf:ORG/NAME``       a diffusers model already in the Hugging Face cache (never downloaded);
- a discovered name     a checkpoint file or diffusers folder (SD1.5, SDXL, FLUX.1, SD3; FLUX.1
                        and SD3 also as a transformer alone, its VAE and text encoders found
                        by flow_checkpoints.py) found in a model folder, named by
                        its path relative to that folder (``sd_xl_base_1.0.safetensors``,
                        ``sd15/dreamshaper_8.safetensors``), or by its file stem when unique;
- a path               to a checkpoint file (``.safetensors``/``.sft``, ``.ckpt``/``.pt``/``.pth``,
                        ``.gguf`` for a quantised FLUX.1 / SD3 transformer) or a diffusers
                        folder; once resolved it is listed under its file name.

Model folders, in search order: those given to the engine (``--model-dir``), those in
``DIFFERENTIAL_INPAINT_MODEL_DIRS`` (os.pathsep separated), then the usual ComfyUI
(``models/checkpoints``, ``models/diffusion_models``, ``models/unet``) and
Automatic1111/Forge (``models/Stable-diffusion``) folders under the home directory, then
the Hugging Face cache. A folder that is itself a ComfyUI or Automatic1111 installation
is searched in those model folders.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from .checkpoints import CHECKPOINT_SUFFIXES, UnsupportedCheckpoint, detect_family, folder_family, read_shapes
from .tiny import BUILTIN_PREFIX, BUILTINS

ENV_MODEL_DIRS = "DIFFERENTIAL_INPAINT_MODEL_DIRS"
HF_PREFIX = "hf:"

# Installations whose checkpoint folders are searched when found under these roots.
_APP_FOLDERS = (
    "ComfyUI",
    "ComfyUI_windows_portable/ComfyUI",
    "stable-diffusion-webui",
    "stable-diffusion-webui-forge",
    "sd-webui-forge",
)
# ComfyUI keeps FLUX.1 / SD3 transformers alone in models/unet or models/diffusion_models.
_CHECKPOINT_SUBFOLDERS = (
    ("models/checkpoints", "comfyui"),
    ("models/diffusion_models", "comfyui"),
    ("models/unet", "comfyui"),
    ("models/Stable-diffusion", "automatic1111"),
)
_MAX_DEPTH = 4


@dataclass(frozen=True)
class CatalogEntry:
    name: str  # the spec clients send
    family: str
    source: str  # "builtin", "huggingface-cache", "comfyui", "automatic1111", "folder", "path"
    location: Path | None  # None for builtins; never sent to clients


@dataclass(frozen=True)
class SearchFolder:
    path: Path
    source: str


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    return home / "hub"


def default_app_folders() -> list[SearchFolder]:
    """Checkpoint folders of ComfyUI / Automatic1111 installations in the usual places."""
    home = Path.home()
    roots = [home, home / "Documents", home / "AI", home / "src", home / "git", home / "Applications"]
    found = []
    for root in roots:
        for app in _APP_FOLDERS:
            found.extend(_app_checkpoint_folders(root / app))
    return found


def _app_checkpoint_folders(folder: Path) -> list[SearchFolder]:
    return [
        SearchFolder(folder / sub, source)
        for sub, source in _CHECKPOINT_SUBFOLDERS
        if (folder / sub).is_dir()
    ]


def search_folders(model_dirs: Sequence[Path], scan_default_locations: bool) -> list[SearchFolder]:
    """Every folder to look in, in order, without duplicates."""
    folders: list[SearchFolder] = []
    env_dirs = [Path(p) for p in os.environ.get(ENV_MODEL_DIRS, "").split(os.pathsep) if p.strip()]
    for path in [*model_dirs, *env_dirs]:
        path = Path(path).expanduser()
        inside_app = _app_checkpoint_folders(path)
        folders.extend(inside_app or [SearchFolder(path, "folder")])
    if scan_default_locations:
        folders.extend(default_app_folders())
        folders.append(SearchFolder(hf_cache_dir(), "huggingface-cache"))
    unique: dict[Path, SearchFolder] = {}
    for folder in folders:
        key = folder.path.resolve() if folder.path.exists() else folder.path
        unique.setdefault(key, folder)
    return list(unique.values())


T = TypeVar("T")


class FileMemo(Generic[T]):
    """Answers about model files, remembered while a file stays the same (its resolved path,
    size and modification time): folders are walked on every listing, and an answer reads the
    file's header (or memory-maps a .ckpt)."""

    def __init__(self) -> None:
        self._answers: dict[tuple[str, int, int], T | None] = {}
        self._lock = threading.Lock()

    def get(self, path: Path, answer: Callable[[], T | None], changes: Path | None = None) -> T | None:
        """The remembered answer for `path`, or `answer()` remembered now; None when the file
        (or `changes`, the file whose change counts: a folder's config) cannot be read."""
        try:
            stat = (changes or path).stat()
        except OSError:
            return None
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._answers:
                return self._answers[key]
        found = answer()
        with self._lock:
            self._answers[key] = found
        return found


_families = FileMemo[str]()


def classify(path: Path) -> str | None:
    """The family of a checkpoint file or diffusers folder, None if it is not a usable model."""

    def family() -> str | None:
        try:
            return folder_family(path) if path.is_dir() else detect_family(read_shapes(path))
        except (UnsupportedCheckpoint, OSError, ValueError, RuntimeError):
            return None

    return _families.get(path, family, path / "model_index.json" if path.is_dir() else None)


def why_unusable(path: Path) -> str | None:
    """A sentence saying why `path` cannot be used, or None if it can."""
    try:
        if path.is_dir():
            folder_family(path)
        else:
            detect_family(read_shapes(path))
    except (UnsupportedCheckpoint, OSError, ValueError, RuntimeError) as exc:
        return str(exc) or type(exc).__name__
    return None


def walk_models(
    folder: Path, is_model_folder: Callable[[Path], bool], is_model_file: Callable[[Path], bool]
) -> Iterable[Path]:
    """Model files and model folders under `folder`, a few levels deep, hidden ones skipped;
    nothing inside a model folder. Shared by every kind of model the engine looks for."""
    stack = [(folder, 0)]
    while stack:
        current, depth = stack.pop()
        try:
            children = sorted(current.iterdir())
        except OSError:
            continue
        for child in children:
            if child.name.startswith("."):
                continue
            if child.is_dir():
                if is_model_folder(child):
                    yield child
                elif depth < _MAX_DEPTH:
                    stack.append((child, depth + 1))
            elif is_model_file(child):
                yield child


def _is_pipeline(folder: Path) -> bool:
    return (folder / "model_index.json").is_file()


def _walk(folder: Path) -> Iterable[Path]:
    """Checkpoint files and diffusers folders under `folder` (not inside diffusers folders)."""
    if _is_pipeline(folder):
        yield folder
        return
    yield from walk_models(folder, _is_pipeline, lambda f: f.suffix.lower() in CHECKPOINT_SUFFIXES)


def _hf_cache_models(cache: Path) -> Iterable[tuple[str, Path]]:
    """(repo id, snapshot folder) for every diffusers pipeline in the HF cache."""
    try:
        repos = sorted(cache.glob("models--*"))
    except OSError:
        return
    for repo in repos:
        snapshots = repo / "snapshots"
        ref = repo / "refs" / "main"
        candidates: list[Path] = []
        if ref.is_file():
            candidates.append(snapshots / ref.read_text(encoding="utf-8").strip())
        if snapshots.is_dir():
            candidates.extend(sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True))
        for snapshot in candidates:
            if (snapshot / "model_index.json").is_file():
                yield repo.name.removeprefix("models--").replace("--", "/"), snapshot
                break


def discover(folders: Sequence[SearchFolder]) -> list[CatalogEntry]:
    """Built-ins first, then every usable model in `folders`; the first of a name wins."""
    entries: dict[str, CatalogEntry] = {}
    for folder in folders:
        if not folder.path.is_dir():
            continue
        if folder.source == "huggingface-cache":
            for repo_id, snapshot in _hf_cache_models(folder.path):
                family = classify(snapshot)
                if family is not None:
                    entries.setdefault(
                        HF_PREFIX + repo_id,
                        CatalogEntry(HF_PREFIX + repo_id, family, folder.source, snapshot),
                    )
            continue
        for path in _walk(folder.path):
            family = classify(path)
            if family is None:
                continue
            name = path.relative_to(folder.path).as_posix()
            entries.setdefault(name, CatalogEntry(name, family, folder.source, path))
    builtins = [CatalogEntry(BUILTIN_PREFIX + n, f, "builtin", None) for n, f in BUILTINS.items()]
    return [*sorted(entries.values(), key=lambda e: e.name.lower()), *builtins]


def name_for_path(path: Path, taken: dict[str, CatalogEntry]) -> str:
    """The name a model given by path is listed under: its file name, unless that is taken."""
    name = path.name
    existing = taken.get(name)
    if existing is None or existing.location == path:
        return name
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:6]
    return f"{name}@{digest}"
