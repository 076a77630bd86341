"""Protocol fuzzing against a real daemon process, with hypothesis.

    python -m trtd.bench.fuzz --examples 5000          # each kind; starts its own daemon

Every case is a frame (or frames) a hostile or buggy client could send: random
bytes, valid messages mutated (truncated, bytes flipped, hostile length
prefixes, trailing bytes), typed requests of every op with wrong types in any
field, extreme shapes (0, negative, dtype x shape overflow), offsets at and past
the region's end, replayed, forged and stolen lease tokens, extra frames,
frames over the size limit, routing ids the peer chose (zero-prefixed, twice the same), raw
bytes on the socket (broken greetings, hostile ZMTP frame headers after a valid handshake). Privileged ops (load, unload, reload) are sent
both without the admin token (UNAUTHORIZED) and, for a share of cases, with
the daemon's real token, so that their own argument checks are fuzzed too.
Never a `shutdown` with the token: any well-formed one (extra fields are
ignored) stops the daemon by design, which would end the campaign, not find a
bug; nor an `unload` of the model the checks run on. After each case the checks are:

- the daemon answers exactly one error or result per single-frame request (none
  for what breaks the wire protocol: it closes that connection), and is alive;
- nothing was written outside a region: guard regions (the fuzzer's own and
  another client's) keep their pattern, and the fuzzer's work region changed
  only inside output areas of successful requests;
- a well-behaved client running alongside keeps getting correct answers.

tests/test_fuzz.py runs a few hundred cases per kind in CI; this command runs
longer campaigns and writes a JSON summary. The parts: strategies.py (what is sent),
target.py (sending and the checks), bystander.py (the well-behaved client), campaign.py
(the command).
"""

