# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
import importlib.util
import os

import pytest

# The project's packages are imported from this checkout: setup.cfg's
# pytest ``pythonpath``.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'slow: full-size runs (> ~20 s); their small versions '
        'run unmarked')


@pytest.fixture(scope='session')
def tool():
    """``tool('get_flops')`` imports tools/get_flops.py, so that a test runs
    its ``main(argv)`` in-process (a subprocess costs seconds of imports)."""
    def load(name):
        spec = importlib.util.spec_from_file_location(
            f'tools_{name}', os.path.join(ROOT, 'tools', f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(autouse=True)
def isolated_default_scope():
    """Each test starts and ends with no mmengine default scope and no
    visualizer. A Runner (or ``init_default_scope``) leaves its library's
    scope current, also from a module-scoped fixture, which would send
    another library's ``MODELS.build`` to the wrong registry later in the
    session. Visualizers are global instances by name: the configs name
    theirs 'visualizer', so a later Runner would get an earlier test's
    (another library's class, writing its logs into the earlier work dir)."""
    from mmengine.registry import DefaultScope
    from mmengine.visualization import Visualizer

    def clear():
        DefaultScope._instance_dict.clear()
        classes = [Visualizer]
        while classes:
            cls = classes.pop()
            cls._instance_dict.clear()
            classes.extend(cls.__subclasses__())

    clear()
    yield
    clear()
