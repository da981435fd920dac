"""`rules check`: every mistake is reported with file:line and the rule's name."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

from ctiserver.core.rules import Known, load_ruleset
from ctiserver.core.rules.expr import Env, ExprError, compile_expr
from ctiserver.core.rules.functions import make_functions
from ctiserver.rules.cli import main as cli_main
from ctiserver.rules.cli import run

KNOWN = Known(
    queues=frozenset({"sales", "support"}),
    agents=frozenset({"1001", "1002"}),
    flows=frozenset({"main_menu"}),
)


def problems(text: str, known: Known = KNOWN) -> list[str]:
    result = load_ruleset({"r.yaml": textwrap.dedent(text)}, known)
    assert not result.ok
    return [str(p) for p in result.errors]


def only(text: str, known: Known = KNOWN) -> str:
    found = problems(text, known)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(
    "text,line,fragment",
    [
        # YAML syntax
        ("rules:\n  - name: a\n    then: {queue: sales\n  - name: b\n", 4, "YAML"),
        ("rules:\n  - name: a\n    if: x == [1\n    then: {queue: sales}\n", 3, "never closed"),
        ("rules:\n  - name: a\n    name: b\n    queue: sales\n", 3, "duplicate key 'name'"),
        # expression syntax / unknown names / functions
        ("rules:\n  - name: a\n    if: dnis ==\n    then: {queue: sales}\n", 3, "syntax error"),
        (
            "rules:\n  - name: a\n    if: dniss == '1'\n    then: {queue: sales}\n",
            3,
            "unknown name 'dniss'",
        ),
        (
            "rules:\n  - name: a\n    if: opened('x')\n    then: {queue: sales}\n",
            3,
            "unknown function 'opened'",
        ),
        (
            "rules:\n  - name: a\n    if: matches(dnis)\n    then: {queue: sales}\n",
            3,
            "takes 2 arguments",
        ),
        # references
        ("rules:\n  - name: a\n    queue: salse\n", 3, "unknown queue 'salse'"),
        ("rules:\n  - name: a\n    callback: nope\n", 3, "unknown queue 'nope'"),
        ("rules:\n  - name: a\n    agent: '1009'\n", 3, "unknown agent '1009'"),
        ("rules:\n  - name: a\n    ivr: other_menu\n", 3, "unknown IVR flow 'other_menu'"),
        (
            "rules:\n  - name: a\n    if: open('nights')\n    then: {queue: sales}\n",
            3,
            "unknown schedule 'nights'",
        ),
        (
            "rules:\n  - name: a\n    if: lookup('users', dnis)\n    then: {queue: sales}\n",
            3,
            "table 'users' is not allowed",
        ),
        (
            "rules:\n  - name: a\n    if: holiday('XX')\n    then: {queue: sales}\n",
            3,
            "unknown holiday country",
        ),
        # structure
        ("rules:\n  - name: a\n    if: digits == '1'\n", 2, "'if' without 'then'"),
        (
            "rules:\n  - name: a\n    if: digits == '1'\n    then: {queue: sales}\n    els: {queue: sales}\n",  # noqa: E501
            5,
            "unknown key 'els'",
        ),
        ("rules:\n  - name: a\n    queue: sales\n    ivr: main_menu\n", 2, "one action per rule"),
        (
            "rules:\n  - name: a\n    queue: sales\n    priority: high\n",
            4,
            "priority must be a whole number",
        ),
        (
            "rules:\n  - name: a\n    if: digits == '1'\n    then: {queue: sales}\n  - name: b\n    else: {queue: sales}\n",  # noqa: E501
            5,
            "need an 'if' first",
        ),
        ("schedules:\n  s:\n    hours: {mon-fry: '09:00-18:00'}\nrules: []\n", 2, "bad weekday"),
        ("schedules:\n  s:\n    timezone: Mars/Olympus\nrules: []\n", 2, "unknown time zone"),
    ],
)
def test_each_error_has_its_line(text, line, fragment):
    message = only(text)
    assert message.startswith(f"r.yaml:{line}: error:"), message
    assert fragment in message


def test_error_names_the_rule():
    message = only("rules:\n  - name: VIP line\n    queue: vipp\n")
    assert "rule 'VIP line'" in message


def test_unreachable_after_unconditional_rule():
    message = only("""\
        rules:
          - name: catch all
            queue: support
          - name: never
            if: digits == '1'
            then: {queue: sales}
        """)
    assert message.startswith("r.yaml:4: error: rule 'never': unreachable")
    assert "'catch all' (line 2)" in message


def test_unreachable_after_if_else_that_always_decides_and_after_always_true_if():
    message = only("""\
        rules:
          - name: both ways
            if: digits == '1'
            then: {queue: sales}
            else: {queue: support}
          - name: never
            queue: sales
        """)
    assert message.startswith("r.yaml:6:") and "unreachable" in message
    message = only("""\
        rules:
          - name: silly
            if: 1 == 1
            then: {queue: sales}
            else: {queue: support}
        """)
    assert message.startswith("r.yaml:5:") and "always true" in message


def test_agent_of_without_fallback_does_not_make_later_rules_unreachable():
    result = load_ruleset(
        {
            "r.yaml": "rules:\n  - name: a\n    agent_of: customer.assigned_agent\n"
            "  - name: b\n    queue: sales\n"
        },
        KNOWN,
    )
    assert result.ok, [str(p) for p in result.problems]


@pytest.mark.parametrize(
    "first,second",
    [
        ("matches(caller_id, '+3491*')", "matches(caller_id, '+34915*')"),
        ("matches(caller_id, '+3491*')", "matches(caller_id, '0034915?????')"),
        ("matches(caller_id, '+34*')", "caller_id == '915551234' and digits == '1'"),
        ("dnis == '900100200'", "dnis == '+34900100200'"),
        ("matches(dnis, '+34900??????')", "matches(dnis, '+349001002??')"),
    ],
)
def test_wildcard_shadowing_is_an_error(first, second):
    message = only(f"""\
        rules:
          - name: wide
            if: "{first}"
            then: {{queue: sales}}
          - name: narrow
            if: "{second}"
            then: {{queue: support}}
        """)
    assert message.startswith("r.yaml:5: error: rule 'narrow': shadowed"), message
    assert "'wide' (line 2)" in message


@pytest.mark.parametrize(
    "first,second",
    [
        ("matches(caller_id, '+34915*')", "matches(caller_id, '+3491*')"),  # wider after narrower
        ("matches(caller_id, '+3491*')", "matches(dnis, '+3491*')"),  # other name
        ("matches(caller_id, '+349155512??')", "matches(caller_id, '+34915551*')"),
        ("matches(caller_id, '+3491*') and digits == '1'", "matches(caller_id, '+34915*')"),
    ],
)
def test_no_false_shadowing(first, second):
    result = load_ruleset(
        {
            "r.yaml": textwrap.dedent(f"""\
        rules:
          - name: a
            if: "{first}"
            then: {{queue: sales}}
          - name: b
            if: "{second}"
            then: {{queue: support}}
        """)
        },
        KNOWN,
    )
    assert result.ok, [str(p) for p in result.problems]


# ------------------------------------------------------------------ hostile expressions


ENV = Env(
    names=frozenset({"caller_id", "customer"}),
    functions=make_functions({}, frozenset(), "UTC"),
)


@pytest.mark.parametrize(
    "expr,fragment",
    [
        ("caller_id.__class__", "'_' are not allowed"),
        ("customer._secret", "'_' are not allowed"),
        ("().__class__.__bases__[0].__subclasses__()", "only the documented functions"),
        ("().__class__", "'_' are not allowed"),
        ("9**9**9", "number too large"),
        ("2 ** 1000", "number too large"),
        ("'a'*10**9", "too long"),
        ("'a' * 2000", "too long"),
        ("(lambda: 1)()", "only the documented functions"),
        ("lambda: 1", "lambda is not allowed"),
        ("[x for x in caller_id]", "list comprehension is not allowed"),
        ("{c: 1 for c in 'ab'}", "dict comprehension is not allowed"),
        ("f'{caller_id}'", "f-string is not allowed"),
        ("__import__('os')", "unknown function '__import__'"),
        ("eval('1')", "unknown function 'eval'"),
        ("open('x').read()", "only the documented functions"),
        ("(y := 1)", "':=' is not allowed"),
        ("caller_id == '" + "1" * 600 + "'", "too long"),
        ("1 + " * 120 + "1", "too"),
        ("{1, 2}", "set literal is not allowed"),
        ("str(*caller_id)", "only plain positional arguments"),
        ("1 / 0", "ZeroDivisionError"),
    ],
)
def test_hostile_expressions_rejected_at_load(expr, fragment):
    with pytest.raises(ExprError) as info:
        compile_expr(expr, ENV)
    assert fragment in info.value.message


def test_runtime_limits_hold_for_values_from_the_call():
    env = Env(names=frozenset({"n", "s"}), functions=ENV.functions)
    with pytest.raises(Exception, match="too large"):
        compile_expr("n ** n", env)({"n": 9**9, "s": ""})
    with pytest.raises(Exception, match="too long"):
        compile_expr("s * n", env)({"n": 10**9, "s": "a"})
    with pytest.raises(Exception, match="record"):
        compile_expr("s.upper", env)({"n": 1, "s": "a"})


# ------------------------------------------------------------------ the command


def write(tmp_path: Path, rules: str, flow: str | None = None) -> Path:
    rdir = tmp_path / "routing_rules"
    rdir.mkdir()
    (rdir / "main.yaml").write_text(textwrap.dedent(rules))
    fdir = tmp_path / "ivr_flows"
    fdir.mkdir()
    if flow:
        (fdir / "main_menu.yaml").write_text(textwrap.dedent(flow))
    return rdir


def test_check_command_points_at_the_line(tmp_path, capsys):
    rdir = write(
        tmp_path,
        """\
        config:
          known_queues: [sales]
        rules:
          - name: good
            if: digits == '1'
            then: {queue: sales}
          - name: typo
            if: digits == '2'
            then: {queue: sale}
        """,
    )
    code = cli_main(["rules", "check", str(rdir)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{rdir}/main.yaml:9: error: rule 'typo': unknown queue 'sale'" in out
    assert "would be refused" in out


def test_check_command_ok_and_config_toml(tmp_path):
    rdir = write(tmp_path, "rules:\n  - name: a\n    queue: sales\n")
    (tmp_path / "ctiserver.toml").write_text('[[queues]]\nname = "support"\n')
    out = io.StringIO()
    import argparse

    from ctiserver.rules.cli import add_subcommands

    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["rules", "check", str(rdir), "--config", str(tmp_path / "ctiserver.toml")]
    )
    assert run(args, out) == 1
    assert "unknown queue 'sales' (known: support)" in out.getvalue()
    out = io.StringIO()
    args = parser.parse_args(["rules", "check", str(rdir), "--queues", "sales"])
    assert run(args, out) == 0
    assert out.getvalue().startswith("ok: version ")


def test_shipped_examples_check_clean(capsys):
    root = Path(__file__).resolve().parents[2]
    code = cli_main(
        ["rules", "check", str(root / "routing_rules"), "--flows", str(root / "ivr_flows")]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "warning" not in out


def test_test_command_prints_decision_and_trace(capsys):
    root = Path(__file__).resolve().parents[2]
    code = cli_main(
        [
            "rules",
            "test",
            str(root / "routing_rules"),
            "--flows",
            str(root / "ivr_flows"),
            "--caller",
            "+34 91 555 1234",
            "--dnis",
            "900100200",
            "--at",
            "2026-12-24 21:30",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "call from +34915551234 to +34900100200 at Thu 2026-12-24 21:30 CET" in out
    assert "[closed] if not open('support'): true" in out
    assert "decision: play vm-nobodyavail goodbye, then hang up  [rule 'closed']" in out


def test_test_command_runs_the_ivr_with_key_presses(capsys):
    root = Path(__file__).resolve().parents[2]
    code = cli_main(
        [
            "rules",
            "test",
            str(root / "routing_rules"),
            "--flows",
            str(root / "ivr_flows"),
            "--caller",
            "600123456",
            "--dnis",
            "900100200",
            "--at",
            "2026-12-22 11:00",
            "--press",
            "2,1,12345#",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "answers: {'department': 'billing', 'customer_number': '12345'}" in out
    assert out.rstrip().endswith("[rule 'billing with a customer number']")


def _warnings(first: str, second: str) -> list[str]:
    result = load_ruleset(
        {
            "r.yaml": textwrap.dedent(f"""\
        rules:
          - name: wide
            if: "{first}"
            then: {{queue: sales}}
          - name: narrow
            if: "{second}"
            then: {{queue: support}}
        """)
        },
        KNOWN,
    )
    assert result.ok, [str(p) for p in result.problems]
    return [str(p) for p in result.warnings]


@pytest.mark.parametrize(
    "first,second,overlap",
    [
        ("matches(caller_id, '+34?1*')", "matches(caller_id, '+349*')", "+349*"),
        ("matches(caller_id, '*1234')", "matches(caller_id, '+3491*')", "+3491*"),
        ("matches(dnis, '9001?0*')", "matches(dnis, '90010?5*') and digits == '1'", "90010?5*"),
    ],
)
def test_partly_shadowed_wildcards_are_a_warning(first, second, overlap):
    (message,) = _warnings(first, second)
    assert message.startswith("r.yaml:5: warning: rule 'narrow': partly shadowed"), message
    assert f"'{overlap}'" in message and "'wide' (line 2)" in message


@pytest.mark.parametrize(
    "first,second",
    [
        ("matches(caller_id, '+3491*')", "matches(caller_id, '+34*')"),  # specific, then general
        ("matches(caller_id, '+3491*')", "matches(caller_id, '+3492*')"),  # disjoint
        ("matches(caller_id, '*1')", "matches(caller_id, '*2')"),  # disjoint
        ("caller_id == '+34915551234'", "matches(caller_id, '+34*')"),  # one number first
        ("matches(caller_id, '+34?1*')", "matches(dnis, '+349*')"),  # other name
        ("matches(caller_id, '+34?1*') and digits == '1'", "matches(caller_id, '+349*')"),
    ],
)
def test_no_partial_shadowing_warning(first, second):
    assert _warnings(first, second) == []
