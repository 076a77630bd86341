"""Protocol-buffer text format, written: what Triton's `config.pbtxt` is.

Triton reads a model's configuration as its `ModelConfig` message in protobuf's text format.
Writing the few shapes a configuration needs takes less than depending on protobuf and on
Triton's generated `model_config_pb2` at export time (the tests parse every file written here
with exactly those, `google.protobuf.text_format` into `tritonclient`'s `ModelConfig`, so a
field name or a value of the wrong kind fails there).

A message is a dict, in the order its fields are written:
- str: a quoted string; bool: true/false; int: a number; `Enum("TYPE_FP32")`: a bare enum name;
- dict: a nested message; a list of dicts: a repeated message (also a map, as key/value
  entries); a list of scalars: a repeated scalar field (`dims: [ 3, -1 ]`).
"""

from __future__ import annotations


class Enum(str):
    """An enum value, written bare (TYPE_FP32, KIND_GPU)."""


def quote(text: str) -> str:
    """A text-format string literal. UTF-8 stays as it is (text format strings are bytes);
    quotes, backslashes and control characters are escaped."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _scalar(value) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    raise TypeError(f"no text-format scalar for {type(value).__name__} {value!r}")


def _lines(message: dict, indent: int) -> list[str]:
    pad = "  " * indent
    lines = []
    for field, value in message.items():
        if isinstance(value, dict):
            lines += [f"{pad}{field} {{", *_lines(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{field} [")
            for i, item in enumerate(value):
                lines += [f"{pad}  {{", *_lines(item, indent + 2),
                          f"{pad}  }}" + ("," if i < len(value) - 1 else "")]
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{field}: [ {', '.join(_scalar(v) for v in value)} ]" if value
                         else f"{pad}{field}: [ ]")
        else:
            lines.append(f"{pad}{field}: {_scalar(value)}")
    return lines


def render(message: dict, comments: list[str] = ()) -> str:
    """The text of `message`, after `comments` (each line prefixed with '# ')."""
    head = [f"# {line}".rstrip() for comment in comments for line in comment.splitlines()]
    return "\n".join([*head, *_lines(message, 0)]) + "\n"
