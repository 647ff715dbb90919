"""Every setting in one typed place (ridesync/settings.py): defaults, a bad
value refused at start naming its variable, and the README's table made from it."""
import os
import subprocess
import sys

import pytest

from ridesync.settings import BadSetting, Settings, readme_with_table
from tests.support import ROOT, free_port


def test_settings_have_working_defaults_and_read_the_environment():
    default = Settings.from_env({})
    assert (default.port, default.osrm_timeout, default.osrm_enabled, default.cors_origins) == (8081, 10.0, True, ("*",))
    assert (default.osrm_breaker_failures, default.osrm_breaker_reset, default.fare_ttl) == (5, 30.0, 900.0)
    assert (default.trip_listen_addr, default.redis_url, default.log_level) == ("localhost:9093", None, "info")
    custom = Settings.from_env({
        "OSRM_ENABLED": "false", "CORS_ORIGINS": "https://a.example, https://b.example",
        "OSRM_URL": "http://osrm.local/", "AUTH_MODE": " Open ", "REDIS_URL": "", "TRIP_METRICS_PORT": "9100",
        "TRIP_SERVICE_ADDR": "dns:///trip:9093", "DRIVER_SERVICE_ADDR": "driver:9092",
    })
    assert not custom.osrm_enabled
    assert custom.cors_origins == ("https://a.example", "https://b.example")
    assert (custom.osrm_url, custom.auth_mode, custom.redis_url, custom.trip_metrics_port) == (
        "http://osrm.local", "open", None, 9100)
    assert (custom.trip_listen_addr, custom.driver_listen_addr) == (None, "driver:9092")  # replicas: say where


def test_an_empty_list_is_an_empty_list_not_the_default():
    assert Settings.from_env({"CORS_ORIGINS": ""}).cors_origins == ()


@pytest.mark.parametrize("variable, value, said", [
    ("PORT", "eighty", "PORT='eighty' is not a whole number"),
    ("OSRM_TIMEOUT", "-1", "OSRM_TIMEOUT='-1' is less than 0"),
    ("FARE_TTL", "nan", "FARE_TTL='nan' is not a finite number"),
    ("PREVIEW_RATE", "0", "PREVIEW_RATE='0' is not above 0"),
    ("PREVIEW_BURST", "0", "PREVIEW_BURST='0' is less than 1"),
    ("OSRM_ENABLED", "maybe", "OSRM_ENABLED='maybe' is not true or false"),
    ("AUTH_MODE", "tokens", "AUTH_MODE='tokens' is not one of token, open"),
    ("METRICS_ALLOW", "10.0.0.0/8,intranet", "METRICS_ALLOW='10.0.0.0/8,intranet' is not a list of networks"),
    ("AMQP_URL", "localhost", "AMQP_URL='localhost' is not a URL"),
    ("DRIVER_METRICS_PORT", "70000", "DRIVER_METRICS_PORT='70000' is not a port"),
])
def test_a_bad_value_is_refused_naming_its_variable(variable, value, said):
    with pytest.raises(BadSetting) as refused:
        Settings.from_env({variable: value})
    assert said in str(refused.value)


def test_every_bad_value_is_named_at_once():
    with pytest.raises(BadSetting) as refused:
        Settings.from_env({"PORT": "x", "LOG_LEVEL": "loud"})
    assert "PORT='x'" in str(refused.value) and "LOG_LEVEL='loud'" in str(refused.value)


def test_the_readme_table_is_the_settings():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert readme == readme_with_table(readme), "run `python -m ridesync.settings --readme`"


def _started(args, **env):
    return subprocess.run(args, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_a_gateway_with_a_bad_setting_exits_1_saying_which():
    result = _started([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
                      PORT=str(free_port()), BODY_TIMEOUT="ten seconds")
    assert result.returncode == 1
    assert "ridesync cannot start, bad settings: BODY_TIMEOUT='ten seconds' is not a number" in result.stderr
    assert "Booting worker" not in result.stderr


@pytest.mark.parametrize("service", ["ridesync.trip", "ridesync.driver", "ridesync.payment"])
def test_a_service_with_a_bad_setting_exits_1_saying_which(service):
    result = _started([sys.executable, "-m", service], OFFER_TIMEOUT="soon")
    assert result.returncode == 1
    assert "ridesync cannot start, bad settings: OFFER_TIMEOUT='soon' is not a number" in result.stderr
