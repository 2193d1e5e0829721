"""
The hostile-input suite: malformed, oversized, slow and flooding input on every
port and codec, each answered with a clear error while the node keeps serving
others and nothing leaks.  ``docs/hostile-input.md`` tables every case.
"""
