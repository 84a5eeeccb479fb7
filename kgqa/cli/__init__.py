"""Thin Hydra entry points over conf/."""
from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
