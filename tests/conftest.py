# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
import os
import sys

# Tests import the project's packages from this checkout.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'slow: full-size runs (> ~20 s); their small versions '
        'run unmarked')
