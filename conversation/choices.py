"""Choosing the model and the mode (pure): modes as buttons, a model reply checked by its
shape, a refusal of the service's precheck answered by asking again with the old choice
kept. Nothing here does I/O; the core calls it and saves the state."""

from __future__ import annotations

import re
from typing import Any

from conversation.events import Button, Effect, Precheck, Reply
from conversation.state import ChatState, Pending

CONFIRM_WORDS = frozenset(
    {"ok", "yes", "y", "go", "submit", "confirm", "确认", "提交", "好", "好的", "是", "开始"}
)
ESTIMATE_WORDS = frozenset({"estimate", "estimate-only", "预估", "估价", "仅预估", "只预估"})
# A model id as services name them: "provider/name" (google/gemini-2.5-flash-image) or a
# bare versioned name (gpt-4o-image). Free words ("hello", "ok", "dall e") are not models.
MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._:-]*$|^[a-z]+-[0-9][A-Za-z0-9._-]*$")
MODEL_MAX = 100
MODE_BUTTONS_PER_ROW = 3

Result = tuple[ChatState, list[Effect]]


def parse_choice(text: str, modes: tuple[str, ...]) -> tuple[str | None, str | None, bool, bool]:
    """(model, mode, confirm, estimate_only) named in a reply or caption, either order."""
    model = mode = None
    confirm = estimate = False
    for raw in re.split(r"[\s,，]+", text.strip()):
        tok = raw.strip().strip("`'\"")
        low = tok.lower()
        if not tok:
            continue
        if low in modes:
            mode = low
        elif MODEL.match(tok) and len(tok) <= MODEL_MAX:
            model = tok
        elif low in CONFIRM_WORDS:
            confirm = True
        elif low in ESTIMATE_WORDS:
            estimate = True
    return model, mode, confirm, estimate


def mode_buttons(p: Pending, modes: tuple[str, ...]) -> tuple[tuple[Button, ...], ...]:
    buttons = [
        Button("btn.mode_current" if m == p.mode else "btn.mode", f"c:md-{m}:{p.token}", {"mode": m})
        for m in modes
    ]
    rows = [
        tuple(buttons[i : i + MODE_BUTTONS_PER_ROW]) for i in range(0, len(buttons), MODE_BUTTONS_PER_ROW)
    ]
    return (*rows, (Button("btn.back", f"c:back:{p.token}"),))


def ask_mode(p: Pending, modes: tuple[str, ...], refused: str | None = None) -> Reply:
    parts: list[tuple[str, dict[str, Any]]] = []
    if refused is not None:
        parts.append(("flow.mode_unknown", {"text": refused[:40], "modes": ", ".join(modes)}))
    parts.append(("flow.ask_mode", {"mode": p.mode}))
    return Reply(tuple(parts), mode_buttons(p, modes))


def ask_model(p: Pending, refused: str | None = None) -> Reply:
    parts: list[tuple[str, dict[str, Any]]] = []
    if refused is not None:
        parts.append(("flow.model_invalid", {"text": refused[:60]}))
    parts.append(("flow.ask_model", {"model": p.model}))
    return Reply(tuple(parts), ((Button("btn.back", f"c:back:{p.token}"),),))


def choose(s: ChatState, model: str | None, mode: str | None) -> Result:
    """A new model and/or mode: keep the old pair (a refusal restores it), estimate again."""
    p = s.pending
    assert p is not None
    p.prior = (p.model, p.mode)
    p.model, p.mode = model or p.model, mode or p.mode
    s.phase = "prechecking"  # the price depends on model and mode: estimate before confirming
    return s, [Precheck(p.row_count or 0, p.model, p.mode)]


def on_text(s: ChatState, text: str, modes: tuple[str, ...]) -> Result:
    """The reply in awaiting_model / awaiting_mode."""
    p = s.pending
    assert p is not None
    model, mode, _confirm, _estimate = parse_choice(text, modes)
    if s.phase == "awaiting_mode":
        if mode is None:
            return s, [ask_mode(p, modes, refused=text)]
        return choose(s, model, mode)
    if model is None:
        return s, [ask_model(p, refused=text)]
    return choose(s, model, mode)


def on_button(s: ChatState, action: str, modes: tuple[str, ...]) -> Result | None:
    """Buttons of the choices: change model / mode, a mode, back to the confirmation."""
    p = s.pending
    assert p is not None
    if action == "model":
        s.phase = "awaiting_model"
        return s, [ask_model(p)]
    if action == "mode":
        s.phase = "awaiting_mode"
        return s, [ask_mode(p, modes)]
    if action.startswith("md-") and action[3:] in modes:
        return choose(s, None, action[3:])
    return None


def refused(s: ChatState, message: str, modes: tuple[str, ...]) -> Result | None:
    """The precheck refused a changed model or mode: the old pair back, the question again."""
    p = s.pending
    if p is None or p.prior is None:
        return None
    (model, mode), p.prior = p.prior, None
    p.model_given = False  # the reply that named it confirmed a choice now refused: ask again
    changed_model = p.model != model
    p.model, p.mode = model, mode
    s.phase = "awaiting_model" if changed_model else "awaiting_mode"
    ask = ask_model(p) if changed_model else ask_mode(p, modes)
    return s, [Reply((("flow.choice_refused", {"message": message}), *ask.parts), ask.buttons)]
