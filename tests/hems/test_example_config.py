"""The shipped hems.example.toml loads, shows every setting of every section, and says the defaults.

A setting added to any settings class or command parser without a line in the example fails here,
and so does an example value that drifted from the code's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

import config
from access.tariff import Tariff
from access.tariff import load as load_tariff
from collector.config import COUNTER_INTERVAL_S, POWER_INTERVAL_S, CollectorConfig
from collector.config import load as load_collector
from config.flags import _options, section_defaults
from devices.cli import build_parser as devices_parser
from hems.demo import build_parser as demo_parser
from hems.serve import _parser as serve_parser
from pipeline.config import PipelineConfig
from pipeline.fleet_config import FleetConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "hems.example.toml"
PARSERS: dict[str, argparse.ArgumentParser] = {
    "serve": serve_parser(),
    "demo": demo_parser(),
    "devices": devices_parser(),
}


def _section_text(name: str) -> str:
    text = EXAMPLE.read_text(encoding="utf-8")
    start = text.index(f"\n[{name}]\n")
    following = re.search(r"^\[\[?[a-z_]+\]\]?$", text[start + 2 :], re.MULTILINE)
    return text[start : start + 2 + following.start()] if following else text[start:]


def _shown(name: str, key: str) -> bool:
    """The key is set, or shown commented out, in its section."""
    return re.search(rf"^#? ?{re.escape(key)} = ", _section_text(name), re.MULTILINE) is not None


def test_the_example_names_only_known_sections_in_their_order() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    headers = re.findall(r"^\[\[?([a-z_]+)\]\]?$", text, re.MULTILINE)
    assert headers == list(config.SECTIONS)


def test_pipeline_section_is_the_defaults_and_complete() -> None:
    assert PipelineConfig.load(EXAMPLE, env={}) == PipelineConfig()
    for f in dataclasses.fields(PipelineConfig):
        if f.name == "store_options":  # a sub-table, shown as its commented header
            assert "# [pipeline.store_options]" in _section_text("pipeline")
        else:
            assert _shown("pipeline", f.name), f.name


def test_fleet_section_is_the_defaults_and_complete() -> None:
    assert FleetConfig.load(EXAMPLE, env={}) == FleetConfig()
    for f in dataclasses.fields(FleetConfig):
        assert _shown("fleet", f.name), f.name


def test_collector_section_is_the_defaults_and_complete_and_its_household_loads() -> None:
    cfg = load_collector(EXAMPLE)
    defaults = CollectorConfig(devices=())
    for f in dataclasses.fields(CollectorConfig):
        if f.name in ("devices", "source"):
            continue
        assert getattr(cfg, f.name) == getattr(defaults, f.name), f.name
        assert _shown("collector", f.name), f.name
    assert _shown("collector", "power_interval_s") and _shown("collector", "counter_interval_s")
    assert {d.device for d in cfg.devices} == {"inverter", "meter", "smart_meter", "water_meter"}
    by_name = {d.device: d for d in cfg.devices}
    assert by_name["meter"].interval_s == POWER_INTERVAL_S
    assert by_name["water_meter"].interval_s == COUNTER_INTERVAL_S  # counters only


@pytest.mark.parametrize("section", sorted(PARSERS))
def test_command_sections_are_the_defaults_and_complete(section: str) -> None:
    parser = PARSERS[section]
    given = section_defaults(parser, config.read(EXAMPLE), section)
    for key, value in given.items():
        assert value == parser.get_default(key), key
    for key in _options(parser):
        assert _shown(section, key), f"[{section}] {key} is not in hems.example.toml"


def test_tariff_section_is_the_defaults_and_complete() -> None:
    cfile = config.read(EXAMPLE)
    assert load_tariff(cfile.section("tariff"), cfile.path) == Tariff()
    for f in dataclasses.fields(Tariff):
        assert _shown("tariff", f.name), f.name
