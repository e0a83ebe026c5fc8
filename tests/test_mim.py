# Copyright (c) InternImage-MM contributors. Licensed under the MIT License.
"""`mim search internimage-mm` (openmim) lists every model of
model-index.yml: setup.py puts the index and the configs where openmim
looks (internimage/.mim)."""
import os
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def indexed_models():
    with open(os.path.join(ROOT, 'model-index.yml'), encoding='utf-8') as f:
        index = yaml.safe_load(f)
    names = []
    for metafile in index['Import']:
        with open(os.path.join(ROOT, metafile), encoding='utf-8') as f:
            names += [m['Name'] for m in yaml.safe_load(f)['Models']]
    return names


@pytest.fixture(scope='module')
def installed_here():
    """Skip unless internimage-mm is installed from this checkout (what
    tools/setup_env.sh does): openmim reads the installed package."""
    from mim.utils import get_installed_path, is_installed
    if not is_installed('internimage-mm'):
        pytest.skip('internimage-mm is not installed (pip install -e .)')
    path = get_installed_path('internimage-mm')
    if os.path.realpath(path) != os.path.join(os.path.realpath(ROOT),
                                              'internimage'):
        pytest.skip(f'internimage-mm is installed from {path}, not from '
                    'this checkout')


def test_mim_search_lists_every_model(installed_here):
    from mim.commands.search import get_model_info
    table = get_model_info('internimage-mm')
    assert sorted(table.index) == sorted(indexed_models())
    name = 'upernet_internimage-t_8xb2-160k_ade20k-512x512'
    row = table.loc[name]
    assert row['parameters'] == 59000000
    assert row['config'] == f'configs/mmseg/{name}.py'


def test_mim_command_line(installed_here):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT, os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run(
        [sys.executable, '-m', 'mim', 'search', 'internimage-mm',
         '--field', 'parameters', '--model', 'internimage-seg'],
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'upernet_internimage-h_16xb1-160k_ade20k-896x896' in proc.stdout
    assert 'mask-rcnn' not in proc.stdout
