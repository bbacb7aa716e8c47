"""C2SP signed notes with Ed25519 keys (https://c2sp.org/signed-note).

A note is UTF-8 text ending in a newline, a blank line, then one line per
signature: an em dash, a space, the key name, a space and the base64 of the
4-byte key hash followed by the signature over the text. Key texts are
``<name>+<hash>+<base64>`` (verifier) and ``PRIVATE+KEY+<name>+<hash>+<base64>``
(signer), the base64 holding the algorithm byte then the key.

Invariants: `verify_note` returns the text only when at least one signature
by a trusted key verifies and no signature by a trusted key fails; signatures
by unknown keys are ignored. Everything untrusted raises `SignatureError` or
`KeyFormatError`, never a `cryptography` exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from audit.errors import KeyFormatError, SignatureError

ALG_ED25519: Final = b"\x01"
"""Signature type byte of Ed25519 in C2SP signed-note keys and key hashes."""

SIGNER_KEY_PREFIX: Final = "PRIVATE+KEY+"
"""How a signer key text starts (C2SP signed-note, "Signer keys")."""

SIGNATURE_LINE_PREFIX: Final = "\u2014 "
"""An em dash (U+2014) and a space start every signature line."""

MAX_SIGNATURES: Final = 100
"""Most signature lines accepted in one note (as the Go reference does)."""

_ED25519_KEY_SIZE: Final = 32
_ED25519_SIGNATURE_SIZE: Final = 64
_KEY_HASH_SIZE: Final = 4


@dataclass(frozen=True, slots=True)
class Verifier:
    """A trusted public key: its name, its 4-byte key hash and the key."""

    name: str
    key_hash: int
    public_key: Ed25519PublicKey

    def to_text(self) -> str:
        """Return the verifier key text ``<name>+<hash>+<base64>``."""
        raw = self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        encoded = base64.b64encode(ALG_ED25519 + raw).decode("ascii")
        return f"{self.name}+{self.key_hash:08x}+{encoded}"


def key_hash(name: str, public_key: bytes) -> int:
    """Return the key hash: the first 4 bytes of SHA-256(name, "\\n", 0x01, key)."""
    digest = hashlib.sha256(name.encode() + b"\n" + ALG_ED25519 + public_key).digest()
    value: int = struct.unpack(">I", digest[:_KEY_HASH_SIZE])[0]
    return value


def generate_key(name: str) -> tuple[str, str]:
    """Return a new Ed25519 (signer key text, verifier key text) named ``name``.

    Raises `ValueError` if ``name`` is not a valid key name (empty, or with a
    "+" or whitespace).
    """
    if not _is_key_name(name):
        raise ValueError(f"key name must be non-empty, without '+' or spaces: {name!r}")
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    hash_hex = f"{key_hash(name, public):08x}"
    encoded = base64.b64encode(ALG_ED25519 + seed).decode("ascii")
    signer = f"{SIGNER_KEY_PREFIX}{name}+{hash_hex}+{encoded}"
    verifier = f"{name}+{hash_hex}+" + base64.b64encode(ALG_ED25519 + public).decode()
    return signer, verifier


def parse_verifier(text: str) -> Verifier:
    """Parse a verifier key text; raise `KeyFormatError` if it is malformed.

    Plan:
      1. split into name, key hash and key;
      2. decode the key: the Ed25519 type byte then 32 bytes;
      3. the stated key hash is the hash of this name and key.
    """
    # Step 1: three "+"-separated parts.
    name, hash_hex, raw = _split_key_text(text.strip(), "verifier key")

    # Step 2: an Ed25519 public key.
    public_bytes = _decode_key(raw, "verifier key")
    public_key = Ed25519PublicKey.from_public_bytes(public_bytes)

    # Step 3: the key hash binds the name to the key.
    stated = int(hash_hex, 16)
    if stated != key_hash(name, public_bytes):
        raise KeyFormatError(
            f"verifier key {name!r}: key hash {hash_hex} does not match "
            f"{key_hash(name, public_bytes):08x} computed from its name and key"
        )
    return Verifier(name, stated, public_key)


def sign_note(text: str, signer: str) -> str:
    """Return ``text`` signed by the signer key text ``signer`` as a signed note.

    Raises `KeyFormatError` for a malformed signer key and `ValueError` for
    text that cannot be a note (empty, no final newline, control characters).
    """
    if not _is_note_text(text):
        raise ValueError(
            "note text must be non-empty, end with a newline and hold no "
            "control characters other than newline"
        )
    name, hash_hex, private_key = _parse_signer(signer)
    signature = private_key.sign(text.encode("utf-8"))
    blob = bytes.fromhex(hash_hex) + signature
    line = f"{SIGNATURE_LINE_PREFIX}{name} {base64.b64encode(blob).decode()}\n"
    return f"{text}\n{line}"


def verify_note(note: str, verifiers: Iterable[str | Verifier]) -> str:
    """Return the text of ``note`` if a trusted key signed it.

    ``verifiers`` are verifier key texts or parsed `Verifier` objects.

    Plan:
      1. split the note into text and signature lines at the last blank line;
      2. the text is well-formed note text;
      3. parse each signature line into a name, key hash and signature;
      4. check every signature by a trusted key; any that fails is an error;
      5. at least one trusted signature verified.
    Raises `SignatureError` naming the failed step.
    """
    trusted = {
        (key.name, key.key_hash): key
        for key in (
            v if isinstance(v, Verifier) else parse_verifier(v) for v in verifiers
        )
    }

    # Step 1: text, a blank line, then the signature block.
    text, signature_block = split_note(note)

    # Step 2: the signed text is note text.
    if not _is_note_text(text):
        raise SignatureError(
            "signed note: text holds a control character other than newline"
        )

    # Step 3: every signature line is well-formed.
    signatures = _parse_signature_lines(signature_block)

    # Step 4: every signature by a trusted key holds.
    message = text.encode("utf-8")
    verified = []
    for name, stated_hash, signature in signatures:
        key = trusted.get((name, stated_hash))
        if key is None:
            continue
        try:
            key.public_key.verify(signature, message)
        except InvalidSignature as exc:
            raise SignatureError(
                f"signed note: signature by {name!r} (key {stated_hash:08x}) "
                "does not match the text (note altered or signed by another key?)"
            ) from exc
        verified.append(name)

    # Step 5: somebody we trust signed.
    if not verified:
        found = ", ".join(sorted({name for name, _, _ in signatures})) or "none"
        expected = ", ".join(sorted(name for name, _ in trusted)) or "none"
        raise SignatureError(
            f"signed note: no signature by a trusted key; trusted: {expected}; "
            f"signed by: {found}"
        )
    return text


def split_note(note: str) -> tuple[str, str]:
    """Split a signed note into (text, signature lines) WITHOUT verifying it.

    Raises `SignatureError` if the note has no blank line before a signature
    block ending in a newline.
    """
    if not isinstance(note, str):
        raise SignatureError(f"signed note: expected text, found {type(note).__name__}")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise SignatureError("signed note: no blank line between text and signatures")
    text, block = note[: cut + 1], note[cut + 2 :]
    if not block or not block.endswith("\n"):
        raise SignatureError(
            "signed note: expected signature lines ending in a newline after the "
            "blank line"
        )
    return text, block


def _parse_signature_lines(block: str) -> list[tuple[str, int, bytes]]:
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise SignatureError(
            f"signed note: has {len(lines)} signatures, at most {MAX_SIGNATURES} "
            "are accepted"
        )
    parsed = []
    for number, line in enumerate(lines, start=1):
        parsed.append(_parse_signature_line(line, number))
    return parsed


def _parse_signature_line(line: str, number: int) -> tuple[str, int, bytes]:
    where = f"signed note: signature line {number}"
    if not line.startswith(SIGNATURE_LINE_PREFIX):
        raise SignatureError(f"{where} does not start with an em dash and a space")
    parts = line[len(SIGNATURE_LINE_PREFIX) :].split(" ")
    if len(parts) != 2 or not _is_key_name(parts[0]):
        raise SignatureError(f"{where}: expected '<key name> <base64 signature>'")
    blob = _b64decode(parts[1], where)
    if len(blob) < _KEY_HASH_SIZE + 1:
        raise SignatureError(f"{where}: signature of {len(blob)} bytes is too short")
    stated_hash: int = struct.unpack(">I", blob[:_KEY_HASH_SIZE])[0]
    return parts[0], stated_hash, blob[_KEY_HASH_SIZE:]


def _parse_signer(text: str) -> tuple[str, str, Ed25519PrivateKey]:
    text = text.strip()
    if not text.startswith(SIGNER_KEY_PREFIX):
        raise KeyFormatError(f"signer key must start with {SIGNER_KEY_PREFIX!r}")
    name, hash_hex, raw = _split_key_text(text[len(SIGNER_KEY_PREFIX) :], "signer key")
    private_key = Ed25519PrivateKey.from_private_bytes(_decode_key(raw, "signer key"))
    public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    if int(hash_hex, 16) != key_hash(name, public):
        raise KeyFormatError(
            f"signer key {name!r}: key hash {hash_hex} does not match its name and key"
        )
    return name, hash_hex, private_key


def _split_key_text(text: str, what: str) -> tuple[str, str, str]:
    parts = text.split("+", 2)
    if len(parts) != 3 or not _is_key_name(parts[0]):
        raise KeyFormatError(f"{what} must read '<name>+<key hash>+<base64 key>'")
    name, hash_hex, raw = parts
    if len(hash_hex) != 8 or any(c not in "0123456789abcdef" for c in hash_hex):
        raise KeyFormatError(
            f"{what} {name!r}: key hash must be 8 lower-case hex digits, "
            f"found {hash_hex!r}"
        )
    return name, hash_hex, raw


def _decode_key(raw: str, what: str) -> bytes:
    try:
        blob = _b64decode(raw, what)
    except SignatureError as exc:
        raise KeyFormatError(str(exc)) from exc
    if blob[:1] != ALG_ED25519:
        raise KeyFormatError(
            f"{what}: algorithm byte {blob[:1].hex() or 'missing'}, expected 01 "
            "(Ed25519)"
        )
    if len(blob) != 1 + _ED25519_KEY_SIZE:
        raise KeyFormatError(
            f"{what}: Ed25519 key of {len(blob) - 1} bytes, expected "
            f"{_ED25519_KEY_SIZE}"
        )
    return blob[1:]


def _b64decode(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise SignatureError(f"{where}: not valid base64") from exc


def _is_key_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def _is_note_text(text: str) -> bool:
    if not text.endswith("\n"):
        return False
    return not any(ord(c) < 0x20 and c != "\n" for c in text)
