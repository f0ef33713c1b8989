"""Does a settings form offer exactly the declared settings? Used under PyQt here
(test_ui_qt.py) and inside real Krita (krita_scenarios.py); plain Python 3.10."""

from __future__ import annotations

from typing import Any


def form_problems(plugin: Any, form: Any) -> list[str]:
    """Every mismatch between the form's widgets and the settings Krita shows."""
    shown = [q for q in plugin.client.SETTINGS_PARAMS if "krita" in q.hosts]
    problems = []
    if list(form.fields) != [q.name for q in shown]:
        problems.append(f"fields {list(form.fields)} != {[q.name for q in shown]}")
    defaults = plugin.Settings().values()
    form.set_values(plugin.Settings())
    for q in shown:
        field = form.fields.get(q.name)
        if field is None:
            continue
        if field.widget.toolTip() != q.help:
            problems.append(f"{q.name}: tooltip {field.widget.toolTip()!r}")
        if field.value() != defaults[q.name]:
            problems.append(f"{q.name}: shows {field.value()!r} for the default {defaults[q.name]!r}")
        label = form.labels.get(q.name)
        if label is None or label.text() != q.label or label.buddy() is not field.widget:
            problems.append(f"{q.name}: label {label.text() if label else None!r}")
        slider = getattr(field, "slider", None)
        if slider is not None:  # a fraction shown in percent
            lo, hi = q.bounds()
            want = (round(lo * 100) + q.lo_open, round(hi * 100) - q.hi_open)
            if (slider.minimum(), slider.maximum()) != want or not q.percent:
                problems.append(f"{q.name}: slider {(slider.minimum(), slider.maximum())} != {want}")
            continue
        box = getattr(field, "box", None)
        if box is not None:
            lo, hi = q.bounds()
            step = 1 if q.kind is int else 0.01
            want = (lo + step * q.lo_open, hi - step * q.hi_open)
            got = (box.minimum(), box.maximum())
            if abs(got[0] - want[0]) > 1e-9 or abs(got[1] - want[1]) > 1e-9:
                problems.append(f"{q.name}: range {got} != {want}")
            if q.unit and not box.suffix().endswith(q.unit):
                problems.append(f"{q.name}: no unit {q.unit!r}")
        elif q.kind in (int, float) and not q.optional:
            problems.append(f"{q.name}: a number without a spin box")
    return problems
