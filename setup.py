"""The package's metadata is in pyproject.toml; the package list is here (see the comment at
the top of pyproject.toml: setuptools' pyproject.toml schema refuses the dashed package name in
older versions, setup() arguments do not). This file also keeps `python setup.py ...` and tools
that look for setup.py working."""

from setuptools import setup

setup(packages=["youtube-8m"], package_data={"youtube-8m": ["vocabulary.csv"]})
