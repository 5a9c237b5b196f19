"""The preset form: one row per :data:`vs_scripts.plan.preset.SCHEMA` key, kept in step with the
TOML editor.

The TOML text stays the single source of truth. A change in the form rewrites the key it
touched in that text; a change in the text refills the form. Validation runs on the text, and
each problem is shown under the key it names (as well as in the list under the editor).
"""

from __future__ import annotations

import re
import tomllib
from fractions import Fraction

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Checkbox, Input, Label, Select, Static

from vs_scripts.plan.preset import SCHEMA, Key

_PROBLEM_KEY = re.compile(r"\[(\w+)\] (\w+)")


def field_id(key: Key) -> str:
    return f"f-{key.section}-{key.name}"


def error_id(key: Key) -> str:
    return f"e-{key.section}-{key.name}"


def problems_by_key(problems: list[str]) -> dict[tuple[str, str], list[str]]:
    """``{(section, key): [problem, ...]}`` for the problems that name a schema key."""
    known = {(k.section, k.name) for k in SCHEMA}
    out: dict[tuple[str, str], list[str]] = {}
    for problem in problems:
        m = _PROBLEM_KEY.search(problem)
        if m and (m.group(1), m.group(2)) in known:
            text = problem.split(": ", 1)[1] if ": [" in problem else problem
            out.setdefault((m.group(1), m.group(2)), []).append(text)
    return out


def display(key: Key, value: object) -> object:
    """The widget value for a TOML value (``None``: the key is not set)."""
    if value is None:
        value = key.default
    if key.kind == "bool":
        return bool(value)
    if key.choices:
        return value
    if value is None:
        return ""
    if isinstance(value, Fraction):
        return str(value.numerator) if value.denominator == 1 else str(value)
    return str(value)


def parse_input(key: Key, text: str) -> object:
    """What an Input's text means for ``key`` (``None``: leave the key unset). Text that is not
    a number is kept as text, so validation names the key and says what is allowed."""
    text = text.strip()
    if text == "":
        return None
    if key.kind in ("int", "float", "fps"):
        for conv in (int, float):
            try:
                return conv(text)
            except ValueError:
                pass
    return text


class PresetForm(VerticalScroll):
    """Editable fields for every preset key, with the key's problems right under it."""

    class Edited(Message):
        """The user changed ``key`` to ``value`` (``None``: unset) in the form."""

        def __init__(self, key: Key, value: object) -> None:
            super().__init__()
            self.key = key
            self.value = value

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._by_id = {field_id(k): k for k in SCHEMA}
        self._shown: dict[str, object] = {}  # what fill() last put in each widget

    def compose(self) -> ComposeResult:
        section = None
        for key in SCHEMA:
            if key.section != section:
                section = key.section
                yield Label(f"[{section}]", classes="form-section", markup=False)
            with Horizontal(classes="form-row"):
                yield Label(key.name, classes="form-key")
                fid = field_id(key)
                if key.kind == "bool":
                    widget = Checkbox("", value=bool(key.default), id=fid, compact=True)
                elif key.choices:
                    widget = Select(
                        [(c, c) for c in key.choices],
                        value=key.default,
                        allow_blank=False,
                        id=fid,
                        compact=True,
                    )
                else:
                    widget = Input(
                        str(display(key, None)),
                        id=fid,
                        compact=True,
                        placeholder="not set" if key.optional else "",
                    )
                widget.tooltip = f"{key.doc} ({key.describe_allowed()})"
                yield widget
            yield Static("", id=error_id(key), classes="form-error", markup=False)

    def fill(self, text: str) -> None:
        """Show the values of TOML ``text`` (left as they are when it does not parse)."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            return
        for key in SCHEMA:
            table = data.get(key.section)
            raw = table.get(key.name) if isinstance(table, dict) else None
            value = display(key, raw)
            fid = field_id(key)
            widget = self.query_one(f"#{fid}")
            if key.choices and value not in key.choices:
                continue  # an invalid choice: its error says so, the Select keeps a valid one
            if isinstance(widget, Checkbox) and not isinstance(value, bool):
                continue
            if isinstance(widget, Input) and widget.has_focus:
                continue  # never rewrite what the user is typing
            if widget.value != value:  # type: ignore[attr-defined]
                self._shown[fid] = value
                widget.value = value  # type: ignore[attr-defined]

    def show_problems(self, problems: list[str]) -> None:
        found = problems_by_key(problems)
        for key in SCHEMA:
            errors = found.get((key.section, key.name), [])
            label = self.query_one(f"#{error_id(key)}", Static)
            label.update("\n".join(f"✗ {e}" for e in errors))
            label.display = bool(errors)

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _changed(self, event: Input.Changed | Select.Changed | Checkbox.Changed) -> None:
        fid = event.control.id
        key = self._by_id.get(fid or "")
        if key is None:
            return
        event.stop()
        value = event.value
        if self._shown.pop(fid, object()) == value:  # type: ignore[arg-type]
            return  # the echo of fill(), not the user
        if isinstance(event, Input.Changed):
            value = parse_input(key, str(value))
        self.post_message(self.Edited(key, value))


def apply_edit(data: dict[str, object], key: Key, value: object) -> dict[str, object]:
    """``data`` (parsed TOML) with ``key`` set to ``value``; a value equal to the default of a
    key that was not written stays unwritten, ``None`` removes the key."""
    out = {s: dict(t) if isinstance(t, dict) else t for s, t in data.items()}
    table = out.setdefault(key.section, {})
    if not isinstance(table, dict):
        return out
    if value is None:
        table.pop(key.name, None)
    elif key.name in table or (value != display(key, None) and value != key.default):
        table[key.name] = value
    if not table:
        out.pop(key.section)
    return out
