"""``minetrain data ...``: build, convert, inspect, verify and look at trajectory datasets."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="create, convert, inspect and verify datasets")
    data_sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    del data_sub  # sub-commands are added as the data tools land
