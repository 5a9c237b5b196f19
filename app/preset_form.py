"""The preset form: one row per :data:`vs_scripts.plan.preset.SCHEMA` key, kept in step with the
TOML editor.

The TOML text stays the single source of truth. A change in the form rewrites the value of the
key it touched in that text (with tomlkit: comments, order and spacing stay); a change in the text
refills the form. Validation runs on the text, and each problem is shown under the key it names
(as well as in the list under the editor).

Keys typed faster than the app handles them (a paste, SSH lag) must land where they were typed.
Two things made them not:

- Textual handles a typed character inside the focused Input/TextArea, but a bound key
  (backspace, arrows) only once the key event has bubbled up to the app, so in a burst the
  characters behind a backspace were inserted before it ran (Textual issue #6605).
  :class:`OrderedInput` and :class:`OrderedTextArea` run their own bindings in place, in order.
- The form's own updates came back as edits. :meth:`PresetForm.fill` now sets the widgets with
  their ``Changed`` messages prevented, so every ``Changed`` the form handles is the user's (an
  earlier scheme matched echoes by value, and lost keys when two echoes were in flight).
"""

from __future__ import annotations

import re
import tomllib
from fractions import Fraction

import tomlkit
from textual import events, on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select, Static, TextArea

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


def bool_label(value: bool) -> str:
    """A checkbox's label: its TOML value, so on and off read apart without colour."""
    return "true" if value else "false"


async def run_own_binding(widget: Widget, event: events.Key) -> bool:
    """Run ``widget``'s own (non-priority) binding for ``event`` now, in order with the text
    typed around it, instead of after the event has bubbled up to the app. The focused widget
    is the first in the app's binding chain, and priority bindings ran before the event got
    here, so what runs is what the app would run; only when changes."""
    bindings = widget._bindings.key_to_bindings.get(event.key, ())  # the bindings the app uses
    for binding in bindings:
        if not binding.priority and await widget.app.run_action(binding.action, widget):
            event.stop()
            event.prevent_default()
            return True
    return False


class OrderedInput(Input):
    """An Input whose bound keys (backspace, arrows, ...) keep their place among typed text."""

    async def _on_key(self, event: events.Key) -> None:
        if not await run_own_binding(self, event):
            await super()._on_key(event)


class OrderedTextArea(TextArea):
    """A TextArea whose bound keys (backspace, arrows, ...) keep their place among typed text."""

    async def _on_key(self, event: events.Key) -> None:
        if not await run_own_binding(self, event):
            await super()._on_key(event)


class PresetForm(VerticalScroll):
    """Editable fields for every preset key, with the key's problems right under it."""

    class Edited(Message):
        """The user changed ``key`` to ``value`` (``None``: unset) in the form."""

        def __init__(self, key: Key, value: object) -> None:
            super().__init__()
            self.key = key
            self.value = value

    loaded: reactive[bool] = reactive(False)
    """Whether a preset has been shown yet; until then the form says "loading…" instead of
    showing widgets whose starting values would look like the preset's."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._by_id = {field_id(k): k for k in SCHEMA}

    def compose(self) -> ComposeResult:
        yield Static("loading…", id="form-loading", markup=False)
        section = None
        for key in SCHEMA:
            if key.section != section:
                section = key.section
                yield Label(f"[{section}]", classes="form-section", markup=False)
            with Horizontal(classes="form-row"):
                yield Label(key.name, classes="form-key")
                fid = field_id(key)
                if key.kind == "bool":
                    widget = Checkbox(
                        bool_label(bool(key.default)), value=bool(key.default), id=fid, compact=True
                    )
                elif key.choices:
                    widget = Select(
                        [(c, c) for c in key.choices],
                        value=key.default,
                        allow_blank=False,
                        id=fid,
                        compact=True,
                    )
                else:
                    widget = OrderedInput(
                        "", id=fid, compact=True, placeholder="not set" if key.optional else ""
                    )
                widget.tooltip = f"{key.doc} ({key.describe_allowed()})"
                yield widget
            yield Static("", id=error_id(key), classes="form-error", markup=False)

    def watch_loaded(self, loaded: bool) -> None:
        self.set_class(not loaded, "-loading")

    def fill(self, text: str, *, force: bool = False) -> None:
        """Show the values of TOML ``text`` (left as they are when it does not parse). The
        Input being typed in keeps its text unless ``force`` (another preset was loaded)."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            return
        with self.prevent(Input.Changed, Select.Changed, Checkbox.Changed):
            for key in SCHEMA:
                table = data.get(key.section)
                raw = table.get(key.name) if isinstance(table, dict) else None
                value = display(key, raw)
                widget = self.query_one(f"#{field_id(key)}")
                if key.choices and value not in key.choices:
                    continue  # an invalid choice: its error says so, the Select keeps a valid one
                if isinstance(widget, Checkbox):
                    if isinstance(value, bool):
                        widget.value = value
                        widget.label = bool_label(value)
                    continue
                if isinstance(widget, Input) and widget.has_focus and not force:
                    continue  # never rewrite what the user is typing
                if widget.value != value:  # type: ignore[attr-defined]
                    widget.value = value  # type: ignore[attr-defined]
        self.loaded = True

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
        key = self._by_id.get(event.control.id or "")
        if key is None:
            return
        event.stop()
        if not self.loaded:
            return  # nothing shown yet: there is no preset to edit
        value = event.value
        if isinstance(event, Checkbox.Changed):
            event.checkbox.label = bool_label(event.value)
        if isinstance(event, Input.Changed):
            value = parse_input(key, str(value))
        self.post_message(self.Edited(key, value))


def _plain(item: object) -> object:
    """A tomlkit item as the Python value it stands for."""
    unwrap = getattr(item, "unwrap", None)
    return unwrap() if callable(unwrap) else item


def apply_edit(text: str, key: Key, value: object) -> str:
    """TOML ``text`` with ``key`` set to ``value``, changed only there: comments, key order and
    spacing stay as they are (tomlkit). ``None`` removes the key; a value equal to the default of
    a key that was not written stays unwritten; a new key goes at the end of its table (the
    table at the end of the file when there is none). ``text`` that does not parse is returned
    as it is."""
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError:
        return text
    table = doc.get(key.section)
    if table is not None and not isinstance(table, dict):
        return text  # not a table: validation names the problem
    written = table is not None and key.name in table
    if value is None:
        if not written:
            return text
        del table[key.name]  # type: ignore[index]
    elif written:
        old = _plain(table[key.name])  # type: ignore[index]
        if old == value and isinstance(old, bool) == isinstance(value, bool):
            return text  # 20 typed over 20.0: the same number, keep how it is written
        table[key.name] = value  # type: ignore[index]
    elif value in (display(key, None), key.default):
        return text
    else:
        if table is None:
            table = tomlkit.table()
            doc[key.section] = table
        table[key.name] = value
    return tomlkit.dumps(doc)
