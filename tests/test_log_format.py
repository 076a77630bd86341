"""`log_format = "json"` on a real daemon: every line one JSON object, a request's fields on the
lines about it, no tensor contents or tokens; journald's priorities kept."""

from __future__ import annotations

import json

import numpy as np
import pytest

from daemon_process import serving, start_daemon, wait_until
from trtd.daemon.serve.logs import SYSLOG_PRIORITY
from trtd.protocol import messages as m
from trtd.protocol.endpoint import ADMIN_TOKEN, token_path
from trtd.sdk import Client, InvalidInput, RegionError, UnknownModel

# A value no log line has any reason to contain, written into every input element.
MARK = np.float32(-7341.0625)


def _lines(log: str) -> list[dict]:
    entries = []
    for line in log.splitlines():
        if line.strip():
            entries.append(json.loads(line))  # every line: one JSON object
    return entries


def _requests(client: Client):
    """A good infer, then three the daemon refuses: wrong dtype (reaches the model), a wrong
    lease token and an unknown model (refused before a model). Returns the tokens used."""
    x = np.full((1, 64), MARK, np.float32)
    assert client.infer("demo", x).shape == (1, 10)
    region = client.lease(4096)
    region.array(0, np.dtype(np.float32), (1024,))[:] = MARK
    bad_dtype = m.InputRef(name="x", dtype="float64", shape=[1, 64], offset=0, nbytes=64 * 8)
    good = m.InputRef(name="x", dtype="float32", shape=[1, 64], offset=0, nbytes=64 * 4)
    y = m.OutputRef(name="y", offset=2048, nbytes=40)
    with pytest.raises(InvalidInput):
        client._call(m.Infer(client_id=client.client_id, model="demo", region=region.name,
                             token=region.token, inputs=[bad_dtype], outputs=[y]))
    wrong_token = "f00d" * 8
    with pytest.raises(RegionError):
        client._call(m.Infer(client_id=client.client_id, model="demo", region=region.name,
                             token=wrong_token, inputs=[good], outputs=[y]))
    with pytest.raises(UnknownModel):
        client.infer("nope", x)
    return [region.token, wrong_token]


def test_json_lines_carry_the_request_fields_and_no_tensor_or_token(tmp_path):
    config = 'log_format = "json"\nlog_level = "DEBUG"\n[models.demo]\npath = "builtin:demo"\n'
    with serving(tmp_path, config) as d:
        with Client(d.endpoint, timeout=10) as c:
            client_id = c.client_id
            tokens = _requests(c)
        tokens.append(token_path(d.endpoint, ADMIN_TOKEN).read_text().strip())
    log = d.log()
    entries = _lines(log)
    assert len(entries) > 5
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        assert entry["time"].endswith("+00:00") and entry["level"] in ("DEBUG", "INFO", "WARNING", "ERROR")
    failed = [e for e in entries if e.get("error_code") == "INVALID_TENSOR"]
    assert len(failed) == 1, log
    (entry,) = failed
    assert entry["model"] == "demo" and entry["client_id"] == client_id
    assert isinstance(entry["request_id"], int) and entry["request_id"] > 0
    assert entry["logger"] == "trtd.core" and entry["level"] == "DEBUG"
    forbidden = [e for e in entries if e.get("error_code") == "FORBIDDEN"]
    assert [(e["model"], e["client_id"]) for e in forbidden] == [("demo", client_id)], log
    unknown = [e for e in entries if e.get("error_code") == "UNKNOWN_MODEL"]
    assert [e["model"] for e in unknown] == ["nope"], log
    # Never a token (the lease's, the wrong one sent, the daemon's token files) nor tensor data.
    assert len(tokens) >= 3 and all(len(t) >= 16 for t in tokens)
    for secret in tokens:
        assert secret not in log
    for rendering in ("7341", np.full(4, MARK, np.float32).tobytes().hex(), repr(MARK.tobytes())[2:-1]):
        assert rendering not in log, rendering


def test_json_under_journald_keeps_the_priorities(tmp_path):
    d = start_daemon(tmp_path, "--log-format", "json", "--model", "demo=builtin:demo",
                     "--model", "gone=/nowhere/x.onnx", env={"JOURNAL_STREAM": "8:12345"})
    try:
        assert wait_until(lambda: "model gone failed to load" in d.log(), timeout=30), d.log()
    finally:
        assert d.stop() == 0
    priority = {name: SYSLOG_PRIORITY[level] for name, level in
                (("ERROR", 40), ("WARNING", 30), ("INFO", 20), ("DEBUG", 10))}
    levels = set()
    for line in d.log().splitlines():
        assert line.startswith("<") and ">{" in line, line
        prefix, _, text = line.partition(">")
        entry = json.loads(text)
        assert int(prefix[1:]) == priority[entry["level"]]
        levels.add(entry["level"])
    assert {"ERROR", "INFO"} <= levels


def test_text_stays_the_default(tmp_path):
    with serving(tmp_path, '[models.demo]\npath = "builtin:demo"\n') as d:
        pass
    first = d.log().splitlines()[0]
    assert " INFO trtd." in first and not first.startswith("{")
