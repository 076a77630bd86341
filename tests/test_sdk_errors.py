"""The SDK's exception tree: a class for every protocol error code, the parents callers catch,
the drawing in trtd.sdk.errors' docstring (checked against the classes, so it cannot go stale),
and the errors of a real daemon arriving as their classes."""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass, field

import numpy as np
import pytest

import trtd.sdk as sdk
from daemon_process import serving
from trtd.protocol import ErrorCode, messages as m
from trtd.sdk import errors

# -- the drawing ---------------------------------------------------------------------------------

# "│   ├── Name (OtherBase, ...): CODE and a note": 4 characters per level before the name.
_LINE = re.compile(r"^(?P<lead>(?:[│ ]   |[├└]── )*)(?P<name>\w+)"
                   r"(?: \((?P<bases>\w+(?:, \w+)*)\))?(?:: (?P<code>[A-Z_]+)\b.*)?$")


@dataclass
class Node:
    name: str
    bases: list[str]
    code: str
    parent: str | None
    children: list[str] = field(default_factory=list)


def drawn_tree() -> dict[str, Node]:
    lines = errors.__doc__.splitlines()
    start = lines.index("    TrtdError")
    nodes: dict[str, Node] = {}
    path: list[str] = []  # the names of the current line's ancestors, by depth
    for line in lines[start:]:
        if not line.strip():
            break
        match = _LINE.match(line[4:])
        assert match, f"not a line of the tree: {line!r}"
        depth = len(match["lead"]) // 4
        assert depth <= len(path), f"{line!r} skips a level"
        del path[depth:]
        name = match["name"]
        assert name not in nodes, f"{name} is drawn twice"
        parent = path[-1] if path else None
        nodes[name] = Node(name, match["bases"].split(", ") if match["bases"] else [],
                           match["code"] or "", parent)
        if parent:
            nodes[parent].children.append(name)
        path.append(name)
    return nodes


def sdk_classes() -> dict[str, type]:
    """Every exception class of trtd.sdk.errors, found by walking __subclasses__ from TrtdError."""
    found, pending = {}, [errors.TrtdError]
    while pending:
        cls = pending.pop()
        if cls.__module__ == errors.__name__:
            found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def test_the_drawing_names_every_class_and_only_those():
    assert sorted(drawn_tree()) == sorted(sdk_classes())


@pytest.mark.parametrize("name", sorted(sdk_classes()))
def test_the_drawing_shows_each_class_with_its_bases_and_code(name):
    node, cls = drawn_tree()[name], sdk_classes()[name]
    family = [b.__name__ for b in cls.__bases__ if issubclass(b, errors.TrtdError)]
    assert family == ([node.parent] if node.parent else []), f"{name}'s parent in the drawing"
    others = [b.__name__ for b in cls.__bases__
              if not issubclass(b, errors.TrtdError) and b is not Exception]
    assert others == node.bases, f"{name}'s other bases in the drawing"
    assert cls.code == node.code, f"{name}'s code in the drawing"
    assert sorted(c.__name__ for c in cls.__subclasses__()) == sorted(node.children)


def test_every_class_is_exported():
    assert set(sdk_classes()) <= set(sdk.__all__)
    assert all(getattr(sdk, name) is cls for name, cls in sdk_classes().items())


# -- codes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_every_error_code_has_its_own_class(code):
    exc = errors.error_from_reply(code.value, "what happened", {"a": 1})
    assert type(exc).code == code.value, f"no class stands for {code}"
    assert exc.code == code and exc.details == {"a": 1} and str(exc) == "what happened"
    assert type(exc) not in (errors.ServerError, errors.InvalidInput, errors.RegionError,
                             errors.ProtocolMismatch), f"{code} falls into a family, not its own class"


def test_one_class_per_code():
    declared = [cls.__dict__["code"] for cls in sdk_classes().values() if cls.__dict__.get("code")]
    assert sorted(declared) == sorted(c.value for c in ErrorCode)


def test_overloaded_while_stopping_is_daemon_stopping():
    exc = errors.error_from_reply("OVERLOADED", "stopping", {"stopping": True, "started": False})
    assert type(exc) is errors.DaemonStopping and isinstance(exc, errors.Overloaded)
    assert type(errors.error_from_reply("OVERLOADED", "full", {})) is errors.Overloaded


def test_a_code_of_a_newer_daemon_is_a_server_error_with_that_code():
    exc = errors.error_from_reply("SOME_FUTURE_CODE", "new", {})
    assert type(exc) is errors.ServerError and exc.code == "SOME_FUTURE_CODE"


# What each code was raised as before the tree had a class per code: callers catching these
# must still catch the same errors.
_BEFORE = {
    "UNKNOWN_MODEL": errors.UnknownModel, "MODEL_NOT_READY": errors.ModelNotReady,
    "OVERLOADED": errors.Overloaded, "DEADLINE_EXCEEDED": errors.DeadlineExceeded,
    "UNAUTHORIZED": errors.AccessDenied, "INVALID_TENSOR": errors.InvalidInput,
    "OUT_OF_BOUNDS": errors.InvalidInput, "OVERLAP": errors.InvalidInput,
    "OUTPUT_TOO_LARGE": errors.InvalidInput, "REGION_NOT_FOUND": errors.RegionError,
    "REGION_TOO_LARGE": errors.RegionError, "NO_SPACE": errors.RegionError,
    # QUOTA_EXCEEDED was a RegionError too, until issue 17 moved it out (at Client() it is
    # about clients, not regions; CHANGELOG): callers catch QuotaExceeded itself.
    "QUOTA_EXCEEDED": errors.QuotaExceeded, "FORBIDDEN": errors.RegionError,
    "UNSUPPORTED_VERSION": errors.ProtocolMismatch, "BAD_MESSAGE": errors.ProtocolMismatch,
    "UNKNOWN_OP": errors.ProtocolMismatch, "BACKEND_ERROR": errors.ServerError,
    "LOAD_FAILED": errors.ServerError, "CONFIG_ERROR": errors.ServerError,
    "INTERNAL": errors.ServerError,
}


