# -*- test-case-name: piko.test.policy -*-
"""
Traffic policy per endpoint, applied on the node where a request enters.

A ``policies:`` list in the server YAML (:mod:`piko.config._policies`) is checked
and compiled (:mod:`piko.policy.config`) into a :class:`~piko.policy.engine.PolicySet`;
:class:`~piko.policy.handler.PolicyHandler` wraps the proxy port's request
handler and applies the first policy matching the request's endpoint before
any routing or forwarding: IP rules (:mod:`~piko.policy.ipfilter`), basic auth
(:mod:`~piko.policy.basicauth`), rate limits (:mod:`~piko.policy.ratelimit`
over a bounded :mod:`~piko.policy.buckets` store), header rules
(:mod:`~piko.policy.headers`) and limits (:mod:`~piko.policy.limits`).
:mod:`~piko.policy.reload` swaps the set atomically on ``SIGHUP`` or an admin
``POST``.

This package's ``__init__`` imports nothing, so the configuration models can
import :mod:`piko.config._policies` without a cycle.
"""
