"""Krita integration: the menu and shortcut actions, and the docker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from krita import DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita

from . import ui
from .docker import DifferentialInpaintDocker

ACTION_ID = "differential_inpaint"
DOCKER_ID = "differential_inpaint_docker"
# Assignable in Settings > Configure Krita > Keyboard Shortcuts; defaults in the .action file.
RUN_ACTION_ID = "differential_inpaint_run"
CANCEL_ACTION_ID = "differential_inpaint_cancel"
APPLY_ACTION_ID = "differential_inpaint_apply"
DISCARD_ACTION_ID = "differential_inpaint_discard"
SHOW_MAP_ACTION_ID = "differential_inpaint_show_map"


def the_docker() -> DifferentialInpaintDocker | None:
    return next((d for d in Krita.instance().dockers() if isinstance(d, DifferentialInpaintDocker)), None)


def run_from_docker() -> None:
    """Run with the docker's settings; without the docker, the dialog asks for them."""
    docker = the_docker()
    if docker is None:
        ui.open_dialog()
    else:
        docker.run()


def show_map_from_docker() -> None:
    """The strength map with the docker's settings; without the docker, those kept in kritarc."""
    docker = the_docker()
    if docker is not None:
        docker.show_map()
    else:
        ui.show_map_without_docker()


def cancel_from_docker() -> None:
    docker = the_docker()
    if docker is not None:
        docker.cancel()


def apply_from_docker() -> None:
    docker = the_docker()
    if docker is not None:
        docker.apply()


def discard_from_docker() -> None:
    docker = the_docker()
    if docker is not None:
        docker.discard()


class DifferentialInpaintExtension(Extension):
    def __init__(self, parent: Any) -> None:
        super().__init__(parent)

    def setup(self) -> None:
        pass

    def createActions(self, window: Any) -> None:  # noqa: N802 - Krita's name
        actions: list[tuple[str, str, str, Callable[[], None]]] = [
            (
                ACTION_ID,
                "Differential Inpaint",
                "Inpaint the selection with Differential Diffusion (soft selections change partly)",
                ui.open_dialog,
            ),
            (RUN_ACTION_ID, "Differential Inpaint: Run", "Run with the docker's settings", run_from_docker),
            (CANCEL_ACTION_ID, "Differential Inpaint: Cancel", "Cancel the docker's job", cancel_from_docker),
            (
                SHOW_MAP_ACTION_ID,
                "Differential Inpaint: Show strength map",
                "Add the strength map the settings give as a gray layer, without sampling",
                show_map_from_docker,
            ),
            (
                APPLY_ACTION_ID,
                "Differential Inpaint: Apply",
                "Keep the result chosen in the docker's History as a layer",
                apply_from_docker,
            ),
            (
                DISCARD_ACTION_ID,
                "Differential Inpaint: Discard",
                "Remove the result chosen in the docker's History",
                discard_from_docker,
            ),
        ]
        for action_id, text, tip, slot in actions:
            action = window.createAction(action_id, text, "tools/scripts")
            action.setToolTip(tip)
            action.triggered.connect(slot)


def register() -> None:
    instance = Krita.instance()
    instance.addExtension(DifferentialInpaintExtension(instance))
    instance.addDockWidgetFactory(
        DockWidgetFactory(DOCKER_ID, DockWidgetFactoryBase.DockPosition.DockRight, DifferentialInpaintDocker)
    )
