"""The config loader: defaults, every documented key, and a clear error for each bad input."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from archiver.config import Config, KeySource, load_config, parse_duration, readable_secret
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
    return [str(problem) for problem in caught.value.problems]


def test_example_config_loads_through_the_real_loader() -> None:
    config = load_config(
        ROOT / "config.example.toml", env={"CRADLE_ID": "i", "CRADLE_API_KEY": "k"}
    )
    assert config.s3.bucket == "my-recordings"
    assert config.archive.window == timedelta(hours=1)
    assert config.state.spool_dir == Path("/var/lib/cradle-archiver/spool")
    assert config.server.address == ("127.0.0.1", 9108)
    assert config.cradle.min_transfer_rate == 16 * 1024


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
        (
            '[cradle]\nid="a"\napi_key="k"\nmin_transfer_rate="fast"\n[s3]\nbucket="c1"\n',
            "cradle.min_transfer_rate: 'fast' is not a size",
        ),
        (
            '[cradle]\nid="a"\napi_key="k"\nmin_transfer_rate=0\n[s3]\nbucket="c1"\n',
            "cradle.min_transfer_rate: 0 must be at least one byte a second",
        ),
        ('[cradle]\napi_key="k"\n[s3]\nbucket="calls"\n', "cradle.id: is empty"),
        ('[cradle]\nid="a"\n[s3]\nbucket="calls"\n', "cradle.api_key: is empty"),
        (
            '[cradle]\nid="a"\nbase_url="ftp://x"\napi_key="k"\n[s3]\nbucket="calls"\n',
            "cradle.base_url: url 'ftp://x'",
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


# --- credentials that cannot travel in an HTTP header -----------------------------------------

SECRET = "S3cretVALUE"  # distinctive, so a message quoting it would be caught
BAD_KEYS = {  # id: (the key's value, the problem named)
    "trailing-newline": (f"{SECRET}\n", "leading or trailing whitespace"),
    "leading-space": (f" {SECRET}", "leading or trailing whitespace"),
    "nul": (f"{SECRET[:4]}\x00{SECRET[4:]}", "control character (U+0000)"),
    "crlf": (f"{SECRET[:4]}\r\n{SECRET[4:]}", "control character (U+000D)"),
    "tab": (f"{SECRET[:4]}\t{SECRET[4:]}", "control character (U+0009)"),
    "del": (f"{SECRET}\x7f", "control character (U+007F)"),
    "non-ascii": (f"{SECRET}é", "non-ASCII character"),
}
BAD_VALUES = [pytest.param(value, problem, id=name) for name, (value, problem) in BAD_KEYS.items()]


def toml_string(value: str) -> str:
    """`value` as a TOML basic string, every character escaped."""
    return '"' + "".join(f"\\u{ord(ch):04x}" for ch in value) + '"'


def assert_never_quoted(found: list[str], value: str) -> None:
    for line in found:
        assert SECRET not in line and SECRET[4:] not in line, line


@pytest.mark.parametrize(("value", "problem"), BAD_VALUES)
def test_a_bad_api_key_in_the_config_is_a_config_error_without_its_value(
    tmp_path: Path, value: str, problem: str
) -> None:
    text = f'[cradle]\nid = "a"\napi_key = {toml_string(value)}\n[s3]\nbucket = "calls"\n'
    found = problems(tmp_path, text)
    assert len(found) == 1 and found[0].startswith("cradle.api_key: "), found
    assert problem in found[0]
    assert_never_quoted(found, value)


@pytest.mark.parametrize(("value", "problem"), BAD_VALUES)
def test_a_bad_api_key_in_the_environment_is_named_as_the_variable(
    tmp_path: Path, value: str, problem: str
) -> None:
    found = problems(
        tmp_path, '[cradle]\nid = "a"\n[s3]\nbucket = "calls"\n', env={"CRADLE_API_KEY": value}
    )
    assert len(found) == 1 and found[0].startswith("CRADLE_API_KEY (environment): "), found
    assert problem in found[0]
    assert_never_quoted(found, value)


INSIDE_A_FILE = [
    pytest.param(value, problem, id=name)
    for name, (value, problem) in BAD_KEYS.items()
    if "whitespace" not in problem
]


@pytest.mark.parametrize(("value", "problem"), INSIDE_A_FILE)
def test_a_bad_key_inside_an_api_key_file_is_named_with_the_file(
    tmp_path: Path, value: str, problem: str
) -> None:
    key = tmp_path / "key"
    key.write_text(value + "\n", encoding="utf-8")
    text = f'[cradle]\nid = "a"\napi_key_file = "{key}"\n[s3]\nbucket = "calls"\n'
    found = problems(tmp_path, text)
    assert len(found) == 1 and found[0].startswith(f"cradle.api_key_file: {key}: "), found
    assert problem in found[0]
    assert_never_quoted(found, value)


@pytest.mark.parametrize(("value", "problem"), INSIDE_A_FILE)
def test_a_bad_key_from_systemd_credentials_is_named(
    tmp_path: Path, value: str, problem: str
) -> None:
    (tmp_path / "cradle-api-key").write_text(value, encoding="utf-8")
    found = problems(
        tmp_path,
        '[cradle]\nid = "a"\n[s3]\nbucket = "calls"\n',
        env={"CREDENTIALS_DIRECTORY": str(tmp_path)},
    )
    assert len(found) == 1, found
    assert found[0].startswith("$CREDENTIALS_DIRECTORY/cradle-api-key: ")
    assert problem in found[0]
    assert_never_quoted(found, value)


def test_a_key_file_keeps_only_its_surrounding_whitespace_stripped(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(f"  {SECRET}\r\n")
    text = f'[cradle]\nid = "a"\napi_key_file = "{key}"\n[s3]\nbucket = "calls"\n'
    assert load_config(write(tmp_path, text), env={}).cradle.api_key == SECRET


def test_a_key_file_that_is_not_utf8_does_not_quote_its_bytes(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"S3cr\xffVALUE")
    text = f'[cradle]\nid = "a"\napi_key_file = "{key}"\n[s3]\nbucket = "calls"\n'
    found = problems(tmp_path, text)
    assert found == [f"cradle.api_key_file: {key} is not UTF-8 text"]


@pytest.mark.parametrize(("value", "problem"), BAD_VALUES)
def test_a_bad_id_is_a_config_error_from_either_source(
    tmp_path: Path, value: str, problem: str
) -> None:
    in_toml = problems(
        tmp_path, f'[cradle]\nid = {toml_string(value)}\napi_key = "k"\n[s3]\nbucket = "calls"\n'
    )
    from_env = problems(tmp_path, MINIMAL, env={"CRADLE_ID": value})
    assert len(in_toml) == 1 and in_toml[0].startswith("cradle.id: ")
    assert len(from_env) == 1 and from_env[0].startswith("CRADLE_ID (environment): ")
    assert problem in in_toml[0] and problem in from_env[0]


def test_a_bad_credential_fails_at_load_with_exit_code_2(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, MINIMAL), env={"CRADLE_API_KEY": "k\n"})
    assert caught.value.exit_code == 2


def test_inner_spaces_in_a_key_are_allowed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={"CRADLE_API_KEY": "two words"})
    assert config.cradle.api_key == "two words"


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("config", KeySource.CONFIG),
        ("environment", KeySource.ENVIRONMENT),
        ("file", KeySource.FILE),
        ("credentials", KeySource.CREDENTIALS),
        ("none", KeySource.NONE),
    ],
)
def test_the_loader_records_where_the_key_came_from(
    tmp_path: Path, setup: str, expected: KeySource
) -> None:
    (tmp_path / "key").write_text("file-key")
    (tmp_path / "cradle-api-key").write_text("cred-key")
    lines = {
        "config": 'api_key = "toml-key"',
        "file": f'api_key_file = "{tmp_path / "key"}"',
    }.get(setup, "")
    env = {
        "environment": {"CRADLE_API_KEY": "env-key"},
        "credentials": {"CREDENTIALS_DIRECTORY": str(tmp_path)},
    }.get(setup, {})
    text = f'[cradle]\nid = "a"\n{lines}\n[s3]\nbucket = "calls"\n'
    config = load_config(write(tmp_path, text), env=env, require_credentials=False)
    assert config.cradle.api_key_source == expected


# --- cradle.base_url: one reading for every URL parser ----------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://user@api.cradle.io", "holds userinfo"),
        ("https://user:pw@api.cradle.io", "holds userinfo"),
        ("http://127.0.0.1:1\\@127.0.0.1:2", "holds a backslash"),
        ("https://api.cradle.io/?x=1", "has a query or a fragment"),
        ("https://api.cradle.io/#@evil.example", "has a query or a fragment"),
        ("https://api.cradle.io?", "has a query or a fragment"),
        ("https://api.cradle.io\t", "holds the character '\\t'"),
        ("https://api.cradle.io\n.evil", "holds the character '\\n'"),
        ("https://api. cradle.io", "holds the character ' '"),
        ("https://bücher.example", "holds the character 'ü'"),
        ("https://api%2ecradle.io", "percent-encoding in its host"),
        ("https://api.cradle.io%40evil.example", "percent-encoding in its host"),
        ("https://api.cradle.io:0", "1 to 65535"),
        ("https://api.cradle.io:99999", "cannot be parsed"),
        ("https://api.cradle.io:https", "cannot be parsed"),
        ("https://api.cradle.io:+443", "cannot be parsed"),
        ("http://[::1", "cannot be parsed"),
        ("ftp://api.cradle.io", "is not an absolute http(s) url"),
        ("https://", "is not an absolute http(s) url"),
    ],
)
def test_an_ambiguous_base_url_is_refused(tmp_path: Path, url: str, problem: str) -> None:
    text = MINIMAL.replace("[s3]", f"base_url = {toml_string(url)}\n[s3]")
    found = problems(tmp_path, text)
    assert len(found) == 1 and found[0].startswith("cradle.base_url: "), found
    assert problem in found[0]


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://api.cradle.io/", "https://api.cradle.io"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:8080/", "http://[::1]:8080"),
        ("https://API.Cradle.io:443/base", "https://API.Cradle.io:443/base"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
    ],
)
def test_a_plain_base_url_is_accepted(tmp_path: Path, url: str, kept: str) -> None:
    text = MINIMAL.replace("[s3]", f'base_url = "{url}"\n[s3]')
    assert load_config(write(tmp_path, text), env={}).cradle.base_url == kept


# --- a key lying in a file others can read ------------------------------------------------------


def key_in_config(tmp_path: Path, mode: int) -> Config:
    path = write(tmp_path, MINIMAL)
    path.chmod(mode)
    return load_config(path, env={})


def test_a_world_readable_config_holding_the_key_is_flagged(tmp_path: Path) -> None:
    config = key_in_config(tmp_path, 0o644)
    found = readable_secret(config)
    assert found is not None
    assert (found.path, found.mode, found.readers) == (config.source, 0o644, "everyone")
    assert str(found).startswith(f"{config.source} holds the API key and is readable by everyone")
    assert "0644" in str(found) and "k-123456" not in str(found)


def test_a_private_config_holding_the_key_is_not_flagged(tmp_path: Path) -> None:
    assert readable_secret(key_in_config(tmp_path, 0o600)) is None


def test_a_group_readable_config_is_flagged_unless_the_group_is_the_archivers(
    tmp_path: Path,
) -> None:
    config = key_in_config(tmp_path, 0o640)
    gid = os.stat(config.source).st_gid
    found = readable_secret(config, groups=())
    assert found is not None and found.readers.startswith("group ")
    assert readable_secret(config, groups=(gid,)) is None


def test_a_readable_api_key_file_is_flagged(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("file-key")
    key.chmod(0o604)
    path = write(tmp_path, f'[cradle]\nid = "a"\napi_key_file = "{key}"\n[s3]\nbucket = "calls"\n')
    path.chmod(0o644)  # holds no key: not what is flagged
    found = readable_secret(load_config(path, env={}))
    assert found is not None and (found.path, found.readers) == (str(key), "everyone")


@pytest.mark.parametrize("source", ["environment", "credentials"])
def test_a_key_not_in_a_file_we_judge_is_not_flagged(tmp_path: Path, source: str) -> None:
    (tmp_path / "cradle-api-key").write_text("cred-key")
    (tmp_path / "cradle-api-key").chmod(0o644)
    path = write(tmp_path, '[cradle]\nid = "a"\n[s3]\nbucket = "calls"\n')
    path.chmod(0o644)
    env = (
        {"CRADLE_API_KEY": "env-key"}
        if source == "environment"
        else {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    )
    assert readable_secret(load_config(path, env=env)) is None


def test_the_proof_sections_default_to_sealing_daily_reconciling_and_refusing_a_lost_state(
    tmp_path: Path,
) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    assert config.manifest.enabled is True and config.manifest.sign_key_file is None
    assert config.reconcile.schedule == "daily"
    assert config.state.rebuild == "refuse"
    key = tmp_path / "sign.pem"
    key.write_text("a key\n")
    text = MINIMAL + (
        f'[manifest]\nenabled = false\nsign_key_file = "{key}"\n'
        '[reconcile]\nschedule = "off"\n[state]\nrebuild = "auto"\n'
    )
    config = load_config(write(tmp_path, text), env={})
    assert config.manifest == type(config.manifest)(enabled=False, sign_key_file=key)
    assert (config.reconcile.schedule, config.state.rebuild) == ("off", "auto")


def test_bad_proof_settings_are_each_named(tmp_path: Path) -> None:
    text = MINIMAL + (
        '[manifest]\nenabled = "yes"\nsign_key_file = "/nonexistent/sign.pem"\nsigned = true\n'
        '[reconcile]\nschedule = "hourly"\n[state]\nrebuild = "maybe"\n'
    )
    found = problems(tmp_path, text)
    assert any(p.startswith("manifest.enabled:") for p in found)
    assert any(p.startswith("manifest.sign_key_file: /nonexistent/sign.pem") for p in found)
    assert any(p.startswith("manifest.signed:") for p in found)
    assert any(p.startswith("reconcile.schedule:") and "daily" in p for p in found)
    assert any(p.startswith("state.rebuild:") and "refuse" in p for p in found)


WEBHOOK_TOKEN = "f0e1d2c3b4a5968778695a4b3c2d1e0f"


def test_the_webhook_is_off_by_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    assert (config.webhook.listen, config.webhook.token, config.webhook.address) == ("", "", None)


def test_a_webhook_token_is_read_from_its_file_and_kept_secret(tmp_path: Path) -> None:
    token = tmp_path / "webhook-token"
    token.write_text(WEBHOOK_TOKEN + "\n")
    text = MINIMAL + f'[webhook]\nlisten = "0.0.0.0:9109"\ntoken_file = "{token}"\n'
    config = load_config(write(tmp_path, text), env={})
    assert config.webhook.address == ("0.0.0.0", 9109)
    assert config.webhook.token == WEBHOOK_TOKEN
    assert WEBHOOK_TOKEN not in repr(config)
    assert WEBHOOK_TOKEN in config.secrets  # redacted from every log line


def test_systemd_credentials_supply_the_webhook_token(tmp_path: Path) -> None:
    (tmp_path / "cradle-webhook-token").write_text(WEBHOOK_TOKEN)
    text = MINIMAL + '[webhook]\nlisten = "[::]:9109"\n'
    config = load_config(write(tmp_path, text), env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert (config.webhook.token, config.webhook.address) == (WEBHOOK_TOKEN, ("::", 9109))


def test_a_webhook_listener_without_a_token_is_named(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + '[webhook]\nlisten = "0.0.0.0:9109"\n')
    assert len(found) == 1 and found[0].startswith("webhook.token_file: is empty"), found


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("short-token", "fewer than 16"),
        ("a" * 20 + "/" + "b" * 20, "only letters, digits"),
        ("a" * 20 + "?x=" + "b" * 20, "only letters, digits"),
        ("a" * 20 + " " + "b" * 20, "only letters, digits"),
        ("a" * 20 + "\x00" + "b" * 20, "control character"),
        ("a" * 20 + "é" + "b" * 20, "non-ASCII"),
    ],
)
def test_a_bad_webhook_token_is_named_without_its_value(
    tmp_path: Path, value: str, problem: str
) -> None:
    token = tmp_path / "webhook-token"
    token.write_text(value, encoding="utf-8")
    text = MINIMAL + f'[webhook]\nlisten = "127.0.0.1:9109"\ntoken_file = "{token}"\n'
    found = problems(tmp_path, text)
    assert len(found) == 1 and found[0].startswith("webhook.token_file: "), found
    assert problem in found[0]
    assert value[:10] not in found[0] and value[-10:] not in found[0]


def test_bad_webhook_settings_are_each_named(tmp_path: Path) -> None:
    text = MINIMAL + (
        '[webhook]\nlisten = "9109"\ntoken_file = "/nonexistent/token"\nsecret = "x"\n'
    )
    found = problems(tmp_path, text)
    assert any(p.startswith("webhook.listen: '9109' is not HOST:PORT") for p in found)
    assert any(p.startswith("webhook.token_file: cannot read /nonexistent/token") for p in found)
    assert any(p.startswith("webhook.secret: unknown key") for p in found)
