"""The Windows GPU watchdog (TDR): on a GPU in WDDM mode (GeForce cards always; others unless
switched to TCC), Windows resets the GPU when one kernel or copy runs longer than TdrDelay
(2 s by default) and every CUDA context on it is lost. Long TensorRT layers (big batches, 3-D
volumes) can hit it. The fix is on the machine: a larger TdrDelay (registry, reboot), TCC mode
where the card supports it, or smaller batches.
"""

from __future__ import annotations

import sys

_KEY = r"SYSTEM\CurrentControlSet\Control\GraphicsDrivers"
DEFAULT_TDR_DELAY_S = 2


def classify(values: dict[str, int]) -> tuple[bool | None, str]:
    """(ok, advice) from the GraphicsDrivers values (TdrLevel, TdrDelay) that are set."""
    level = values.get("TdrLevel")
    if level == 0:
        return True, "TDR is off (TdrLevel = 0): long kernels are not interrupted"
    delay = values.get("TdrDelay", DEFAULT_TDR_DELAY_S)
    where = f"HKLM\\{_KEY}"
    if delay < 10:
        return False, (f"TdrDelay = {delay} s{' (default)' if 'TdrDelay' not in values else ''}: "
                       f"a GPU in WDDM mode is reset when one kernel runs longer. For long "
                       f"inferences set {where}\\TdrDelay (DWORD) to e.g. 60 and reboot, or use "
                       f"TCC mode (nvidia-smi -dm 1) where the card supports it")
    return True, f"TdrDelay = {delay} s"


def read_values() -> dict[str, int]:
    if sys.platform != "win32":
        return {}
    import winreg

    values: dict[str, int] = {}
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, _KEY) as key:
            for name in ("TdrLevel", "TdrDelay"):
                try:
                    value, _ = winreg.QueryValueEx(key, name)
                    values[name] = int(value)
                except FileNotFoundError:
                    pass
    except OSError:
        pass
    return values


def describe_tdr() -> tuple[bool | None, str]:
    return classify(read_values())
