"""MuJoCo Franka Panda tasks (gymnasium), scripted experts and offscreen rendering: mujoco + gymnasium only."""
