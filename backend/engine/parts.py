"""The text encoders and VAEs FLUX.1 / SD3 transformers kept alone may take, by name.

flow_checkpoints.py matches a lone transformer's parts itself when one file of each kind
fits; a job may choose them instead (`JobParams.text_encoders`, `vae`), by a name listed
here, never by a path: the files in the part folders of the transformers found (their own
folder, ComfyUI's ``text_encoders``, ``clip`` and ``vae``), those folders of every models
folder searched, and the files given with ``--text-encoder`` / ``--vae``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...protocol.spec import FLOW_PART_FAMILIES
from .catalog import CatalogEntry, FileMemo, SearchFolder
from .checkpoints import UnsupportedCheckpoint, read_shapes
from .configs import is_flow
from .errors import InvalidRequest, UnknownModel
from .flow_checkpoints import (
    COMFY_PART_FOLDERS,
    COMFY_TRANSFORMER_FOLDERS,
    ROLE_NAMES,
    TRANSFORMER,
    Part,
    _candidates,
    _fits,
    _has,
    derive_flux_config,
    derive_sd3_config,
    flow_checkpoint_family,
    needed_roles,
    part_folders,
    parts_in,
)

# The families each role may serve: FLUX.1 takes CLIP-L and T5, SD3 CLIP-G besides; the
# 16-channel VAE is both's (widths are checked against the model when a job names one).
ROLE_FAMILIES = {role: FLOW_PART_FAMILIES for role in ("clip_l", "t5", "vae")} | {
    "clip_g": frozenset({"sd3"})
}
FLOW_VAE_CHANNELS = 16


@dataclass(frozen=True)
class PartFile:
    """A text encoder or VAE file, by the name clients send."""

    name: str
    role: str  # "clip_l", "clip_g", "t5" or "vae"
    path: Path  # never sent to clients

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(sorted(ROLE_FAMILIES[self.role]))

    @property
    def is_vae(self) -> bool:
        return self.role == "vae"


_parts = FileMemo[Part]()


def read_part(path: Path) -> Part | None:
    """The one text encoder or 16-channel VAE the file at `path` holds; None for anything else
    (a whole checkpoint, a transformer, an SD VAE, an unreadable file)."""

    def part() -> Part | None:
        try:
            shapes = read_shapes(path)
            found = [] if _has(shapes, TRANSFORMER) else parts_in(path, shapes)
        except (OSError, UnsupportedCheckpoint, ValueError, RuntimeError, KeyError):
            return None
        if len(found) == 1 and (found[0].role != "vae" or found[0].width == FLOW_VAE_CHANNELS):
            return found[0]
        return None

    return _parts.get(path, part)


def lone_transformers(entries: Iterable[CatalogEntry]) -> list[CatalogEntry]:
    """The FLUX.1 / SD3 single files among `entries`: those that may take parts from outside."""
    return [e for e in entries if is_flow(e.family) and e.location is not None and e.location.is_file()]


def lacking(entry: CatalogEntry) -> tuple[str, ...]:
    """The roles a FLUX.1 / SD3 single file has no weights for in itself (none for others)."""
    if entry not in lone_transformers([entry]):
        return ()
    assert entry.location is not None
    try:
        held = {p.role for p in parts_in(entry.location, read_shapes(entry.location))}
    except (OSError, UnsupportedCheckpoint):
        return ()
    return tuple(role for role in needed_roles(entry.family) if role not in held)


def part_search_folders(folders: Sequence[SearchFolder], models: Iterable[CatalogEntry]) -> list[Path]:
    """Where parts are looked for: the part folders of each lone transformer (flow_checkpoints'
    own order), then ComfyUI's part folders beside each models folder searched."""
    found: list[Path] = []
    for entry in lone_transformers(models):
        assert entry.location is not None
        for role_folders in part_folders(entry.location).values():
            found += role_folders
    names = sorted({n for names in COMFY_PART_FOLDERS.values() for n in names})
    for folder in folders:
        if folder.source == "huggingface-cache":
            continue
        root = folder.path.parent if folder.path.name in COMFY_TRANSFORMER_FOLDERS else folder.path
        found += [root / name for name in names]
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve() if path.exists() else path, path)
    return list(unique.values())


def find_part_files(folders: Sequence[Path], given: Sequence[Path] = ()) -> list[PartFile]:
    """Every text encoder and 16-channel VAE in `given` (first) and in `folders` (and their
    subfolders), once each, named by file name (with a short digest of the path where two
    files share one)."""
    seen: set[Path] = set()
    listed: dict[str, PartFile] = {}
    candidates = [Path(p).expanduser() for p in given] + [p for f in folders for p in _candidates(f)]
    for path in candidates:
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        part = read_part(path)
        if part is None:
            continue
        name = path.name
        if name in listed:
            name = f"{name}@{hashlib.sha1(str(resolved).encode()).hexdigest()[:6]}"
        listed[name] = PartFile(name, part.role, path)
    return list(listed.values())


