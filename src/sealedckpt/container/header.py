"""The header of a sealed file: preamble, content header, key slots and header MAC."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import FormatError
from . import format as fmt
from .slots import KeySlot
from .sniff import HEAD_SIZE, TAIL_SIZE, refuse_unsealed
from .stream import Source


@dataclass(frozen=True)
class Header:
    content_bytes: bytes
    content: fmt.Content
    slots: list[KeySlot]
    authenticated: bytes  # preamble || content || slots section: what the header MAC covers
    mac: bytes

    @property
    def size(self) -> int:
        return len(self.authenticated) + fmt.MAC_SIZE

    @property
    def trailer_offset(self) -> int:
        return self.size + self.content.ciphertext_len


def read_header(src: Source) -> Header:
    """Parse the header (unauthenticated: the MAC is checked once a slot opens)."""
    head = src.read(0, HEAD_SIZE)
    if not head.startswith(fmt.MAGIC):
        tail = src.read(max(0, src.size - TAIL_SIZE), TAIL_SIZE)
        refuse_unsealed(head, tail)
    preamble = src.read_exact(0, fmt.PREAMBLE_SIZE, "preamble")
    content_len = fmt.parse_preamble(preamble)
    content_bytes = src.read_exact(fmt.PREAMBLE_SIZE, content_len, "content header")
    content = fmt.parse_content(content_bytes)
    pos = fmt.PREAMBLE_SIZE + content_len
    slots_len_raw = src.read_exact(pos, 4, "key slots")
    (slots_len,) = struct.unpack("<I", slots_len_raw)
    if not 2 <= slots_len <= fmt.MAX_SLOTS_LEN:
        raise FormatError(f"key slot section length {slots_len} outside 2..{fmt.MAX_SLOTS_LEN}")
    slots_bytes = src.read_exact(pos + 4, slots_len, "key slots")
    slots = fmt.parse_slots(slots_bytes)
    pos += 4 + slots_len
    mac = src.read_exact(pos, fmt.MAC_SIZE, "header MAC")
    authenticated = preamble + content_bytes + slots_len_raw + slots_bytes
    return Header(content_bytes, content, slots, authenticated, mac)


def slot_ids(header: Header) -> list[str]:
    """A public label per slot: the key id hint, or ``#index:kind`` where there is none."""
    return [s.label(i) for i, s in enumerate(header.slots)]
