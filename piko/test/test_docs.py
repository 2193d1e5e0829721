# -*- test-case-name: piko.test.test_docs -*-
"""
The Sphinx documentation builds with warnings as errors, and its generated
CLI and YAML reference covers every option of every program.

Skipped when Sphinx or MyST-Parser is not installed (they are in the
``test`` and ``docs`` extras).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from piko.config import AgentConfig, ForwardConfig, ServerConfig
from piko.config._load import field_kind

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _require_sphinx() -> None:
    for module in ("sphinx", "myst_parser"):
        if importlib.util.find_spec(module) is None:
            raise SkipTest(f"{module} is not installed (pip install '.[docs]')")
    if not (DOCS / "conf.py").exists():
        raise SkipTest("docs/ is not next to this checkout")


def _extension() -> Any:
    _require_sphinx()
    spec = importlib.util.spec_from_file_location("piko_options", DOCS / "_ext" / "piko_options.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scalar_keys(model: type, prefix: str = "") -> list[str]:
    keys = []
    for a in attrs.fields(model):
        kind = field_kind(a)
        if kind == "section":
            keys += _scalar_keys(a.type, f"{prefix}{a.name}.")
        elif kind == "sections":
            keys += _scalar_keys(a.type.__args__[0], f"{prefix}{a.name}[].")
        else:
            keys.append(prefix + a.name)
    return keys


class GeneratedReferenceTests(SynchronousTestCase):
    """
    The ``piko_options`` Sphinx extension renders the option tables completely.
    """

    def test_every_flag_of_every_command_is_rendered(self) -> None:
        """Each flag visible at each command of each program appears in that program's page."""
        ext = _extension()
        from piko.config._options import visible_options

        for name, root in ext.COMMANDS.items():
            text = "\n".join(ext.command_lines(root))
            for chain in ext.walk((root,)):
                for option in visible_options(chain):
                    self.assertIn(f"--{option.flag}", text, f"piko {name}")

    def test_every_yaml_key_is_rendered(self) -> None:
        """Each scalar YAML key of each program's model has a row in its YAML table."""
        ext = _extension()
        for name, model in (
            ("server", ServerConfig),
            ("agent", AgentConfig),
            ("forward", ForwardConfig),
        ):
            rendered = {row[0] for row in ext.yaml_rows(*ext.MODELS[name])}
            for key in _scalar_keys(model):
                self.assertIn(ext.literal(key), rendered, f"{name}: {key}")

    def test_escape(self) -> None:
        """Help text with reST markup characters is rendered literally."""
        ext = _extension()
        self.assertEqual(ext.escape("a_b *c* `d` |e|"), "a\\_b \\*c\\* \\`d\\` \\|e\\|")
        self.assertEqual(ext.literal(""), "—")


class SphinxBuildTests(TestCase):
    """
    ``python -m sphinx -W --keep-going -b html docs <dir>`` succeeds.
    """

    timeout = 240

    @inlineCallbacks
    def test_docs_build_without_warnings(self) -> Any:
        """The HTML build, warnings as errors, writes every page and the generated references."""
        _require_sphinx()
        out_dir = Path(self.mktemp())
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            [
                "-m",
                "sphinx",
                "-W",
                "--keep-going",
                "-q",
                "-b",
                "html",
                "-d",
                str(out_dir.resolve() / "doctrees"),
                str(DOCS),
                str(out_dir.resolve() / "html"),
            ],
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            path=str(ROOT),
            reactor=reactor,
        )
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        html = out_dir / "html"
        for page in ("index", "getting-started", "kubernetes", "auth", "reference/server"):
            self.assertTrue((html / f"{page}.html").exists(), page)
        server = (html / "reference" / "server.html").read_text(encoding="utf-8")
        self.assertIn("--proxy.tls.client-cas", server)
        self.assertIn("cluster.node_id_prefix", server)
        api = (html / "reference" / "api.html").read_text(encoding="utf-8")
        self.assertIn("PikoServerService", api)
