"""The config loader: defaults, every documented key, and a clear error for each bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archiver.config import load_config, parse_duration
from archiver.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = '[cradle]\nid = "acme"\napi_key = "k-123456"\n[s3]\nbucket = "calls"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env=env or {})
    assert all(str(tmp_path) in line for line in str(caught.value).split("; "))
    return caught.value.problems


def test_example_config_loads_through_the_real_loader() -> None:
    config = load_config(
        ROOT / "config.example.toml", env={"CRADLE_ID": "i", "CRADLE_API_KEY": "k"}
    )
    assert config.s3.bucket == "my-recordings"
    assert config.archive.window == timedelta(hours=1)
    assert config.state.spool_dir == Path("/var/lib/cradle-archiver/spool")
    assert config.server.address == ("127.0.0.1", 9108)


def test_defaults_match_the_contract(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    assert config.cradle.base_url == "https://api.cradle.io"
    assert config.cradle.requests_per_second == 10
    assert config.cradle.timeout == timedelta(seconds=60)
    assert config.s3.prefix == "cradle/" and config.s3.tags is True
    assert config.archive.settle_delay == timedelta(minutes=10)
    assert config.archive.lookback == timedelta(hours=6)
    assert config.archive.split_threshold == 500 and config.archive.max_attempts == 5
    assert config.schedule.interval == timedelta(minutes=5)
    assert config.schedule.shutdown_timeout == timedelta(seconds=30)
    assert config.archive.start is None


def test_environment_overrides_credentials(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, MINIMAL), env={"CRADLE_ID": "env-id", "CRADLE_API_KEY": "env-key"}
    )
    assert (config.cradle.id, config.cradle.api_key) == ("env-id", "env-key")


def test_api_key_file_is_read(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("from-file\n")
    text = f'[cradle]\nid = "a"\napi_key_file = "{key}"\n[s3]\nbucket = "calls"\n'
    assert load_config(write(tmp_path, text), env={}).cradle.api_key == "from-file"


def test_systemd_credentials_directory_supplies_the_key(tmp_path: Path) -> None:
    (tmp_path / "cradle-api-key").write_text("cred-key")
    text = '[cradle]\nid = "a"\n[s3]\nbucket = "calls"\n'
    config = load_config(write(tmp_path, text), env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert config.cradle.api_key == "cred-key"


def test_the_key_is_not_in_the_repr(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    assert "k-123456" not in repr(config)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[cradle]\nid="a"\napi_key="k"\n', "s3.bucket: is required"),
        (MINIMAL + "colour = 1\n", "s3.colour: unknown key"),
        (MINIMAL + "[extras]\n", "extras: unknown section"),
        (
            MINIMAL.replace("[s3]", "requests_per_second = 11\n[s3]"),
            "cradle.requests_per_second: 11 is above",
        ),
        (
            MINIMAL + '[schedule]\ninterval = "5 minutes"\n',
            "schedule.interval: '5 minutes' is not a duration",
        ),
        (MINIMAL + '[archive]\nwindow = "0s"\n', "archive.window: '0s' must be longer than zero"),
        (
            MINIMAL + '[archive]\nstart = "2024-01-01T00:00:00"\n',
            "archive.start: time without a zone",
        ),
        (
            MINIMAL + "[archive]\nmax_attempts = 0\n",
            "archive.max_attempts: 0 is not a positive integer",
        ),
        (MINIMAL + '\nsse = "rot13"\n', "s3.sse: 'rot13' is not one of"),
        (MINIMAL + 'multipart_threshold = "1MiB"\n', "s3.multipart_threshold: '1MiB' is below"),
        (MINIMAL + 'multipart_threshold = "big"\n', "s3.multipart_threshold: 'big' is not a size"),
        (MINIMAL + '[server]\nlisten = "nowhere"\n', "server.listen: 'nowhere' is not HOST:PORT"),
        (MINIMAL.replace("https", "") + "\n[state]\npath = 3\n", "state.path: 3 is not a string"),
        ('[cradle]\napi_key="k"\n[s3]\nbucket="calls"\n', "cradle.id: is empty"),
        ('[cradle]\nid="a"\n[s3]\nbucket="calls"\n', "cradle.api_key: is empty"),
        (
            '[cradle]\nid="a"\nbase_url="ftp://x"\napi_key="k"\n[s3]\nbucket="calls"\n',
            "cradle.base_url: 'ftp://x'",
        ),
    ],
)
def test_each_bad_config_names_the_key_and_the_problem(
    tmp_path: Path, text: str, expected: str
) -> None:
    found = problems(tmp_path, text)
    assert any(expected in p for p in found), found


def test_an_unreadable_api_key_file_is_named(tmp_path: Path) -> None:
    text = '[cradle]\nid="a"\napi_key_file="/nonexistent/key"\n[s3]\nbucket="calls"\n'
    found = problems(tmp_path, text)
    assert found == ["cradle.api_key_file: cannot read /nonexistent/key: No such file or directory"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = '[cradle]\nrequests_per_second = 50\n[archive]\nwindow = "soon"\n[s3]\n'
    found = problems(tmp_path, text)
    assert len(found) >= 4  # rate, window, bucket, id, api_key


def test_a_non_string_api_key_is_not_echoed(tmp_path: Path) -> None:
    found = problems(tmp_path, '[cradle]\nid="a"\napi_key=987654321\n[s3]\nbucket="calls"\n')
    assert not any("987654321" in p for p in found)


def test_missing_and_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml", env={})
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(write(tmp_path, "[cradle\n"), env={})


def test_credentials_are_optional_for_commands_that_do_not_call_the_api(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, '[s3]\nbucket = "calls"\n'), env={}, require_credentials=False
    )
    assert config.cradle.api_key == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30s", 30),
        ("15m", 900),
        ("1h", 3600),
        ("2d", 172800),
        ("1h30m", 5400),
        (45, 45),
        ("90", 90),
    ],
)
def test_durations(value: object, expected: int) -> None:
    assert parse_duration(value) == timedelta(seconds=expected)


@pytest.mark.parametrize("value", ["", "1x", "-5s", -5, True, "1.5h"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_start_is_utc(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, MINIMAL + '[archive]\nstart = "2024-03-01T10:00:00+02:00"\n'), env={}
    )
    assert config.archive.start == datetime(2024, 3, 1, 8, tzinfo=UTC)


def test_sizes(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + 'multipart_threshold = "16MiB"\n'), env={})
    assert config.s3.multipart_threshold == 16 * 2**20
    assert load_config(write(tmp_path, MINIMAL), env={}).s3.multipart_threshold == 100 * 2**20


def test_a_credential_of_the_wrong_type_is_reported_once(tmp_path: Path) -> None:
    found = problems(tmp_path, '[cradle]\nid=5\napi_key=["x"]\n[s3]\nbucket="calls"\n')
    assert sorted(p.split(":")[0] for p in found) == ["cradle.api_key", "cradle.id"]
