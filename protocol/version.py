"""Protocol version: bumped on any change a peer built against SPEC.md would notice."""

PROTOCOL_VERSION = 1
# Versions this side can speak; a daemon refuses others with UNSUPPORTED_VERSION.
SUPPORTED_VERSIONS = (1,)
