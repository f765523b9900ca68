"""``NAME:key=value,...`` specs and their coercion into frozen Config dataclasses; display labels."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest

from gradbench.config import build_config, label, non_default, parse_spec
from gradbench.errors import UsageError

OWNER = "estimator 'demo'"


@dataclass(frozen=True)
class DemoConfig:
    tau: float = 1.0
    hard: bool = False
    steps: int = 10
    mode: Literal["fast", "exact"] = "fast"
    tag: str = "x"
    limit: int | None = None

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")


def build(values):
    return build_config(DemoConfig, values, OWNER)


# ---------------------------------------------------------------- parse_spec


def test_parse_spec_name_only():
    assert parse_spec("dab") == ("dab", {})
    assert parse_spec("dab:") == ("dab", {})


def test_parse_spec_pairs_keep_values_as_strings():
    assert parse_spec("dab:gamma=5,hidden=64,mode=a=b") == ("dab", {"gamma": "5", "hidden": "64", "mode": "a=b"})


def test_parse_spec_strips_whitespace_and_empty_items():
    assert parse_spec("  gumbel : tau = 0.5 ,, hard= true , ") == ("gumbel", {"tau": "0.5", "hard": "true"})


@pytest.mark.parametrize("spec", ["", "  ", ":tau=1", "gumbel:tau", "gumbel:tau=1,hard", "gumbel:=1", "gumbel: =1"])
def test_parse_spec_bad_items_are_usage_errors(spec):
    with pytest.raises(UsageError) as info:
        parse_spec(spec)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- build_config: coercion


def test_build_config_defaults():
    assert build(None) == DemoConfig()
    assert build({}) == DemoConfig()


@pytest.mark.parametrize(("key", "text", "expected"), [
    ("steps", "5", 5),
    ("steps", "1e3", 1000),
    ("steps", "2.0", 2),
    ("steps", "-3", -3),
    ("tau", "0.5", 0.5),
    ("tau", "1e-3", 0.001),
    ("tau", "2", 2.0),
    ("hard", "true", True),
    ("hard", "True", True),
    ("hard", "yes", True),
    ("hard", "1", True),
    ("hard", "no", False),
    ("hard", "false", False),
    ("hard", "off", False),
    ("mode", "exact", "exact"),
    ("tag", "none", "none"),
    ("tag", "5", "5"),
    ("limit", "none", None),
    ("limit", "None", None),
    ("limit", "5", 5),
    ("limit", "1e3", 1000),
])
def test_build_config_coerces_strings(key, text, expected):
    value = getattr(build({key: text}), key)
    assert value == expected
    assert type(value) is type(expected)


def test_build_config_accepts_typed_values_and_a_base():
    cfg = build({"steps": 7, "tau": 3, "hard": True, "limit": None})
    assert (cfg.steps, cfg.tau, cfg.hard, cfg.limit) == (7, 3.0, True, None)
    assert type(cfg.tau) is float
    on_top = build_config(DemoConfig, {"tag": "y"}, OWNER, base=cfg)
    assert on_top == dataclasses.replace(cfg, tag="y")


def test_unknown_key_names_it_and_lists_valid_keys():
    with pytest.raises(UsageError) as info:
        build({"tua": "0.5"})
    msg = str(info.value)
    assert "'tua'" in msg
    assert OWNER in msg
    for key in ("tau", "hard", "steps", "mode", "tag", "limit"):
        assert key in msg.split("valid keys:")[1]


@pytest.mark.parametrize(("key", "text", "expected_type"), [
    ("steps", "five", "int"),
    ("steps", "1.5", "int"),
    ("steps", "", "int"),
    ("tau", "fast", "float"),
    ("hard", "maybe", "true/false"),
    ("limit", "lots", "int"),
])
def test_bad_value_names_key_and_expected_type(key, text, expected_type):
    with pytest.raises(UsageError) as info:
        build({key: text})
    msg = str(info.value)
    assert key in msg
    assert repr(text) in msg
    assert f"expected {expected_type}" in msg


@pytest.mark.parametrize(("key", "value"), [("steps", True), ("steps", 2.5), ("tau", False)])
def test_bad_typed_value(key, value):
    with pytest.raises(UsageError, match=key):
        build({key: value})


def test_literal_bad_value_lists_the_choices():
    with pytest.raises(UsageError) as info:
        build({"mode": "slow"})
    msg = str(info.value)
    assert "mode" in msg and "'slow'" in msg
    assert "fast" in msg and "exact" in msg


def test_post_init_value_error_becomes_usage_error():
    with pytest.raises(UsageError) as info:
        build({"tau": "0"})
    msg = str(info.value)
    assert msg.startswith(OWNER)
    assert "tau must be > 0" in msg


# ---------------------------------------------------------------- display


def test_non_default_keeps_only_changed_fields_in_field_order():
    assert non_default(DemoConfig()) == {}
    cfg = DemoConfig(hard=True, tau=0.5)
    assert non_default(cfg) == {"tau": 0.5, "hard": True}
    assert list(non_default(cfg)) == ["tau", "hard"]
    assert non_default(cfg, reference=DemoConfig(tau=0.5)) == {"hard": True}


def test_label():
    assert label("gumbel", non_default(build({"tau": "0.5", "hard": "true"}))) == "gumbel(tau=0.5, hard=true)"
    assert label("gumbel", {}) == "gumbel"
    assert label("x", {"limit": None, "steps": 1000, "tau": 1e-4, "hard": False}) == \
        "x(limit=None, steps=1000, tau=0.0001, hard=false)"


# ---------------------------------------------------------------- one-line errors (what the CLI prints)


@pytest.mark.parametrize("make_error", [
    lambda: parse_spec("gumbel:tau"),
    lambda: build({"nope": "1"}),
    lambda: build({"steps": "x"}),
    lambda: build({"mode": "slow"}),
    lambda: build({"limit": "x"}),
    lambda: build({"tau": "-1"}),
], ids=["spec", "unknown-key", "bad-int", "literal", "optional", "post-init"])
def test_errors_are_one_line(make_error):
    with pytest.raises(UsageError) as info:
        make_error()
    msg = str(info.value)
    assert msg and "\n" not in msg
