"""BC keeps both modes of a bimodal action distribution (a Gaussian policy would average them)."""
import numpy as np
import torch

from swfp_ros.algo.bc import train_bc
from swfp_ros.algo.config import FlowConfig


def test_bc_keeps_both_modes(tmp_path):
    rng = np.random.default_rng(0)
    n = 4000
    obs = rng.normal(size=(n, 2)).astype(np.float32)
    modes = np.array([[-0.6, 0.0], [0.6, 0.0]], np.float32)
    acts = (modes[rng.integers(0, 2, n)] + 0.05 * rng.normal(size=(n, 2))).astype(np.float32)
    flow, norm, metrics = train_bc(obs, acts, FlowConfig(hidden=64, layers=2), steps=2000, batch=256, lr=2e-3,
                                   log_dir=str(tmp_path / 'tb'), progress=False, device='cpu')
    assert any(p.name.startswith('events.out.tfevents') for p in (tmp_path / 'tb').iterdir())
    with torch.no_grad():
        s = norm(torch.as_tensor(rng.normal(size=(4000, 2)).astype(np.float32)))
        a = flow.sample(s, generator=torch.Generator().manual_seed(0)).numpy()
    near = [np.mean(np.linalg.norm(a - m, axis=1) < 0.25) for m in modes]
    print('fraction near each mode', near, 'final loss', metrics['final_loss'])
    assert min(near) > 0.3
    # Little mass between the modes: a Gaussian fit (std ~0.6 in x) would put ~26 % in |x| < 0.2.
    assert np.mean(np.abs(a[:, 0]) < 0.2) < 0.15
