"""Timed choices survive the process, per machine, and a broken cache never stops a run."""

from __future__ import annotations

import json

import pytest

from rafttool.engine import timing_cache


@pytest.fixture
def cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(timing_cache.DIRECTORY_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.setattr(timing_cache, "_loaded", {})
    return tmp_path / "cache"


def new_process(monkeypatch) -> None:
    monkeypatch.setattr(timing_cache, "_loaded", {})


def test_a_stored_choice_is_recalled_by_a_later_process(cache_dir, monkeypatch):
    assert timing_cache.recall("route a") is None
    timing_cache.remember("route a", True)
    timing_cache.remember("gain b", 0.5)
    new_process(monkeypatch)
    assert timing_cache.recall("route a") is True and timing_cache.recall("gain b") == 0.5
    (stored,) = cache_dir.iterdir()
    assert stored == timing_cache.cache_file() and not list(cache_dir.glob(".*"))  # no temp file left


def test_choices_of_two_processes_merge_in_one_file(cache_dir, monkeypatch):
    timing_cache.remember("first", True)
    new_process(monkeypatch)
    timing_cache.recall("anything")  # the second process reads the file before the first writes again
    other = timing_cache._read(timing_cache.cache_file())
    timing_cache._loaded.clear()
    timing_cache.remember("second", False)
    new_process(monkeypatch)
    assert other == {"first": True}
    assert timing_cache.recall("first") is True and timing_cache.recall("second") is False


def test_another_machine_or_version_does_not_see_the_choices(cache_dir, monkeypatch):
    timing_cache.remember("route", True)
    path = timing_cache.cache_file()
    new_process(monkeypatch)
    monkeypatch.setattr(timing_cache.torch, "__version__", "0.0.1")
    assert timing_cache.cache_file() != path and timing_cache.recall("route") is None
    new_process(monkeypatch)
    stored = json.loads(path.read_text())
    stored["machine"]["torch"] = "0.0.1"  # a file whose contents name another machine
    timing_cache.cache_file().write_text(json.dumps(stored))
    assert timing_cache.recall("route") is True
    stored["machine"]["cpu"] = "another CPU"
    timing_cache.cache_file().write_text(json.dumps(stored))
    new_process(monkeypatch)
    assert timing_cache.recall("route") is None


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", '{"machine": 3, "choices": {}}'])
def test_a_corrupt_file_is_ignored_and_replaced(cache_dir, content):
    cache_dir.mkdir()
    timing_cache.cache_file().write_text(content)
    assert timing_cache.recall("route") is None
    timing_cache.remember("route", False)
    assert json.loads(timing_cache.cache_file().read_text())["choices"] == {"route": False}


def test_an_unwritable_place_or_off_keeps_choices_in_memory(monkeypatch, tmp_path):
    monkeypatch.setattr(timing_cache, "_loaded", {})
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv(timing_cache.DIRECTORY_VARIABLE, str(blocker))
    timing_cache.remember("route", True)
    assert timing_cache.recall("route") is True and blocker.is_file()
    monkeypatch.setenv(timing_cache.DIRECTORY_VARIABLE, "off")
    assert timing_cache.cache_file() is None
    timing_cache.remember("route", False)
    assert timing_cache.recall("route") is False


def test_the_default_place_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(timing_cache.DIRECTORY_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert timing_cache.cache_file().parent == tmp_path / "rafttool"
