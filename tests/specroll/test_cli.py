import json

import pytest

from specroll.cli import build_parser, main
from specroll.core.errors import SpecrollError
from specroll.core.fileio import atomic_write, read_json, write_json


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "COMMAND" in capsys.readouterr().out


def test_parser_builds():
    assert build_parser().prog == "specroll"


def test_error_message_names_file_field_fix():
    err = SpecrollError("negative length", file="t.parquet", field="response_len", fix="drop the row")
    assert err.message == "t.parquet: field 'response_len': negative length. Fix: drop the row."


def test_atomic_write_leaves_nothing_on_crash(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_write(target, "w") as fh:
        fh.write("partial")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_write_json_strict_and_roundtrip(tmp_path):
    import numpy as np

    path = write_json(tmp_path / "a.json", {"x": np.float64(1.5), "nan": float("nan"), "n": np.int32(3)})
    assert json.loads(path.read_text()) == {"x": 1.5, "nan": None, "n": 3}
    assert read_json(path)["n"] == 3


def test_read_json_missing_file_is_clear(tmp_path):
    with pytest.raises(SpecrollError, match="file not found"):
        read_json(tmp_path / "nope.json")


def test_atomic_writes_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    import os
    import stat

    from specroll.core.fileio import atomic_path, atomic_write

    mask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.bin") as fh:
            fh.write(b"x")
        with atomic_path(tmp_path / "b.parquet") as tmp:
            tmp.write_bytes(b"y")
    finally:
        os.umask(mask)
    for name in ("a.bin", "b.parquet"):  # results are meant to be shared: readable by others
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_every_flag_of_every_command_has_help_and_the_help_shows_defaults(capsys):
    import argparse

    from specroll.cli import all_parsers, build_parser

    parsers = all_parsers(build_parser())
    assert len(parsers) > 10
    for p in parsers:
        for a in p._actions:
            if a.option_strings and not isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                assert a.help, f"{p.prog} {a.option_strings[0]} has no help text"
    with pytest.raises(SystemExit):
        main(["rollout", "--help"])
    assert "(default: 0.7)" in capsys.readouterr().out  # --temperature's default, shown


def test_version(capsys):
    from specroll.core import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"specroll {__version__}"
