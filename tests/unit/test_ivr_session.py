"""IVR interpreter: menus, timeouts, retries, invalid input, nesting, digit collection."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ctiserver.core.ivr import Collect, Done, IvrError, IvrSession, Play, SayDigits, load_flows
from ctiserver.core.rules.decision import Decision

ROOT = Path(__file__).resolve().parents[2]


def flow(text: str):
    flows, problems = load_flows({"f.yaml": textwrap.dedent(text)})
    assert not [p for p in problems if p.severity == "error"], [str(p) for p in problems]
    return flows["f"]


def main_menu():
    flows, problems = load_flows(
        {"main_menu.yaml": (ROOT / "ivr_flows/main_menu.yaml").read_text()}
    )
    assert problems == []
    return flows["main_menu"]


def drive(session: IvrSession, presses: list[str | None]):
    """Feed key presses to Collects (None = timeout); Play/Say get None. Returns (Done, log)."""
    log = []
    step = session.start()
    while not isinstance(step, Done):
        log.append(step)
        step = session.feed(presses.pop(0) if isinstance(step, Collect) else None)
    assert presses == [], "not all presses were used"
    return step, log


def test_two_level_menu_with_collection_routes_with_answers():
    done, log = drive(IvrSession(main_menu()), ["2", "1", "123456"])
    assert done.decision is None  # back to the routing rules
    assert done.answers == {"department": "billing", "customer_number": "123456"}
    assert log[0] == Play(("custom/welcome",))
    assert log[1] == Collect(("custom/main-menu",), 1, 1, 5.0, "")
    assert log[2].sounds == ("custom/support-menu",)
    assert log[3] == Collect(("vm-enter-num-to-call",), 4, 10, 6.0, "#")
    assert log[4] == SayDigits("123456")


def test_option_with_an_action_ends_the_flow():
    done, _ = drive(IvrSession(main_menu()), ["0"])
    assert done.decision == Decision("extension", extension="1001")
    assert done.answers == {"department": "operator"}


def test_sales_sets_answer_and_routes():
    done, _ = drive(IvrSession(main_menu()), ["1"])
    assert (done.decision, dict(done.answers)) == (None, {"department": "sales"})


def test_star_goes_back_up_a_level():
    done, log = drive(IvrSession(main_menu()), ["2", "*", "1"])
    assert [s.sounds[-1] for s in log if isinstance(s, Collect)] == [
        "custom/main-menu",
        "custom/support-menu",
        "custom/main-menu",
    ]
    assert done.answers == {"department": "sales"}


def test_timeout_and_invalid_reprompt_then_on_fail():
    session = IvrSession(main_menu())
    done, log = drive(session, [None, "7", "9"])  # retries: 2 -> three attempts
    collects = [s for s in log if isinstance(s, Collect)]
    assert collects[1].sounds == ("please-try-again", "custom/main-menu")
    assert collects[2].sounds == ("option-is-invalid", "custom/main-menu")
    assert len(collects) == 3
    assert done.decision == Decision("extension", extension="1001")  # on_fail: operator
    assert any("no valid answer after 3 attempts" in t for t in done.trace)


def test_retries_succeed_before_the_limit():
    done, _ = drive(IvrSession(main_menu()), [None, "5", "1"])
    assert done.answers == {"department": "sales"}


def test_collection_bounds_terminator_and_on_fail():
    # retries: 1; too short, then valid with terminator
    done, log = drive(IvrSession(main_menu()), ["2", "1", "12#", "98765#"])
    assert done.answers["customer_number"] == "98765"
    assert log[-2].sounds == ("option-is-invalid", "vm-enter-num-to-call")
    # too long then timeout: on_fail routes without a number
    done, _ = drive(IvrSession(main_menu()), ["2", "1", "12345678901", None])
    assert done.decision is None
    assert "customer_number" not in done.answers
    assert done.answers["department"] == "billing"


DEEP = """
start: l1
steps:
  l1:
    menu:
      prompt: [digits/1]
      options: {"1": {goto: l2}}
  l2:
    menu:
      prompt: [digits/2]
      options: {"1": {goto: l3}, "#": {goto: l1}}
  l3:
    menu:
      prompt: [digits/3]
      options: {"1": {goto: l4}}
  l4:
    menu:
      prompt: [digits/4]
      var: choice
      on_timeout: {queue: support}
      on_invalid: {message: [option-is-invalid, goodbye]}
      options:
        "42": {set: {level: four}, route: true}