@dataclass(frozen=True)
class ChosenParts:
    """The files a job chose for its model's text encoders and VAE (empty: none chosen)."""

    text_encoders: tuple[Path, ...] = ()
    vae: Path | None = None

    @property
    def key(self) -> tuple[str, ...]:
        """What tells one choice from another in the loaded-model cache."""
        return (*(str(p) for p in self.text_encoders), f"vae={self.vae or ''}")

    def __bool__(self) -> bool:
        return bool(self.text_encoders) or self.vae is not None


NO_PARTS = ChosenParts()  # a job that chose none: the model with the daemon's parts


def choose_parts(
    entry: CatalogEntry,
    listed: Sequence[PartFile],
    text_encoders: Sequence[str],
    vae: str | None,
    allow_paths: bool = False,
) -> ChosenParts:
    """The files a job's `text_encoders` and `vae` name for the model `entry`: listed names
    (or, with `allow_paths`, files). UnknownModel for a name not listed, InvalidRequest for a
    part the model cannot take (a model that is no FLUX.1 / SD3 single file, a role it has no
    use for, two of one role, a width that does not fit its transformer)."""
    if not text_encoders and vae is None:
        return NO_PARTS
    if not lone_transformers([entry]):
        raise InvalidRequest(
            f"Model '{entry.name}' takes no text encoders or VAE of a job's choice: only FLUX.1 and "
            "SD3 single files do."
        )
    assert entry.location is not None
    by_name = {p.name: p for p in listed}
    chosen = [_named(name, False, by_name, allow_paths) for name in text_encoders]
    if vae is not None:
        chosen.append(_named(vae, True, by_name, allow_paths))
    roles = needed_roles(entry.family)
    seen: dict[str, PartFile] = {}
    for part in chosen:
        if part.role not in roles:
            takes = ", ".join(ROLE_NAMES[r].removesuffix(" text encoder") for r in roles if r != "vae")
            raise InvalidRequest(
                f"'{part.name}' is a {ROLE_NAMES[part.role]}; model '{entry.name}' ({entry.family}) "
                f"takes these text encoders: {takes}."
            )
        if part.role in seen:
            raise InvalidRequest(
                f"'{seen[part.role].name}' and '{part.name}' are both a {ROLE_NAMES[part.role]}: choose one."
            )
        seen[part.role] = part
    _check_widths(entry, chosen)
    return ChosenParts(
        tuple(p.path for p in chosen if not p.is_vae), next((p.path for p in chosen if p.is_vae), None)
    )


def _named(name: str, want_vae: bool, by_name: dict[str, PartFile], allow_paths: bool) -> PartFile:
    kind = "VAE" if want_vae else "text encoder"
    found = by_name.get(name)
    if found is None and allow_paths and Path(name).expanduser().is_file():
        part = read_part(Path(name).expanduser())
        if part is not None:
            found = PartFile(name, part.role, Path(name).expanduser())
    if found is None:
        offered = sorted(n for n, p in by_name.items() if p.is_vae == want_vae)
        raise UnknownModel(
            f"Unknown {kind} '{name}'. The {kind}s found are: "
            + (", ".join(offered) if offered else "none")
            + "."
        )
    if found.is_vae != want_vae:
        raise InvalidRequest(
            f"'{name}' is a {ROLE_NAMES[found.role]}, not a {kind}"
            + (": name it as the VAE." if found.is_vae else ": name it among the text encoders.")
        )
    return found


def _check_widths(entry: CatalogEntry, chosen: Sequence[PartFile]) -> None:
    """flow_checkpoints' own test of a part against the transformer (`_fits`), before the job
    waits for a load."""
    assert entry.location is not None
    try:
        shapes = read_shapes(entry.location)
        family = flow_checkpoint_family(shapes)
        prefix = TRANSFORMER if _has(shapes, TRANSFORMER) else ""
        own = {k[len(prefix) :]: s for k, s in shapes.items() if k.startswith(prefix)}
        config: dict[str, Any] = derive_sd3_config(own) if family == "sd3" else derive_flux_config(own)
    except (OSError, KeyError, UnsupportedCheckpoint):
        return  # the load says what is wrong with the model itself
    for chosen_part in chosen:
        part = read_part(chosen_part.path)
        if family is not None and part is not None and not _fits(part, family, config):
            raise InvalidRequest(
                f"'{chosen_part.name}' does not fit model '{entry.name}': it is a "
                f"{ROLE_NAMES[part.role]} {part.width} wide, not the width the {family} transformer takes."
            )
