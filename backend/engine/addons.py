"""Add-ons that steer a model (LoRAs, IP-Adapters): where painters keep them and what they are named.

An add-on spec is one of:

- ``builtin:NAME``   a built-in tiny add-on (random weights, for tests);
- a discovered name  a file found in the kind's folders (below), named by its path relative to
                     that folder without the suffix (``watercolor``, ``styles/ink``); the suffix
                     may be given too, and the file stem alone where it is unique;
- a path             (where paths are allowed: the command line, never the daemon's clients)
                     to a file of that kind.

The kind's folders, in order: those given for it (``--lora-dir``, ``--ip-adapter-dir``; a folder
that is a ComfyUI or Automatic1111 installation is searched in its folders of that kind), then,
in every ComfyUI and Automatic1111/Forge installation the model folders lead to (catalog.py),
the kind's own folders there (``models/loras``, ``models/Lora``, ``models/ipadapter``, ...).

Each file's family (which models it fits) is read from its tensors' names and shapes, once
per file version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .catalog import FileMemo, SearchFolder, search_folders, walk_models
from .errors import UnknownModel
from .tiny import BUILTIN_PREFIX

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class AddonInfo:
    """An add-on clients may name. `name` is the spec to send back; no paths are exposed."""

    name: str
    family: str  # "sd15", "sdxl", "flux", "sd3", or "unknown" (then it fits no model)
    source: str  # "builtin", "path", or the kind of folder it was found in
    location: Path | None = None  # None for built-ins; never sent to clients


@dataclass(frozen=True)
class AddonKind:
    """What one kind of add-on is and where it is kept.

    what: its name in messages ("LoRA").
    option: the command-line option that adds folders ("--lora-dir").
    app_folders: its folders inside a ComfyUI / Automatic1111 installation, with the source
        they are listed under.
    suffixes: the file suffixes it comes in.
    family: the family of a file's tensors (name -> shape), None when the file is not of this kind.
    wanted: whether a file in a folder shared with other kinds may be of this kind at all (by
        its name; A1111 keeps IP-Adapters among ControlNets), before its header is read.
    shapes: how a file's tensors' shapes are read (default: checkpoints.read_shapes).
    """

    what: str
    option: str
    app_folders: tuple[tuple[str, str], ...]
    suffixes: tuple[str, ...]
    family: Callable[[Shapes], str | None]
    wanted: Callable[[Path, str], bool] = lambda _path, _source: True
    shapes: Callable[[Path], Shapes] | None = None


class AddonFinder:
    """Finds one kind of add-on and resolves its specs. Thread-safe.

    dirs: the folders given for this kind. model_dirs, scan_default_locations: the diffusion
    models' folders (catalog.py), whose installations' folders of this kind are searched.
    builtins: built-in name (without the prefix) -> family.
    allow_paths: whether a spec may be a filesystem path (not for the daemon's clients).
    """

    def __init__(
        self,
        kind: AddonKind,
        dirs: Sequence[Path | str] = (),
        model_dirs: Sequence[Path] = (),
        *,
        scan_default_locations: bool = True,
        builtins: dict[str, str] | None = None,
        allow_paths: bool = True,
    ) -> None:
        self.kind = kind
        self.dirs = [Path(d).expanduser() for d in dirs]
        self.model_dirs = list(model_dirs)
        self.scan_default_locations = scan_default_locations
        self.builtins = dict(builtins or {})
        self.allow_paths = allow_paths
        self._families = FileMemo[str]()

    def search_folders(self) -> list[SearchFolder]:
        """The folders looked in, in order (existing or not)."""
        folders: list[SearchFolder] = []
        for path in self.dirs:
            inside = self._app_folders(path)
            folders.extend(inside or [SearchFolder(path, "folder")])
        for folder in search_folders(self.model_dirs, self.scan_default_locations):
            if folder.source in ("comfyui", "automatic1111"):
                # <app>/models/checkpoints -> <app>: the installation's folders of this kind.
                folders.extend(self._app_folders(folder.path.parent.parent, every=True))
        unique: dict[Path, SearchFolder] = {}
        for folder in folders:
            unique.setdefault(folder.path, folder)
        return list(unique.values())

    def _app_folders(self, app: Path, every: bool = False) -> list[SearchFolder]:
        return [
            SearchFolder(app / sub, source)
            for sub, source in self.kind.app_folders
            if every or (app / sub).is_dir()
        ]

    def find(self) -> list[AddonInfo]:
        """Every add-on of this kind found now (re-scans the folders), built-ins last."""
        found: dict[str, AddonInfo] = {}
        for folder in self.search_folders():
            if not folder.path.is_dir():
                continue
            for path in _walk(folder.path, self.kind.suffixes):
                if not self.kind.wanted(path, folder.source):
                    continue
                family = self.family_of(path)
                if family is None:
                    continue
                name = path.relative_to(folder.path).with_suffix("").as_posix()
                found.setdefault(name, AddonInfo(name, family, folder.source, path))
        builtins = [AddonInfo(BUILTIN_PREFIX + n, f, "builtin") for n, f in self.builtins.items()]
        return [*sorted(found.values(), key=lambda a: a.name.lower()), *builtins]

    def family_of(self, path: Path) -> str | None:
        """The family of a file of this kind ("unknown" when it cannot be told), None when the
        file is not of this kind or cannot be read."""
        from .checkpoints import UnsupportedCheckpoint, read_shapes

        def family() -> str | None:
            try:
                return self.kind.family((self.kind.shapes or read_shapes)(path))
            except (UnsupportedCheckpoint, OSError, ValueError, RuntimeError):
                return None

        return self._families.get(path, family)

    def resolve(self, spec: str) -> AddonInfo:
        """The add-on `spec` names; UnknownModel saying what was found and where it looked."""
        spec = spec.strip()
        if spec.startswith(BUILTIN_PREFIX):
            if spec.removeprefix(BUILTIN_PREFIX) in self.builtins:
                return AddonInfo(spec, self.builtins[spec.removeprefix(BUILTIN_PREFIX)], "builtin")
            names = ", ".join(BUILTIN_PREFIX + n for n in self.builtins)
            raise UnknownModel(f"Unknown built-in {self.kind.what} '{spec}'. The built-in ones are: {names}.")
        found = self.find()
        for info in found:
            if info.location is not None and spec in (info.name, info.name + info.location.suffix):
                return info
        stems = [a for a in found if a.location is not None and a.location.stem == spec]
        if len(stems) == 1:
            return stems[0]
        path = Path(spec).expanduser()
        if self.allow_paths and path.is_file():
            family = self.family_of(path)
            if family is None:
                raise UnknownModel(f"'{path.name}' is not a {self.kind.what} this engine can read.")
            return AddonInfo(path.stem, family, "path", path)
        names = ", ".join(a.name for a in found) or "none"
        raise UnknownModel(
            f"Unknown {self.kind.what} '{spec}'. The {self.kind.what}s found are: {names}; "
            f"looked in: {self.folders_text()} (add folders with {self.kind.option})."
        )

    def folders_text(self) -> str:
        folders = [str(f.path) for f in self.search_folders()]
        return ", ".join(folders) if folders else "(no folders configured)"


def _walk(folder: Path, suffixes: tuple[str, ...]) -> Iterable[Path]:
    """Files with one of `suffixes` under `folder` (add-ons are single files)."""
    return walk_models(folder, lambda _folder: False, lambda f: f.suffix.lower() in suffixes)


def fits(addon_family: str, model_family: str) -> bool:
    """Whether an add-on made for `addon_family` fits a model of `model_family` (an SD1.5
    LoRA fits SD1.5 inpainting models, a FLUX.1 one FLUX.1 Fill and schnell)."""
    from .configs import base_family

    return addon_family == base_family(model_family)
