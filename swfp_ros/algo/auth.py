"""Authenticated policy updates: HMAC-SHA256 with a key shared by the learner and its actors.

The update format's sha256 (``serialize``) only detects damage: anyone who can publish on the update topic can
compute it. With a shared key, the learner signs every serialised update and an actor that holds the key accepts only
updates signed with it. Signed envelope (wraps the update bytes unchanged):

    SIGNED_MAGIC (8 bytes) | key id (8 bytes) | HMAC-SHA256(key, magic | key id | payload) (32 bytes) | payload

The key id (a hash of the key, not the key) only makes "signed with another key" distinguishable from "tampered with"
in the error message. An actor without a key accepts signed updates too (it cannot check them: the signature is
dropped), so the key can be rolled out to the learner first.

Key file: the key is the file's content with surrounding whitespace removed, at least ``MIN_KEY_BYTES`` bytes
(e.g. ``openssl rand -hex 32 > swfp_update.key``), and the file must not be readable by other users (chmod 600).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from .serialize import UpdateRejected

SIGNED_MAGIC = b'SWFPSIG1'
MIN_KEY_BYTES = 32
_KEY_ID_BYTES = 8
_HEADER = len(SIGNED_MAGIC) + _KEY_ID_BYTES + hashlib.sha256().digest_size


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file and the fix."""


def load_key(path: str | os.PathLike) -> bytes:
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
        raw = p.read_bytes()
    except OSError as e:
        raise KeyFileError(f'update key file {p}: cannot read it ({e.strerror})') from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f'update key file {p}: readable by other users (mode {stat.S_IMODE(mode):o}); '
                           f'run: chmod 600 {p}')
    key = raw.strip()
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(f'update key file {p}: {len(key)} bytes, at least {MIN_KEY_BYTES} needed '
                           f'(e.g. openssl rand -hex 32 > {p})')
    return key


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(b'swfp-update-key-id\0' + key).digest()[:_KEY_ID_BYTES]


def is_signed(blob: bytes) -> bool:
    return blob[:len(SIGNED_MAGIC)] == SIGNED_MAGIC


def sign(payload: bytes, key: bytes) -> bytes:
    head = SIGNED_MAGIC + key_id(key)
    return head + hmac.new(key, head + payload, hashlib.sha256).digest() + payload


def verify(blob: bytes, key: bytes | None) -> bytes:
    """The payload of ``blob`` if acceptable under ``key``; raises UpdateRejected (reason 'unsigned' or
    'bad_signature'). Without a key, a signed blob's payload is returned unchecked and an unsigned blob as it is."""
    blob = bytes(blob)
    signed = is_signed(blob)
    if key is None:
        return blob[_HEADER:] if signed else blob
    if not signed:
        raise UpdateRejected('unsigned update: this policy only accepts updates signed with its key', 'unsigned')
    if len(blob) < _HEADER:
        raise UpdateRejected(f'signed update truncated: {len(blob)} bytes', 'bad_signature')
    head, mac, payload = blob[:_HEADER - 32], blob[_HEADER - 32:_HEADER], blob[_HEADER:]
    if head[len(SIGNED_MAGIC):] != key_id(key):
        raise UpdateRejected(f'update signed with another key (id {head[len(SIGNED_MAGIC):].hex()}, this policy '
                             f'has {key_id(key).hex()})', 'bad_signature')
    if not hmac.compare_digest(mac, hmac.new(key, head + payload, hashlib.sha256).digest()):
        raise UpdateRejected('update signature does not match its content (forged or altered)', 'bad_signature')
    return payload
