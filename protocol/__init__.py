"""trtd.protocol: the wire contract (messages, codec, dtypes, layout, shape checks, errors). No I/O.

SPEC.md beside this file is the normative, language-neutral description.
"""

from .codec import (MAX_REPLY_BYTES, MAX_REQUEST_BYTES, Envelope, Reply, decode_envelope, decode_reply,
                    decode_request, encode_error, encode_reply, encode_request)
from .dtypes import WIRE_DTYPES, from_numpy, is_wire_dtype, itemsize, to_numpy
from .endpoint import ENDPOINT_ENV, default_endpoint, resolve_endpoint
from .errors import ErrorCode, ProtocolError
from .layout import ALIGNMENT, Slot, align_up, first_overlap, plan_slots, tensor_nbytes
from .messages import *  # noqa: F401,F403  (the message classes are the module's API)
from .messages import REQUEST_TYPES, Request
from .shapes import MAX_RANK, batch_problem, format_tensor, shape_problem
from .version import PROTOCOL_VERSION, SUPPORTED_VERSIONS

# The package version, written once in trtd/__init__.py (daemon/_trtd/); hello and status send it.
from trtd import __version__ as SERVER_VERSION  # noqa: E402
