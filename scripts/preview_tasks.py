"""Render a top-down view and the camera-2 view of every custom quadruped task after a reset.

Usage: python scripts/preview_tasks.py --outdir previews [--seed 0]

Writes `<task>_top.png` and `<task>_camera2.png` (256x256) per task and prints their paths.
Uses MUJOCO_GL if set, EGL otherwise; never imports TensorFlow.
"""

import argparse
import os
import pathlib

import numpy as np

_SIZE = 256
_VIEW_MARGIN = 1.5


def _top_view(physics):
    """Renders straight down on the box that holds the robot, the goal and every obstacle."""
    from dm_control.mujoco import engine

    names = [physics.model.id2name(i, 'body') for i in range(physics.model.nbody)]
    shown = [n for n in names if n == 'torso' or n == 'goal' or n.startswith('obstacle_')]
    xy = physics.named.data.xpos[shown, :2]
    low, high = xy.min(axis=0), xy.max(axis=0)
    half_extent = (high - low).max() / 2 + _VIEW_MARGIN
    fovy = physics.model.vis.global_.fovy
    distance = half_extent / np.tan(np.deg2rad(fovy) / 2)
    camera = engine.MovableCamera(physics, _SIZE, _SIZE)
    camera.set_pose(lookat=[*(low + high) / 2, 0.0], distance=distance, azimuth=90, elevation=-90)
    return camera.render()


def main(argv=None):
    """Writes the preview PNGs of every task and prints their paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--outdir', required=True, type=pathlib.Path, help='output directory')
    parser.add_argument('--seed', type=int, default=0, help='task seed')
    args = parser.parse_args(argv)

    os.environ.setdefault('MUJOCO_GL', 'egl')
    import imageio

    from dreamer_lsp import quadruped_tasks

    args.outdir.mkdir(parents=True, exist_ok=True)
    for name in quadruped_tasks.TASKS:
        env = quadruped_tasks.load(name, seed=args.seed)
        env.reset()
        images = {
            'top': _top_view(env.physics),
            'camera2': env.physics.render(_SIZE, _SIZE, camera_id=2),
        }
        for view, image in images.items():
            path = args.outdir / f'{name}_{view}.png'
            imageio.imwrite(path, image)
            print(path)


if __name__ == '__main__':
    main()
