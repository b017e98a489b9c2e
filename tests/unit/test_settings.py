"""Settings are read and checked in one place, and every one of them is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from numgate.errors import ConfigurationError
from numgate.settings import ENV, Settings

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(ENV))
def test_every_setting_is_in_the_readme(name: str) -> None:
    assert f"`{name}`" in README


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NUMGATE_PORT": "0"}, "NUMGATE_PORT must be at least 1"),
        ({"NUMGATE_LOG_LEVEL": "loud"}, "NUMGATE_LOG_LEVEL must be one of debug"),
        ({"NUMGATE_SANDBOX": "maybe"}, "NUMGATE_SANDBOX must be true or false"),
        ({"NUMGATE_CALLBACK_TIMEOUT": "nan"}, "must be a finite number"),
        ({"NUMGATE_MAX_BODY": "12"}, "NUMGATE_MAX_BODY must be at least 1024"),
        ({"NUMGATE_WABA_UPSTREAM": "meta"}, "needs NUMGATE_META_TOKEN"),
        ({"NUMGATE_WORKER_CHUNK": "many"}, "NUMGATE_WORKER_CHUNK must be an integer"),
    ],
)
def test_a_bad_value_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env)


def test_good_values() -> None:
    s = Settings.from_env(
        {
            "NUMGATE_PORT": "9000",
            "NUMGATE_LOG_LEVEL": "DEBUG",
            "NUMGATE_SANDBOX": "",
            "NUMGATE_DB_TIMEOUT": "1.5",
            "NUMGATE_WABA_UPSTREAM": "simulator",
        }
    )
    assert (s.port, s.log_level, s.sandbox, s.db_timeout_s) == (9000, "debug", False, 1.5)
    assert Settings.from_env({}).resolved_max_connections > 64


def test_outside_the_sandbox_the_whatsapp_upstream_is_an_explicit_choice() -> None:
    with pytest.raises(ConfigurationError, match="NUMGATE_WABA_UPSTREAM is not set"):
        Settings.from_env({"NUMGATE_SANDBOX": "false"})
    assert Settings.from_env({}).resolved_waba_upstream == "simulator"
    kept = Settings.from_env({"NUMGATE_SANDBOX": "false", "NUMGATE_WABA_UPSTREAM": "simulator"})
    assert kept.resolved_waba_upstream == "simulator"
