"""Config: defaults, relative paths, and one clear line per mistake (file, key, what is wrong)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import DEFAULT_KEYWORDS, ConfigError, Secrets, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    cfg = load_config(tmp_path / "config.toml")
    assert cfg.arxiv.keywords == DEFAULT_KEYWORDS
    assert cfg.arxiv.request_interval == 3.0
    assert cfg.storage.path == tmp_path / "daily-papers.db"
    assert cfg.digest.path == tmp_path / "README.md"


def test_shipped_config_is_minimal_and_valid() -> None:
    shipped = Path(__file__).parent.parent / "config.toml"
    cfg = load_config(shipped)
    assert cfg.arxiv.keywords == DEFAULT_KEYWORDS
    assert not cfg.email.host and not cfg.slack.channels


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    cfg = load_config(write(sub, '[storage]\npath = "data/x.db"\n[digest]\npath = "../out.md"\n'))
    assert cfg.storage.path == sub / "data" / "x.db"
    assert cfg.digest.path == sub / ".." / "out.md"


def test_empty_digest_path_turns_the_digest_off(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, '[digest]\npath = ""\n')).digest.path is None


def test_integers_are_accepted_for_float_keys(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "[arxiv]\nrequest_interval = 3\n")).arxiv.request_interval == 3.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[arxiv]\nmax_paper = 5\n", "unknown key 'arxiv.max_paper'"),
        ("[arxive]\n", "unknown key 'arxive'"),
        ("[arxiv]\nmax_papers = \"100\"\n", "'arxiv.max_papers' must be a whole number, not a string"),
        ("[arxiv]\nkeywords = \"video\"\n", "'arxiv.keywords' must be a list, not a string"),
        ("[arxiv]\nkeywords = [1]\n", "'arxiv.keywords[0]' must be a string, not a number"),
        ("[arxiv]\nmax_papers = 0\n", "'arxiv.max_papers' must be between 1 and 2000, not 0"),
        ("[arxiv]\napi_url = \"ftp://x\"\n", "'arxiv.api_url' must be an http(s) URL"),
        ("[telegram]\ndigest_time = \"8am\"\n", "'telegram.digest_time' must be \"\" or a time"),
        ("[email]\ntimezone = \"Mars/Base\"\n", "'email.timezone' 'Mars/Base' is not a known time zone"),
        ("[email]\nsecurity = \"ssl\"\n", "'email.security' must be"),
        ("[telegram]\ngroup_admins_only = \"yes\"\n", "must be true or false"),
        ("[[slack.channels]]\nchannel = \"#general\"\n", "use the channel ID"),
        ("[web]\nport = 70000\n", "'web.port' must be between 0 and 65535"),
        ("[arxiv\n", "not valid TOML"),
        ("arxiv = 3\n", "[arxiv] must be a table"),
    ],
)
def test_each_mistake_gets_one_line_naming_file_and_key(tmp_path: Path, text: str,
                                                        expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_secrets_come_from_the_environment_only() -> None:
    secrets = Secrets.from_env({"TELEGRAM_BOT_TOKEN": "123:abc", "SMTP_PASSWORD": "pw"})
    assert secrets.telegram_bot_token == "123:abc"
    assert secrets.smtp_password == "pw"
    assert sorted(secrets.values()) == ["123:abc", "pw"]
