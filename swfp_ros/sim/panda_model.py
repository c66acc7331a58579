"""The Franka Emika Panda as a MuJoCo model: the default one, or a user-supplied MJCF.

The default is the 9-DoF Panda (7 arm + 2 finger joints, position actuators, meshes) shipped by
gymnasium-robotics under ``envs/assets/kitchen_franka/franka_assets``, Apache-2.0, used from the installed package
(its own env classes are not imported: they break on mujoco >= 3.12). Its joint limits are Franka's published ones.
Two changes are made on load, both to match a real Panda under ros2_control:
- joints are renamed ``robot:panda0_jointN`` -> ``panda_jointN`` (the names franka_description publishes);
- every body gets gravity compensation, as the Panda's own controller provides, so that a position target equal to
  the measured position holds the arm still.
"""
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

ARM_JOINTS = tuple(f'panda_joint{i}' for i in range(1, 8))
FINGER_JOINTS = ('panda_finger_joint1', 'panda_finger_joint2')
EE_SITE = 'end_effector'


def franka_assets_dir() -> Path:
    """Folder of the Panda MJCF files inside the installed gymnasium-robotics (found without importing it)."""
    spec = importlib.util.find_spec('gymnasium_robotics')
    if spec is None or spec.origin is None:
        raise FileNotFoundError('gymnasium-robotics is not installed: it provides the default Panda model '
                                '(pip install gymnasium-robotics==1.4.2), or pass model_path=<your panda MJCF>')
    return Path(spec.origin).parent / 'envs' / 'assets' / 'kitchen_franka' / 'franka_assets'


def _include_body(path: Path) -> str:
    text = path.read_text()
    match = re.search(r'<mujocoinclude>(.*)</mujocoinclude>', text, re.S)
    if match is None:
        raise ValueError(f'{path}: expected a <mujocoinclude> file')
    return match.group(1).replace('robot:panda0_', 'panda_')


def default_panda_xml() -> str:
    """One self-contained MJCF string of the Panda (includes inlined, absolute mesh directory)."""
    assets_dir = franka_assets_dir()
    assets = _include_body(assets_dir / 'assets.xml').replace(
        'meshdir="franka_assets/meshes"', f'meshdir="{assets_dir / "meshes"}"')
    actuators = _include_body(assets_dir / 'actuator.xml')
    chain = _include_body(assets_dir / 'chain.xml')
    return f'<mujoco model="panda">{assets}{actuators}<worldbody>{chain}</worldbody></mujoco>'


def load_panda_spec(model_path: str | None = None) -> mujoco.MjSpec:
    """The robot as an editable MjSpec; the task adds its own scene (floor, goal, object) to it.

    A user MJCF must have the arm joints ``panda_joint1..7`` with a position actuator each and a site
    ``end_effector``; finger joints are optional.
    """
    if model_path:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f'Panda model file not found: {path}')
        spec = mujoco.MjSpec.from_file(str(path))
    else:
        spec = mujoco.MjSpec.from_string(default_panda_xml())
    for body in spec.bodies:
        body.gravcomp = 1.0
    return spec


@dataclass(frozen=True)
class ArmIndex:
    """Addresses of the arm in a compiled model, looked up by name (never by position in the file)."""
    qpos: np.ndarray          # qpos addresses of the 7 arm joints
    dof: np.ndarray           # dof (qvel) addresses of the 7 arm joints
    actuator: np.ndarray      # actuator ids driving the 7 arm joints
    lower: np.ndarray         # joint limits (rad)
    upper: np.ndarray
    finger_names: tuple[str, ...]  # the finger joints the model has, of FINGER_JOINTS (may be none)
    finger_qpos: np.ndarray   # their qpos addresses
    finger_dof: np.ndarray
    finger_actuator: np.ndarray
    ee_site: int

    @classmethod
    def from_model(cls, model: mujoco.MjModel) -> 'ArmIndex':
        def joint(name):
            jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if jid < 0:
                raise ValueError(f'model has no joint {name!r}')
            return jid

        def actuator_of(jid, name):
            ids = [a for a in range(model.nu) if model.actuator_trnid[a, 0] == jid]
            if not ids:
                raise ValueError(f'no actuator drives joint {name!r}')
            return ids[0]

        arm = [joint(n) for n in ARM_JOINTS]
        finger_ids = {n: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in FINGER_JOINTS}
        finger_names = tuple(n for n, j in finger_ids.items() if j >= 0)
        fingers = [finger_ids[n] for n in finger_names]
        ee = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, EE_SITE)
        if ee < 0:
            raise ValueError(f'model has no site {EE_SITE!r}')
        return cls(
            qpos=np.array([model.jnt_qposadr[j] for j in arm]),
            dof=np.array([model.jnt_dofadr[j] for j in arm]),
            actuator=np.array([actuator_of(j, n) for j, n in zip(arm, ARM_JOINTS)]),
            lower=np.array([model.jnt_range[j, 0] for j in arm]),
            upper=np.array([model.jnt_range[j, 1] for j in arm]),
            finger_names=finger_names,
            finger_qpos=np.array([model.jnt_qposadr[j] for j in fingers], dtype=int),
            finger_dof=np.array([model.jnt_dofadr[j] for j in fingers], dtype=int),
            finger_actuator=np.array([actuator_of(j, n) for j, n in zip(fingers, finger_names)], dtype=int),
            ee_site=ee,
        )
