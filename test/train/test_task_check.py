"""Does a checkpoint or dataset fit a task: each kind of mismatch is named in one sentence, and a fit is None."""
import pytest

from swfp_ros.train.task_check import observation_mismatch, task_spaces

LABELS = ['q1', 'q2', 'goal_x', 'goal_y']


def mismatch(their_task, their_labels, their_obs_dim=4, task='reach'):
    return observation_mismatch('checkpoint c.pt', task, LABELS, their_task, their_labels, their_obs_dim, 'use X')


@pytest.mark.parametrize('their_task, their_labels, their_dim', [
    ('reach', LABELS, 4),          # what the file records matches
    (None, LABELS, 4),             # no task recorded, the same labels
    (None, None, 4),               # nothing recorded but the size, and it fits
    ('', None, 4),                 # an empty task name is no task
])
def test_a_file_that_fits_has_no_mismatch(their_task, their_labels, their_dim):
    assert mismatch(their_task, their_labels, their_dim) is None


@pytest.mark.parametrize('their_task, their_labels, their_dim, expected', [
    ('push', LABELS, 4, 'checkpoint c.pt is for task push, not reach (4 observations, the task has 4); use X'),
    (None, ['q1', 'q2', 'goal_x', 'goal_y', 'puck_x', 'puck_y', 'puck_z', 'puck_w'], 8,
     "checkpoint c.pt observes 8 values that differ from task reach's 4 (it has ['puck_x', 'puck_y', 'puck_z'] and "
     '1 more that the task lacks); use X'),
    (None, ['q1'], 1, "checkpoint c.pt observes 1 values that differ from task reach's 4 (lacks ['q2', 'goal_x', "
                      "'goal_y']); use X"),
    (None, ['q1', 'q2', 'goal_x', 'goal_z'], 4,
     "checkpoint c.pt observes 4 values that differ from task reach's 4 (it has ['goal_z'] that the task lacks and "
     "lacks ['goal_y']); use X"),
    (None, ['q2', 'q1', 'goal_x', 'goal_y'], 4,
     "checkpoint c.pt observes 4 values that differ from task reach's 4 (same labels in another order); use X"),
    (None, None, 5, 'checkpoint c.pt takes 5 observations but task reach gives 4 (the file records no task); use X'),
])
def test_each_mismatch_is_one_sentence_naming_it(their_task, their_labels, their_dim, expected):
    assert mismatch(their_task, their_labels, their_dim) == expected


def test_task_spaces_are_the_environments_labels_and_action_size():
    labels, act_dim = task_spaces('panda_reach')
    assert act_dim == 7 and len(labels) == 20
    assert labels[:2] == ['panda_joint1.position', 'panda_joint2.position']
    assert labels[-3:] == ['goal_x', 'goal_y', 'goal_z']
