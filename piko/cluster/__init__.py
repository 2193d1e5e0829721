"""
Clustering: Go Piko's gossip protocol and the state it replicates.

:mod:`piko.cluster.codec` is the sans-IO wire format (msgpack over UDP and
TCP, byte-identical to Go Piko v0.9.0), :mod:`piko.cluster.state` the
scuttlebutt state model and :mod:`piko.cluster.failure_detector` the
accrual failure detector that decides which peers are unreachable.
"""
