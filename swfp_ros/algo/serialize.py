"""BlockUpdate: what the learner publishes to actors (one new block, or a whole policy after compaction).

Wire format (no pickle: actors deserialize bytes from the network):
    MAGIC (8 bytes, includes the format version) | header length (uint64 LE) | JSON header | raw float32 tensors
    | sha256 of everything before it (32 bytes)

The sha256 detects damage, not forgery: ``auth`` signs these bytes with a shared key. A block's header also names
the policy it extends (``parent``: the policy digest below) and the trust region its learner accepted it under
(``w2_bound``: the bound on E||M(a) - a||^2), which an actor checks before swapping it in (``runtime``).

Policy digest: a sha256 chain over the tensors (float32, by sorted name) and architecture -- of the base flow and
normaliser first, then of each block in order -- so a policy built from a base plus blocks and a snapshot of the same
policy have the same digest, and a block's digest depends on everything before it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
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
MAX_UPDATE_BYTES = 64 << 20     # larger updates are refused before parsing (default; PolicyRuntime may lower it)


class UpdateRejected(ValueError):
    """A policy update that must not be applied; ``reason`` is a short code for counters (one of REJECT_REASONS)."""

    def __init__(self, message: str, reason: str = 'corrupt'):
        super().__init__(message)
        self.reason = reason


# corrupt: damaged bytes or header; oversized: over the byte limit; incompatible: dims/architecture; non_finite:
# NaN/inf weights; the rest are the actor's checks (runtime) and the signature (auth).
REJECT_REASONS = ('corrupt', 'oversized', 'incompatible', 'non_finite', 'unsigned', 'bad_signature', 'out_of_order',
                  'older', 'version_jump', 'same_version_differs', 'wrong_parent', 'claim_too_large', 'too_many_blocks',
                  'non_finite_output', 'trust_region', 'raced')


def _hash_tensors(h, tensors: dict[str, torch.Tensor]) -> None:
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().to(torch.float32).contiguous()
        h.update(f'{name}:{list(t.shape)};'.encode())
        h.update(t.numpy().tobytes())


def chain_digest(parent: str, spec: dict, tensors: dict[str, torch.Tensor]) -> str:
    """Digest of the policy ``parent`` followed by one block (``spec``: hidden, layers; ``tensors``: its state)."""
    h = hashlib.sha256(b'swfp-block\0' + parent.encode())
    h.update(json.dumps({'hidden': int(spec['hidden']), 'layers': int(spec['layers'])}, sort_keys=True).encode())
    _hash_tensors(h, tensors)
    return h.hexdigest()


def policy_digest(cascade: Cascade, normalizer: ObsNormalizer) -> str:
    return BlockUpdate.from_policy(0, cascade, normalizer).digest()


def _is_digest(x) -> bool:
    return isinstance(x, str) and len(x) == 64 and all(c in '0123456789abcdef' for c in x)


@dataclass
class BlockUpdate:
    version: int                  # monotonically increasing policy version this update produces
    kind: str                     # 'block': append one block; 'base': replace the whole policy (compaction/snapshot)
    obs_dim: int
    act_dim: int
    meta: dict = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_block(cls, version: int, block: RefinementBlock, parent: str, w2_bound: float) -> 'BlockUpdate':
        """``parent``: policy_digest of the policy the block extends; ``w2_bound``: the trust region it was accepted
        under (E||M(a) - a||^2 <= w2_bound on held-out states)."""
        return cls(version, 'block', block.obs_dim, block.act_dim,
                   {'hidden': block.hidden, 'layers': block.layers, 'parent': parent, 'w2_bound': float(w2_bound)},
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
    def _part(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def _load(self, module: torch.nn.Module, prefix: str) -> None:
        try:
            module.load_state_dict(self._part(prefix), strict=True)
        except RuntimeError as e:
            raise UpdateRejected(f'update v{self.version}: tensors do not fit the declared architecture: {e}',
                                 'incompatible') from e

    def _block(self, spec: dict, prefix: str) -> RefinementBlock:
        b = RefinementBlock(self.obs_dim, self.act_dim, int(spec['hidden']), int(spec['layers']), tau=1.0)
        self._load(b, prefix)
        return b.requires_grad_(False)

    def build_block(self) -> RefinementBlock:
        if self.kind != 'block':
            raise UpdateRejected(f'update v{self.version} is a {self.kind!r} update, not a block', 'incompatible')
        return self._block(self.meta, '')

    def build_policy(self) -> tuple[Cascade, ObsNormalizer]:
        if self.kind != 'base':
            raise UpdateRejected(f'update v{self.version} is a {self.kind!r} update, not a base', 'incompatible')
        base = FlowPolicy(self.obs_dim, self.act_dim, FlowConfig(**self.meta['flow']))
        self._load(base, 'base.')
        norm = ObsNormalizer(self.obs_dim)
        self._load(norm, 'norm.')
        blocks = [self._block(spec, f'blocks.{i}.') for i, spec in enumerate(self.meta['blocks'])]
        return Cascade(base.requires_grad_(False), blocks, clip=bool(self.meta['clip'])), norm

    def check_compatible(self, obs_dim: int, act_dim: int) -> None:
        if (self.obs_dim, self.act_dim) != (obs_dim, act_dim):
            raise UpdateRejected(f'update v{self.version} is for obs {self.obs_dim} / act {self.act_dim}, the policy '
                                 f'has obs {obs_dim} / act {act_dim}', 'incompatible')

    def digest(self, parent: str | None = None) -> str:
        """Policy digest after this update: a base's own; a block's on top of ``parent`` (default: its header's)."""
        if self.kind == 'block':
            return chain_digest(self.meta['parent'] if parent is None else parent, self.meta, self.tensors)
        h = hashlib.sha256(b'swfp-policy\0')
        h.update(json.dumps({'obs_dim': self.obs_dim, 'act_dim': self.act_dim, 'flow': self.meta['flow'],
                             'clip': bool(self.meta['clip'])}, sort_keys=True).encode())
        _hash_tensors(h, {k: v for k, v in self.tensors.items() if k.startswith(('base.', 'norm.'))})
        d = h.hexdigest()
        for i, spec in enumerate(self.meta['blocks']):
            d = chain_digest(d, spec, self._part(f'blocks.{i}.'))
        return d

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
    def from_bytes(cls, b: bytes, obs_dim: int | None = None, act_dim: int | None = None,
                   max_bytes: int = MAX_UPDATE_BYTES) -> 'BlockUpdate':
        """Parse and validate; with obs_dim/act_dim, also check it fits the receiving policy. Raises UpdateRejected."""
        if len(b) > max_bytes:
            raise UpdateRejected(f'update of {len(b)} bytes is over the limit of {max_bytes}', 'oversized')
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
            if not isinstance(h['meta'], dict) or int(h['version']) < 0:
                raise UpdateRejected('malformed update header: meta must be an object and version >= 0')
            upd = cls(int(h['version']), h['kind'], int(h['obs_dim']), int(h['act_dim']), h['meta'], tensors)
        except UpdateRejected:
            raise
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
            raise UpdateRejected(f'malformed update header: {e}') from e
        upd.validate(obs_dim, act_dim)
        return upd

    def validate(self, obs_dim: int | None = None, act_dim: int | None = None) -> None:
        """Kind known, weights finite, architecture consistent, a block's claims well-formed, and (optionally) dims
        fit the receiver. Builds nothing: the architecture is checked on torch's 'meta' device, so a header that
        declares a huge network allocates no memory."""
        if self.kind not in KINDS:
            raise UpdateRejected(f'unknown update kind {self.kind!r}', 'incompatible')
        for k, t in self.tensors.items():
            if not torch.isfinite(t).all():
                raise UpdateRejected(f'update v{self.version}: non-finite values in {k}', 'non_finite')
        if obs_dim is not None or act_dim is not None:
            self.check_compatible(self.obs_dim if obs_dim is None else obs_dim,
                                  self.act_dim if act_dim is None else act_dim)
        if self.kind == 'block':
            w2 = self.meta.get('w2_bound')
            if not _is_digest(self.meta.get('parent')) or not isinstance(w2, (int, float)) or not 0 < w2 < math.inf:
                raise UpdateRejected(f'block update v{self.version}: header lacks a valid parent digest and w2_bound')
        self._check_architecture()

    def _check_architecture(self) -> None:
        try:
            specs = [self.meta] if self.kind == 'block' else self.meta['blocks']
            layers = [int(sp['layers']) for sp in specs] + ([] if self.kind == 'block' else
                                                             [int(self.meta['flow']['layers'])])
            if any(n < 0 or n > len(self.tensors) for n in layers):   # each layer brings tensors: bounds the build
                raise UpdateRejected(f'update v{self.version}: declares more layers than it carries tensors',
                                     'incompatible')
            with torch.device('meta'):
                if self.kind == 'block':
                    modules = {'': RefinementBlock(self.obs_dim, self.act_dim, int(specs[0]['hidden']), layers[0], 1.0)}
                else:
                    bool(self.meta['clip'])
                    modules = {'base.': FlowPolicy(self.obs_dim, self.act_dim, FlowConfig(**self.meta['flow'])),
                               'norm.': ObsNormalizer(self.obs_dim)}
                    modules.update({f'blocks.{i}.': RefinementBlock(self.obs_dim, self.act_dim, int(sp['hidden']),
                                                                    int(sp['layers']), 1.0)
                                    for i, sp in enumerate(specs)})
        except UpdateRejected:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise UpdateRejected(f'update v{self.version}: bad architecture in the header: {e}', 'incompatible') from e
        expected = {p + k: tuple(v.shape) for p, m in modules.items() for k, v in m.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in self.tensors.items()}
        if expected != got:
            diff = sorted(set(expected.items()) ^ set(got.items()))[:4]
            raise UpdateRejected(f'update v{self.version}: tensors do not fit the declared architecture '
                                 f'(first differences: {diff})', 'incompatible')
