from __future__ import annotations

import pytest

from trtd.daemon.config.settings import ConfigError, load_config, parse_model_flag


def test_toml_config(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    path = tmp_path / "trtd.toml"
    path.write_text(
        'endpoint = "ipc:///tmp/x.sock"\nreclaim_interval_s = 2\n'
        '[models.seg]\npath = "m.onnx"\nmax_batch = 4\n'
        '[models.demo]\npath = "builtin:demo"\n'
    )
    config = load_config(path)
    assert config.endpoint == "ipc:///tmp/x.sock" and config.reclaim_interval_s == 2.0
    seg, demo = config.models
    assert seg.name == "seg" and seg.path == str(tmp_path / "m.onnx") and seg.max_batch == 4
    assert demo.path == "builtin:demo" and demo.backend == "onnxruntime"


@pytest.mark.parametrize("text, message", [
    ("bogus = 1\n", "unknown key 'bogus'"),
    ("[models.a]\nmax_batch = 1\n", "needs a 'path'"),
    ("[models.a]\npath = 'x'\nmax_batch = -1\n", "max_batch must be 0..1048576"),
    ("[models.a]\npath = 'x'\nmax_batch = true\n", "'max_batch' must be int"),
    ("reclaim_interval_s = 0\n", "reclaim_interval_s must be > 0"),
    ("models = 3\n", "table of [models.NAME]"),
    ("this is = not toml", "not valid TOML"),
])
def test_config_errors_are_actionable(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml")


def test_model_flag():
    assert parse_model_flag("demo=builtin:demo").path == "builtin:demo"
    with pytest.raises(ConfigError, match="NAME=PATH"):
        parse_model_flag("just-a-path.onnx")
