"""BlockUpdate: what the learner publishes to actors (one new block, or a whole policy after compaction).

Wire format (no pickle: actors deserialize bytes from the network):
    MAGIC (8 bytes, includes the format version) | header length (uint64 LE) | JSON header | raw float32 tensors
    | sha256 of everything before it (32 bytes)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from dataclasses import dataclass, field

import numpy as np
import torch

from .blocks import Cascade, RefinementBlock
from .config import FlowConfig
from .flow import FlowPolicy
from .normalize import ObsNormalizer

MAGIC = b'SWFPUPD1'
KINDS = ('block', 'base')


class UpdateRejected(ValueError):
    """A policy update that must not be applied (corrupt, truncated, incompatible, non-finite or out of order)."""


@dataclass
class BlockUpdate:
    version: int                  # monotonically increasing policy version this update produces
    kind: str                     # 'block': append one block; 'base': replace the whole policy (compaction/snapshot)
    obs_dim: int
    act_dim: int
    meta: dict = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_block(cls, version: int, block: RefinementBlock) -> 'BlockUpdate':
        return cls(version, 'block', block.obs_dim, block.act_dim, {'hidden': block.hidden, 'layers': block.layers},
                   {k: v.detach().cpu() for k, v in block.state_dict().items()})

    @classmethod
    def from_policy(cls, version: int, cascade: Cascade, normalizer: ObsNormalizer) -> 'BlockUpdate':
        t = {f'base.{k}': v for k, v in cascade.base.state_dict().items()}
        t.update({f'norm.{k}': v for k, v in normalizer.state_dict().items()})
        for i, b in enumerate(cascade.blocks):
            t.update({f'blocks.{i}.{k}': v for k, v in b.state_dict().items()})
        meta = {'flow': dataclasses.asdict(cascade.base.cfg), 'clip': cascade.clip,
                'blocks': [{'hidden': b.hidden, 'layers': b.layers} for b in cascade.blocks]}
        return cls(version, 'base', cascade.obs_dim, cascade.act_dim, meta,
                   {k: v.detach().cpu() for k, v in t.items()})

    # --- building modules from the payload -------------------------------------------------------------------------
    def _load(self, module: torch.nn.Module, prefix: str) -> None:
        sd = {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise UpdateRejected(f'update v{self.version}: tensors do not fit the declared architecture: {e}') from e

    def _block(self, spec: dict, prefix: str) -> RefinementBlock:
        b = RefinementBlock(self.obs_dim, self.act_dim, int(spec['hidden']), int(spec['layers']), tau=1.0)
        self._load(b, prefix)
        return b.requires_grad_(False)

    def build_block(self) -> RefinementBlock:
        if self.kind != 'block':
            raise UpdateRejected(f'update v{self.version} is a {self.kind!r} update, not a block')
        return self._block(self.meta, '')

    def build_policy(self) -> tuple[Cascade, ObsNormalizer]:
        if self.kind != 'base':
            raise UpdateRejected(f'update v{self.version} is a {self.kind!r} update, not a base')
        base = FlowPolicy(self.obs_dim, self.act_dim, FlowConfig(**self.meta['flow']))
        self._load(base, 'base.')
        norm = ObsNormalizer(self.obs_dim)
        self._load(norm, 'norm.')
        blocks = [self._block(spec, f'blocks.{i}.') for i, spec in enumerate(self.meta['blocks'])]
        return Cascade(base.requires_grad_(False), blocks, clip=bool(self.meta['clip'])), norm

    def check_compatible(self, obs_dim: int, act_dim: int) -> None:
        if (self.obs_dim, self.act_dim) != (obs_dim, act_dim):
            raise UpdateRejected(f'update v{self.version} is for obs {self.obs_dim} / act {self.act_dim}, the policy '
                                 f'has obs {obs_dim} / act {act_dim}')

    # --- bytes -----------------------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        specs, chunks, offset = [], [], 0
        for name, t in self.tensors.items():
            raw = t.detach().cpu().to(torch.float32).contiguous().numpy().tobytes()
            specs.append({'name': name, 'shape': list(t.shape), 'offset': offset, 'nbytes': len(raw)})
            chunks.append(raw)
            offset += len(raw)
        header = json.dumps({'version': self.version, 'kind': self.kind, 'obs_dim': self.obs_dim,
                             'act_dim': self.act_dim, 'meta': self.meta, 'tensors': specs}).encode()
        body = MAGIC + struct.pack('<Q', len(header)) + header + b''.join(chunks)
        return body + hashlib.sha256(body).digest()

    @classmethod
    def from_bytes(cls, b: bytes, obs_dim: int | None = None, act_dim: int | None = None) -> 'BlockUpdate':
        """Parse and validate; with obs_dim/act_dim, also check it fits the receiving policy. Raises UpdateRejected."""
        b = bytes(b)
        if len(b) < len(MAGIC) + 8 + 32:
            raise UpdateRejected(f'update truncated: {len(b)} bytes')
        if b[:len(MAGIC)] != MAGIC:
            raise UpdateRejected(f'not an SWFP update of format {MAGIC!r} (starts with {b[:len(MAGIC)]!r})')
        body, digest = b[:-32], b[-32:]
        if hashlib.sha256(body).digest() != digest:
            raise UpdateRejected('update checksum mismatch (corrupt or truncated)')
        (hlen,) = struct.unpack('<Q', body[len(MAGIC):len(MAGIC) + 8])
        start = len(MAGIC) + 8
        try:
            h = json.loads(body[start:start + hlen].decode())
            data = body[start + hlen:]
            tensors = {}
            for sp in h['tensors']:
                if sp['offset'] + sp['nbytes'] > len(data) or sp['nbytes'] != 4 * int(np.prod(sp['shape'])):
                    raise UpdateRejected(f"tensor {sp['name']} extends past the payload or has the wrong size")
                arr = np.frombuffer(data, np.float32, int(np.prod(sp['shape'])), sp['offset'])
                tensors[sp['name']] = torch.from_numpy(arr.reshape(sp['shape']).copy())
            upd = cls(int(h['version']), h['kind'], int(h['obs_dim']), int(h['act_dim']), h['meta'], tensors)
        except UpdateRejected:
            raise
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
            raise UpdateRejected(f'malformed update header: {e}') from e
        upd.validate(obs_dim, act_dim)
        return upd

    def validate(self, obs_dim: int | None = None, act_dim: int | None = None) -> None:
        """Kind known, weights finite, architecture consistent, and (optionally) dims fit the receiver."""
        if self.kind not in KINDS:
            raise UpdateRejected(f'unknown update kind {self.kind!r}')
        for k, t in self.tensors.items():
            if not torch.isfinite(t).all():
                raise UpdateRejected(f'update v{self.version}: non-finite values in {k}')
        if obs_dim is not None or act_dim is not None:
            self.check_compatible(self.obs_dim if obs_dim is None else obs_dim,
                                  self.act_dim if act_dim is None else act_dim)
        self.build_block() if self.kind == 'block' else self.build_policy()
