"""The configuration `trtd service install` writes where there is none (both OSes)."""

from __future__ import annotations

from trtd.daemon.system import platform


def default_config_text(scope: str, windows: bool = platform.IS_WINDOWS) -> str:
    """The config `service install` writes when there is none: the demo model, and for a
    system service the endpoint clients find by default and the group that may use it."""
    endpoint = platform.service_endpoint(scope, windows)
    lines = [
        f"# trtd configuration ({scope} service). Check it with: trtd config check PATH",
        "# Apply changes without a restart: trtd reload (or systemctl reload trtd).",
        f'endpoint = "{endpoint}"',
    ]
    if scope == "system" and not windows:
        lines += ["# Members of this group may use the daemon (usermod -aG trtd USER).",
                  f'group = "{platform.SERVICE_GROUP}"']
    lines += ["drain_timeout_s = 10.0", "",
              "[models.demo]", 'path = "builtin:demo"', "",
              "# [models.resnet]", '# path = "/srv/models/resnet.onnx"', "# max_batch = 8", ""]
    return "\n".join(lines)
