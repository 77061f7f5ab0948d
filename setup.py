"""The package's metadata is in pyproject.toml; this file keeps `python setup.py ...` and
tools that look for setup.py (e.g. a cloud job's --package-path packaging) working."""

from setuptools import setup

setup()
