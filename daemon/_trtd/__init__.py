"""trtd: a local inference daemon (the root of the `trtd` import namespace).

The product's folders sit at the repository root and pyproject.toml maps each one into this
package (`trtd.protocol` <- protocol/, `trtd.daemon` <- daemon/, ...). This file lives in
daemon/_trtd/ only because the top-level layout is fixed; it is installed as `trtd/__init__.py`.

`__version__` is the one place the version is written: pyproject.toml reads it when the package
is built (`[tool.setuptools.dynamic]`), so the installed metadata and `trtd --version` agree.
Keep this module free of imports: every `import trtd.sdk` in an application runs it.
"""

__version__ = "0.1.0"
