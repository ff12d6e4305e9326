from dataclasses import dataclass, field
from typing import Literal

import pytest

from pocketml.config import from_mapping, load_toml
from pocketml.errors import PocketMLError


@dataclass
class Inner:
    name: str = "x"  # a name
    ratio: float = 0.5  # a fraction


@dataclass
class Outer:
    mode: Literal["fast", "slow"] = "fast"  # how hard to try
    size: tuple[int, int] = (96, 96)  # pixels
    tags: list[str] = field(default_factory=list)  # free labels
    inner: Inner = field(default_factory=Inner)  # nested table
    limit: int | None = None  # optional cap


def test_valid_mapping_builds_nested_dataclasses_and_coerces_types():
    cfg = from_mapping(Outer, {"mode": "slow", "size": [64, 48], "tags": ["a"], "inner": {"ratio": 1}}, "train")
    assert cfg == Outer(mode="slow", size=(64, 48), tags=["a"], inner=Inner(ratio=1.0))
    assert isinstance(cfg.inner.ratio, float)


def test_unknown_key_names_the_key_and_suggests_the_nearest():
    with pytest.raises(PocketMLError) as exc:
        from_mapping(Outer, {"inner": {"raito": 0.2}}, "train")
    message = str(exc.value)
    assert "train.inner.raito" in message and "did you mean 'ratio'" in message
    assert "\n" not in message


def test_bad_value_names_key_value_and_accepted_values():
    with pytest.raises(PocketMLError, match=r"train.mode = 'medium' is not accepted; expected one of 'fast', 'slow'"):
        from_mapping(Outer, {"mode": "medium"}, "train")
    with pytest.raises(PocketMLError, match=r"size\[1\] = 'big'"):
        from_mapping(Outer, {"size": [1, "big"]}, "train")
    with pytest.raises(PocketMLError, match="train.limit = True is not accepted; expected int or nothing"):
        from_mapping(Outer, {"limit": True}, "train")


def test_load_toml_reports_syntax_errors_and_missing_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(PocketMLError, match="not valid TOML"):
        load_toml(bad)
    with pytest.raises(PocketMLError, match="does not exist"):
        load_toml(tmp_path / "nope.toml")


def test_flags_take_type_and_default_from_the_config_class_and_validate_like_toml(capsys):
    import argparse

    import pytest

    from pocketml.config import Flag, add_flags, from_settings, settings_from_flags
    from pocketml.configs.bench import BenchConfig
    from pocketml.errors import PocketMLError

    flags = (Flag("--threads", "threads", "CPU thread counts"), Flag("--no-memory", "measure_memory", "skip memory"))
    parser = argparse.ArgumentParser()
    add_flags(parser, BenchConfig, flags)
    assert "(default: 1,4)" in parser.format_help() and "N,N,..." in parser.format_help()
    args = parser.parse_args(["--threads", "2,8", "--no-memory"])
    assert settings_from_flags(args, flags) == {"threads": [2, 8], "measure_memory": False}
    assert settings_from_flags(parser.parse_args([]), flags) == {}  # nothing given: the TOML or default stands
    with pytest.raises(PocketMLError, match=r"threads = \[0\] is not accepted"):
        from_settings(BenchConfig, settings_from_flags(parser.parse_args(["--threads", "0"]), flags), "bench")
    with pytest.raises(SystemExit):
        parser.parse_args(["--threads", "four"])
    assert "'four' is not a comma-separated list of int" in capsys.readouterr().err
