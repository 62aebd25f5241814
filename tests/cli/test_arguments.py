"""The CLI's argument types: one minimum per meaning, and the commands use them."""

from __future__ import annotations

import argparse

import pytest

from minetrain.cli import arguments
from minetrain.cli.main import main


def test_count_and_non_negative_minima() -> None:
    assert arguments.count("1") == 1
    assert arguments.non_negative("0") == 0
    for parse, text in ((arguments.count, "0"), (arguments.non_negative, "-1"), (arguments.count, "two")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_frame_size_forms_and_minimum() -> None:
    assert arguments.frame_size("64") == (64, 64)
    assert arguments.frame_size("64x36") == (64, 36)
    assert arguments.frame_size("1x1") == (1, 1)
    for text in ("0x4", "4x0", "wide", "4xtall"):
        with pytest.raises(argparse.ArgumentTypeError):
            arguments.frame_size(text)


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "synth", "out", "--size", "15"],
        ["data", "synth", "out", "--episodes", "0"],
        ["data", "convert", "vpt", "src", "out", "--size", "0x4"],
        ["data", "view", "d", "--episode", "e", "--out", "x.png", "--start", "-1"],
        ["data", "sample", "d", "--out", "x.png", "--batch-index", "-1"],
        ["evaluate", "ckpt", "d", "--frame-size", "0"],
        ["evaluate", "ckpt", "d", "--workers", "-1"],
    ],
)
def test_commands_reject_below_minimum(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "must be >=" in capsys.readouterr().err