"""


def test_nested_menus_any_depth_and_two_digit_options():
    done, log = drive(IvrSession(flow(DEEP)), ["1", "1", "1", "42"])
    assert done.answers == {"choice": "42", "level": "four"}
    assert [c.sounds for c in log] == [("digits/1",), ("digits/2",), ("digits/3",), ("digits/4",)]
    assert log[-1].max_len == 2


def test_on_timeout_and_on_invalid_branches():
    done, _ = drive(IvrSession(flow(DEEP)), ["1", "1", "1", None])
    assert done.decision == Decision("queue", queue="support")
    done, _ = drive(IvrSession(flow(DEEP)), ["1", "1", "1", "7"])
    assert done.decision == Decision("message", message=("option-is-invalid", "goodbye"))


def test_loop_without_input_is_cut_off():
    looping = flow("""
        steps:
          a: {play: {sounds: [beep], next: {goto: b}}}
          b: {play: {sounds: [beep], next: {goto: a}}}
        """)
    done, log = drive(IvrSession(looping), [])
    assert done.decision is not None and done.decision.message == ("goodbye",)
    assert len(log) == 200


def test_driving_errors():
    session = IvrSession(main_menu())
    with pytest.raises(IvrError):
        session.feed("1")
    drive(session, ["1"])
    with pytest.raises(IvrError):
        session.feed("1")
    with pytest.raises(IvrError):
        session.start()


@pytest.mark.parametrize(
    "text,line,fragment",
    [
        (
            "steps:\n  a:\n    menu:\n      prompt: [x]\n      options: {'1': {goto: nowhere}}\n",
            5,
            "goto 'nowhere'",
        ),
        ("steps:\n  a:\n    dance: {}\n", 2, "must be one of"),
        (
            "steps:\n  a:\n    menu:\n      prompt: [x]\n      options: {'x': {route: true}}\n",
            5,
            "use digits",
        ),
        (
            "steps:\n  a:\n    menu:\n      prompt: [x]\n      timeout: 100\n      options: {'1': {route: true}}\n",  # noqa: E501
            5,
            "timeout must be",
        ),
        (
            "steps:\n  a:\n    collect:\n      prompt: [x]\n      var: 1abc\n      next: {route: true}\n",  # noqa: E501
            5,
            "bad variable name",
        ),
        (
            "steps:\n  a:\n    play:\n      sounds: ['../../etc/passwd']\n      next: {route: true}\n",  # noqa: E501
            4,
            "bad sound name",
        ),
        (
            "steps:\n  a:\n    play:\n      sounds: [x]\n      next: {queue: sales, goto: a}\n",
            5,
            "goto cannot be combined",
        ),
        (
            "start: b\nsteps:\n  a:\n    play: {sounds: [x], next: {route: true}}\n",
            1,
            "start step 'b'",
        ),
    ],
)
def test_flow_errors_have_lines(text, line, fragment):
    flows, problems = load_flows({"f.yaml": text})
    errors = [str(p) for p in problems if p.severity == "error"]
    assert flows == {}
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"f.yaml:{line}: error:"), errors
    assert fragment in errors[0]


def test_unreachable_step_is_a_warning():
    flows, problems = load_flows(
        {
            "f.yaml": "steps:\n  a: {play: {sounds: [x], next: {route: true}}}\n"
            "  b: {play: {sounds: [y], next: {route: true}}}\n"
        }
    )
    assert "f" in flows
    assert [str(p) for p in problems] == ["f.yaml:3: warning: rule 'f': step 'b' is never reached"]
