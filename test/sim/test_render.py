"""Renders show the task's goal: the marker's pixels sit where the goal projects into the image."""
import numpy as np
import pytest

from swfp_ros.sim import make_env

WIDTH, HEIGHT = 480, 360


def project(scene, point: np.ndarray) -> np.ndarray:
    """Pixel index (column, row; row 0 at the top) of a world point, through the scene's camera as last rendered."""
    camera = scene.camera[0]
    forward, up = np.asarray(camera.forward, np.float64), np.asarray(camera.up, np.float64)
    right = np.cross(forward, up)
    # The scene keeps a left and a right eye (half the interpupillary distance either side); a mono render is from
    # their midpoint.
    eye = (np.asarray(scene.camera[0].pos, np.float64) + np.asarray(scene.camera[1].pos, np.float64)) / 2
    rel = np.asarray(point, np.float64) - eye
    x, y, depth = rel @ right, rel @ up, rel @ forward
    half_height = (camera.frustum_top - camera.frustum_bottom) / 2
    half_width = half_height * WIDTH / HEIGHT
    x_ndc = (camera.frustum_near * x / depth - camera.frustum_center) / half_width
    y_ndc = (camera.frustum_near * y / depth - (camera.frustum_top + camera.frustum_bottom) / 2) / half_height
    # Pixel indices: pixel i covers [i, i + 1) of the image plane.
    return np.array([WIDTH / 2 * (1 + x_ndc), HEIGHT / 2 * (1 - y_ndc)]) - 0.5


def marker_pixels(env) -> tuple[np.ndarray, np.ndarray]:
    """(green pixels that go when the goal marker is hidden, all pixels that change)."""
    model = env.unwrapped.model
    with_marker = env.render().astype(np.int32)
    alpha = model.site('goal').rgba[3]
    model.site('goal').rgba[3] = 0.0
    try:
        without = env.render().astype(np.int32)
    finally:
        model.site('goal').rgba[3] = alpha
    changed = np.abs(with_marker - without).sum(-1) > 30
    red, green, blue = np.moveaxis(with_marker, -1, 0)
    # Green where the image changed: the marker itself, not the shadow it casts on the floor.
    return changed & (green > red + 40) & (green > blue + 40), changed


@pytest.mark.parametrize('task, seed', [('panda_reach', 0), ('panda_reach', 5), ('panda_push', 0), ('panda_push', 5)])
def test_goal_marker_is_drawn_at_the_goal(task, seed):
    env = make_env(task, render_mode='rgb_array', width=WIDTH, height=HEIGHT)
    try:
        env.reset(seed=seed)
        goal = env.unwrapped.goal.copy()
        if task == 'panda_push':
            goal[2] = 0.0    # the push target is drawn on the floor under the goal
        mask, changed = marker_pixels(env)
        expected = project(env.unwrapped._renderer.scene, goal)
    finally:
        env.close()
    rows, cols = np.nonzero(mask)
    assert len(rows) >= 10, f'{task}: the goal marker is not drawn ({len(rows)} green pixels go when it is hidden)'
    centre = np.array([cols.mean(), rows.mean()])
    assert np.linalg.norm(centre - expected) < 2.0, \
        f'{task}: marker drawn at pixel {centre.round(1)}, the goal projects to {expected.round(1)}'
    assert (cols.max() - cols.min()) < 60 and (rows.max() - rows.min()) < 60, 'the marker is not one small blob'
    assert mask.sum() >= 0.3 * changed.sum(), 'most of what the marker changes is not the green marker'
