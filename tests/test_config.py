"""Configuration: every setting documented, the file read once, bad values explained."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from archivista_mail.config import SETTINGS, load_config
from archivista_mail.errors import ConfigError

DOCS = Path(__file__).parent.parent / "docs" / "configuration.md"


def test_every_setting_is_documented_with_its_default():
    file_part = DOCS.read_text().split("## Settings in the database")[0]
    rows = {m[1]: m[2].strip() for m in re.finditer(r"^\| `(\w+)` \| ([^|]+) \|", file_part, re.M)}
    assert set(rows) == {s.name for s in SETTINGS} | {"data_dir"}
    for setting in SETTINGS:
        if setting.default == "":  # no value: what it means is said in words
            assert rows[setting.name] and not re.fullmatch(r"`[^`]*`", rows[setting.name]), setting.name
        else:
            value = str(setting.default).lower() if setting.type is bool else str(setting.default)
            assert rows[setting.name] == f"`{value}`", (setting.name, rows[setting.name])


def test_every_database_setting_is_documented():
    from archivista_mail.settings import STORED_SETTINGS

    database_part = DOCS.read_text().split("## Settings in the database")[1]
    documented = set(re.findall(r"^\| `(\w+)` \|", database_part, re.M))
    assert documented == set(STORED_SETTINGS)


def test_file_values_are_typed_and_command_line_data_dir_wins(tmp_path):
    conf = tmp_path / "a.conf"
    conf.write_text("[archivista-mail]\ndata_dir = /srv/x\nfetch_batch_size = 7\nextract_on_import = no\n")
    config = load_config(None, conf)
    assert (config.data_dir, config.fetch_batch_size, config.extract_on_import) == (Path("/srv/x"), 7, False)
    assert load_config(tmp_path / "d", conf).data_dir == tmp_path / "d"
    assert config.key_path == Path("/srv/x/secret.key")


@pytest.mark.parametrize("body,words", [
    ("fetch_batch_size = many", "must be a whole number"),
    ("colour = blue", "unknown setting 'colour'"),
    ("extract_on_import = perhaps", "must be yes or no"),
])
def test_bad_settings_are_named_with_the_file(tmp_path, body, words):
    conf = tmp_path / "bad.conf"
    conf.write_text(f"[archivista-mail]\n{body}\n")
    with pytest.raises(ConfigError) as e:
        load_config(None, conf)
    assert words in str(e.value) and str(conf) in str(e.value)


def test_a_missing_config_file_given_explicitly_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(None, tmp_path / "nope.conf")
