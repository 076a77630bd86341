"""The `trtd` command line: the only package that imports both the daemon and the SDK."""
