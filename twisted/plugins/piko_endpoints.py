"""Registers the ``piko:`` endpoint-string parsers (see :mod:`piko.client.endpoints`)."""

from piko.client.endpoints import PikoClientParser, PikoServerParser

pikoServerEndpointParser = PikoServerParser()
pikoClientEndpointParser = PikoClientParser()
