"""
A differential harness: the same generated exchanges through Go Piko v0.9.0
and through ours, in every pairing of server, agent and ``forward`` and in
two-node clusters, compared end to end.

Modules: :mod:`.spec` (the seeded generator), :mod:`.wire` (independent
HTTP/1.1 and WebSocket readers and writers), :mod:`.service` (the
instrumented local services), :mod:`.client` (the raw-socket client),
:mod:`.topology` (process launchers), :mod:`.oracle` (normalising and
comparing) and :mod:`.runner` (rounds, resource checks, the report).
``python -m piko.test.differential`` is the long run; ``test_short`` is the
short seeded run in the test suite.
"""
