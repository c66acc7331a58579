"""Atomic output files: a failed write (an error or Ctrl-C part-way) leaves the earlier file and no temporary one."""
import os

import numpy as np
import pytest

from swfp_ros.data import DemoDataset, Episode
from swfp_ros.files import atomic_path, write_text_atomic


@pytest.mark.parametrize('failure', [OSError('disk full'), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, failure):
    target = tmp_path / 'out.json'
    target.write_text('earlier output')
    with pytest.raises(type(failure)):
        with atomic_path(target) as tmp:
            with open(tmp, 'w') as f:
                f.write('half of the new')
            raise failure
    assert target.read_text() == 'earlier output' and os.listdir(tmp_path) == ['out.json']
    write_text_atomic(target, 'new output')
    assert target.read_text() == 'new output' and os.listdir(tmp_path) == ['out.json']
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())    # usual permissions, not mkstemp's 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_dataset_save_that_cannot_replace_its_target_leaves_nothing(tmp_path):
    ds = DemoDataset([Episode(np.zeros((3, 2)), np.zeros((3, 1)))], task='t')
    (tmp_path / 'd.npz').mkdir()                 # the target is a folder: the final rename fails
    (tmp_path / 'd.npz' / 'keep').write_text('x')
    with pytest.raises(OSError):
        ds.save(tmp_path / 'd.npz')
    assert os.listdir(tmp_path) == ['d.npz'] and os.listdir(tmp_path / 'd.npz') == ['keep']


def test_missing_parent_folders_are_created_and_only_the_file_is_left(tmp_path):
    target = tmp_path / 'runs' / 'a' / 'summary.json'
    write_text_atomic(target, '{}')
    assert target.read_text() == '{}' and os.listdir(target.parent) == ['summary.json']