@pytest.mark.parametrize("code, caught_by", sorted(_BEFORE.items()))
def test_what_each_code_was_caught_by_still_catches_it(code, caught_by):
    with pytest.raises(caught_by):
        raise errors.error_from_reply(code, "m", {})


def _edges() -> list[tuple[str, str]]:
    """(class, a parent the drawing shows for it): its tree parent and its other bases."""
    return [(name, parent) for name, node in drawn_tree().items()
            for parent in ([node.parent] if node.parent else []) + node.bases]


@pytest.mark.parametrize("name, parent", _edges())
def test_each_class_is_caught_by_its_drawn_parents(name, parent):
    cls = sdk_classes()[name]
    parent_cls = sdk_classes().get(parent) or getattr(errors, parent, None) or getattr(builtins, parent)
    with pytest.raises(parent_cls):
        raise cls("m")
    with pytest.raises(errors.TrtdError):
        raise cls("m")


def test_standard_bases_catch_their_families():
    assert issubclass(errors.InvalidTensor, ValueError) and issubclass(errors.OutputTooLarge, ValueError)
    assert issubclass(errors.InvalidEndpoint, ValueError)
    assert issubclass(errors.UnknownModel, KeyError) and str(errors.UnknownModel("no 'x'")) == "no 'x'"
    assert issubclass(errors.DeadlineExceeded, TimeoutError) and issubclass(errors.DaemonTimeout, TimeoutError)


# -- from a real daemon --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_daemon(tmp_path_factory):
    """Room for two clients of two regions each, so quotas are reached at once."""
    with serving(tmp_path_factory.mktemp("errors"),
                 "max_clients = 2\nmax_regions_per_client = 2\n"
                 "[models.demo]\npath = \"builtin:demo\"\n") as d:
        yield d


@pytest.fixture
def client(small_daemon):
    with sdk.Client(small_daemon.endpoint, timeout=10) as c:
        yield c


def _infer(client, region, x_nbytes=256, y_offset=512, y_nbytes=40, batch=1, x_offset=0, token=None):
    return client._call(m.Infer(
        client_id=client.client_id, model="demo", region=region.name,
        token=region.token if token is None else token,
        inputs=[m.InputRef(name="x", dtype="float32", shape=[batch, 64], offset=x_offset, nbytes=x_nbytes)],
        outputs=[m.OutputRef(name="y", offset=y_offset, nbytes=y_nbytes)]))


def test_output_too_large_from_the_daemon(client):
    region = client.lease(4096)
    with pytest.raises(sdk.OutputTooLarge) as e:
        _infer(client, region, x_nbytes=512, batch=2, y_offset=1024, y_nbytes=40)
    assert isinstance(e.value, sdk.InvalidInput) and isinstance(e.value, ValueError)
    assert e.value.code == "OUTPUT_TOO_LARGE"
    assert e.value.details == {"output": "y", "needed": 80, "capacity": 40}
    client.release(region)


def test_quota_exceeded_at_lease(client):
    regions = [client.lease(256), client.lease(256)]
    with pytest.raises(sdk.QuotaExceeded) as e:
        client.lease(256)
    assert e.value.code == "QUOTA_EXCEEDED"
    for region in regions:
        client.release(region)


def test_quota_exceeded_at_hello(small_daemon, client):
    with sdk.Client(small_daemon.endpoint, timeout=10):
        with pytest.raises(sdk.QuotaExceeded, match="max_clients") as e:
            sdk.Client(small_daemon.endpoint, timeout=10)
    assert not isinstance(e.value, sdk.RegionError)  # about clients, not regions
    with sdk.Client(small_daemon.endpoint, timeout=10) as again:  # a place is free again
        assert again.infer("demo", np.zeros((1, 64), np.float32)).shape == (1, 10)


def test_layout_errors_from_the_daemon(client):
    region = client.lease(4096)
    with pytest.raises(sdk.OutOfBounds):
        _infer(client, region, x_offset=4096)
    with pytest.raises(sdk.Overlap):
        _infer(client, region, y_offset=0)
    with pytest.raises(sdk.InvalidTensor):
        _infer(client, region, x_nbytes=100)
    with pytest.raises(sdk.Forbidden):
        _infer(client, region, token="0" * 32)
    client.release(region)
    with pytest.raises(sdk.RegionNotFound):
        _infer(client, region)


def test_model_and_op_errors_from_the_daemon(small_daemon, client):
    with pytest.raises(sdk.UnknownModel):
        client.infer("nope", np.zeros((1, 64), np.float32))
    with pytest.raises(sdk.BadMessage):
        client.lease(0)
    with pytest.raises(sdk.LoadFailed, match="demo"):  # the name is taken
        client.load("demo", "builtin:demo")
    with sdk.Client(small_daemon.endpoint, timeout=10, admin_token="wrong") as other:
        with pytest.raises(sdk.AccessDenied):
            other.unload("demo")  # privileged: a wrong admin token
    assert client.infer("demo", np.zeros((1, 64), np.float32)).shape == (1, 10)
