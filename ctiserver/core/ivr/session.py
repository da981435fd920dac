"""The IVR interpreter: a pure state machine that yields instructions and is fed results.

The adapter owns the telephony; :class:`IvrSession` says how to drive it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ctiserver.core.ivr.flow import GOODBYE, Flow, Step, Target
from ctiserver.core.rules.decision import Decision

MAX_TRANSITIONS = 200


@dataclass(frozen=True)
class Play:
    sounds: tuple[str, ...]
    interruptible: bool = False


@dataclass(frozen=True)
class SayDigits:
    digits: str


@dataclass(frozen=True)
class Collect:
    sounds: tuple[str, ...]
    min_len: int
    max_len: int
    timeout: float  # seconds to wait for the first / next digit
    terminator: str = "#"


@dataclass(frozen=True)
class Done:
    answers: Mapping[str, str]
    decision: Decision | None  # None: continue with the routing rules
    trace: tuple[str, ...] = ()


Instruction = Play | SayDigits | Collect | Done


class IvrError(RuntimeError):
    """The session was driven wrongly (our bug, not the caller's)."""


class IvrSession:
    """One caller going through one flow.

    Usage (the adapter owns the telephony)::

        session = IvrSession(flow)
        instruction = session.start()
        while not isinstance(instruction, Done):
            if isinstance(instruction, Collect):
                digits = ...  # '' (or None) when the caller pressed nothing before the timeout
                instruction = session.feed(digits)
            else:  # Play / SayDigits
                instruction = session.feed(None)

    ``Done.decision`` is the action chosen inside the flow, or ``None`` meaning
    "continue with the routing rules, using ``Done.answers``".

    Menus and collections re-prompt on timeout or invalid input up to ``retries``
    times (so ``retries: 2`` gives three attempts), then follow ``on_fail``
    (default: play ``goodbye`` and hang up). ``on_timeout`` / ``on_invalid``, when
    given, are taken on the first timeout / invalid input instead of re-prompting.
    A flow that keeps jumping between steps without asking the caller anything
    ends after :data:`MAX_TRANSITIONS` steps, with ``goodbye``.
    """

    def __init__(self, flow: Flow, answers: Mapping[str, str] | None = None) -> None:
        self.flow = flow
        self.answers: dict[str, str] = dict(answers or {})
        self.trace: list[str] = []
        self._step: Step | None = None
        self._attempts = 0
        self._transitions = 0
        self._pending: Instruction | None = None

    @property
    def done(self) -> bool:
        return isinstance(self._pending, Done)

    def start(self) -> Instruction:
        if self._pending is not None:
            raise IvrError("session already started")
        return self._enter(self.flow.start)

    def feed(self, result: str | None) -> Instruction:
        """The result of the last instruction: digits for Collect ('' / None = timeout)."""
        pending, step = self._pending, self._step
        if pending is None or step is None:
            raise IvrError("feed() before start()")
        if isinstance(pending, Done):
            raise IvrError("the session is over")
        if isinstance(pending, Play | SayDigits):
            assert step.next is not None
            return self._follow(step.next)
        digits = "".join(ch for ch in (result or "") if ch in "0123456789*#")
        if step.kind == "menu":
            return self._menu_result(step, digits)
        return self._collect_result(step, digits)

    # ---------------------------------------------------------------- internals

    def _log(self, text: str) -> None:
        self.trace.append(f"{self.flow.file}:{self._step.line if self._step else 0} {text}")

    def _emit(self, instruction: Instruction) -> Instruction:
        self._pending = instruction
        return instruction

    def _finish(self, decision: Decision | None) -> Instruction:
        what = decision.describe() if decision else "back to the routing rules"
        self._log(f"done: {what}")
        return self._emit(Done(dict(self.answers), decision, tuple(self.trace)))

    def _enter(self, name: str) -> Instruction:
        self._transitions += 1
        if self._transitions > MAX_TRANSITIONS:
            self._log("too many steps without an answer: giving up")
            return self._finish(GOODBYE)
        step = self.flow.steps[name]
        self._step, self._attempts = step, 0
        self._log(f"step {name} ({step.kind})")
        if step.kind == "play":
            return self._emit(Play(step.sounds))
        if step.kind == "say_digits":
            assert step.var is not None
            return self._emit(SayDigits(self.answers.get(step.var, "")))
        return self._emit(self._collect(step, ()))

    def _collect(self, step: Step, before: tuple[str, ...]) -> Collect:
        return Collect(
            before + step.sounds, step.min_len, step.max_len, step.timeout, step.terminator
        )

    def _follow(self, target: Target) -> Instruction:
        self.answers.update(target.set)
        if target.goto is not None:
            return self._enter(target.goto)
        if target.route:
            return self._finish(None)
        return self._finish(target.decision)

    def _retry(
        self, step: Step, why: str, special: Target | None, sounds: tuple[str, ...]
    ) -> Instruction:
        self._log(why)
        if special is not None:
            return self._follow(special)
        self._attempts += 1
        if self._attempts > step.retries:
            self._log(f"no valid answer after {self._attempts} attempts: on_fail")
            assert step.on_fail is not None
            return self._follow(step.on_fail)
        return self._emit(self._collect(step, sounds))

    def _menu_result(self, step: Step, digits: str) -> Instruction:
        if not digits:
            return self._retry(step, "timeout", step.on_timeout, step.retry_prompt)
        target = step.options.get(digits)
        if target is None:
            return self._retry(step, f"invalid option {digits!r}", step.on_invalid, step.invalid)
        self._log(f"option {digits}")
        if step.var:
            self.answers[step.var] = digits
        return self._follow(target)

    def _collect_result(self, step: Step, digits: str) -> Instruction:
        if step.terminator and digits.endswith(step.terminator):
            digits = digits[: -len(step.terminator)]
        if not digits:
            return self._retry(step, "timeout", None, step.retry_prompt)
        if not digits.isdigit() or not step.min_len <= len(digits) <= step.max_len:
            return self._retry(step, f"invalid input ({len(digits)} digits)", None, step.invalid)
        assert step.var is not None and step.next is not None
        self.answers[step.var] = digits
        self._log(f"{step.var} = {digits}")
        return self._follow(step.next)
