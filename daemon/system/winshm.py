"""Named shared memory on Windows with an explicit security descriptor (ctypes, no pywin32).

Used for regions when the daemon runs as a service (TRTD_SHM_GLOBAL=1, set by the service
runner): Python's multiprocessing.shared_memory creates mappings in the creating session's
Local\\ namespace with the default DACL, which user processes in other sessions can neither
find nor open. Here the name is Global\\... (platform.windows_mapping_name) and the DACL comes
from platform.mapping_sddl. The object exists while any handle or view is open, so the daemon
holding it is what keeps a region alive, as on POSIX.

NOT RUN ON WINDOWS YET: written against the Win32 documentation and type-checked with
`mypy --platform win32`; the README says so.
"""

from __future__ import annotations

import ctypes
import sys
from ctypes import wintypes

if sys.platform == "win32":
    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)

    class _SecurityAttributes(ctypes.Structure):
        _fields_ = [("nLength", wintypes.DWORD), ("lpSecurityDescriptor", wintypes.LPVOID),
                    ("bInheritHandle", wintypes.BOOL)]

    _kernel32.CreateFileMappingW.restype = wintypes.HANDLE
    _kernel32.CreateFileMappingW.argtypes = [wintypes.HANDLE, ctypes.POINTER(_SecurityAttributes),
                                             wintypes.DWORD, wintypes.DWORD, wintypes.DWORD,
                                             wintypes.LPCWSTR]
    _kernel32.MapViewOfFile.restype = wintypes.LPVOID
    _kernel32.MapViewOfFile.argtypes = [wintypes.HANDLE, wintypes.DWORD, wintypes.DWORD,
                                        wintypes.DWORD, ctypes.c_size_t]
    _kernel32.UnmapViewOfFile.argtypes = [wintypes.LPCVOID]
    _kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    _kernel32.LocalFree.argtypes = [wintypes.HLOCAL]
    _advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW.argtypes = [
        wintypes.LPCWSTR, wintypes.DWORD, ctypes.POINTER(wintypes.LPVOID),
        ctypes.POINTER(wintypes.ULONG)]

_INVALID_HANDLE_VALUE = -1
_PAGE_READWRITE = 0x04
_SEC_COMMIT = 0x08000000          # commit the pages now: no room is an error here, not later
_FILE_MAP_ALL_ACCESS = 0x000F001F
_SDDL_REVISION_1 = 1
_ERROR_ALREADY_EXISTS = 183


class WindowsMapping:
    """Quacks like multiprocessing.shared_memory.SharedMemory for the region registry."""

    _fd = -1  # no descriptor to close (regions.py checks it)

    def __init__(self, name: str, size: int, sddl: str):
        if sys.platform != "win32":
            raise OSError("WindowsMapping exists on Windows only")
        self.name = name
        self.size = size
        descriptor = wintypes.LPVOID()
        if not _advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl, _SDDL_REVISION_1, ctypes.byref(descriptor), None):
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            attributes = _SecurityAttributes(ctypes.sizeof(_SecurityAttributes), descriptor, False)
            handle = _kernel32.CreateFileMappingW(
                wintypes.HANDLE(_INVALID_HANDLE_VALUE), ctypes.byref(attributes),
                _PAGE_READWRITE | _SEC_COMMIT, (size >> 32) & 0xFFFFFFFF, size & 0xFFFFFFFF, name)
            error = ctypes.get_last_error()
        finally:
            _kernel32.LocalFree(descriptor)
        if not handle:
            raise ctypes.WinError(error)
        if error == _ERROR_ALREADY_EXISTS:
            _kernel32.CloseHandle(handle)
            raise FileExistsError(f"a mapping named {name} exists already")
        address = _kernel32.MapViewOfFile(handle, _FILE_MAP_ALL_ACCESS, 0, 0, size)
        if not address:
            error = ctypes.get_last_error()
            _kernel32.CloseHandle(handle)
            raise ctypes.WinError(error)
        self._handle = handle
        self._address = address
        self._array = (ctypes.c_ubyte * size).from_address(address)
        self.buf: memoryview | None = memoryview(self._array).cast("B")

    def close(self) -> None:
        if self.buf is None:
            return
        self.buf.release()  # BufferError while numpy views are alive: the caller drops them first
        self.buf = None
        _kernel32.UnmapViewOfFile(self._address)
        _kernel32.CloseHandle(self._handle)

    def unlink(self) -> None:
        """Nothing to do: a mapping goes with its last handle (close())."""
