"""H.264 chunks decoded by one reused decoder per process, without opening a container per chunk.

Opening an MP4 with ``av.open`` probes the format and the stream on every chunk (about 1.3 ms per
32-frame chunk of gameplay-like 224x224 frames, an eighth of its decoding time, bench_store.py).
An image chunk is a plain MP4 with one H.264 track, so ``mp4_packets`` reads its sample table
directly (a few boxes) and a process keeps one ``av.CodecContext`` that is fed those packets chunk
after chunk; it is replaced when a chunk's stream parameters (codec tag, size, extradata, hence
profile) differ. Decoding is deterministic and every chunk starts at a key frame, so the frames
are those of ``av.open`` bit for bit.

An MP4 this reader does not understand (fragmented, several edits, another codec) gives None and
the caller decodes it the ``av.open`` way.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import av

# Boxes on the way from the file to a track's sample table.
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}
# A VisualSampleEntry's fixed fields before its child boxes (avcC): 8 header + 78 bytes.
_VISUAL_ENTRY = 86


@dataclass(frozen=True)
class StreamParams:
    """What decides whether a decoder can take a chunk: codec tag, coded size and avcC extradata."""

    tag: bytes
    width: int
    height: int
    extradata: bytes


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes in ``data[start:end]``."""
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, start)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, start + 8)[0], 16
        elif size == 0:
            size = end - start
        if size < header or start + size > end:
            return
        yield kind, start + header, start + size
        start += size


def _tables(data: bytes, start: int, end: int, found: dict[bytes, list[tuple[int, int]]]) -> None:
    for kind, payload, box_end in _boxes(data, start, end):
        found.setdefault(kind, []).append((payload, box_end))
        if kind in _CONTAINERS:
            _tables(data, payload, box_end, found)


def _entries(data: bytes, payload: int, fmt: str, width: int) -> list[tuple[int, ...]]:
    count = struct.unpack_from(">I", data, payload + 4)[0]
    return [struct.unpack_from(fmt, data, payload + 8 + i * width) for i in range(count)]


def mp4_packets(data: bytes) -> tuple[StreamParams, list[bytes]] | None:
    """The H.264 stream parameters and packets (decode order) of a one-track MP4, or None."""
    found: dict[bytes, list[tuple[int, int]]] = {}
    _tables(data, 0, len(data), found)
    needed = (b"trak", b"stsd", b"stsz", b"stsc")
    if any(len(found.get(kind, ())) != 1 for kind in needed) or b"moof" in found:
        return None
    stsd = found[b"stsd"][0][0]
    if struct.unpack_from(">I", data, stsd + 4)[0] != 1:
        return None
    entry = stsd + 8
    entry_size, tag = struct.unpack_from(">I4s", data, entry)
    if tag not in (b"avc1", b"avc3"):
        return None
    width, height = struct.unpack_from(">HH", data, entry + 32)
    extradata = next(
        (data[p:e] for k, p, e in _boxes(data, entry + _VISUAL_ENTRY, entry + entry_size) if k == b"avcC"),
        None,
    )
    if extradata is None or not _edits_start_at_first_frame(data, found):
        return None
    sizes = _sample_sizes(data, found[b"stsz"][0][0])
    offsets = _chunk_offsets(data, found)
    if offsets is None:
        return None
    packets, sample = [], 0
    runs = _entries(data, found[b"stsc"][0][0], ">III", 12)
    for index, (first_chunk, per_chunk, _) in enumerate(runs):
        last = runs[index + 1][0] - 1 if index + 1 < len(runs) else len(offsets)
        for chunk in range(first_chunk - 1, min(last, len(offsets))):
            position = offsets[chunk]
            for size in sizes[sample : sample + per_chunk]:
                if position + size > len(data):
                    return None
                packets.append(data[position : position + size])
                position += size
            sample += per_chunk
    if len(packets) != len(sizes):
        return None
    return StreamParams(tag, width, height, bytes(extradata)), packets


def _sample_sizes(data: bytes, payload: int) -> list[int]:
    uniform, count = struct.unpack_from(">II", data, payload + 4)
    if uniform:
        return [uniform] * count
    return list(struct.unpack_from(f">{count}I", data, payload + 12))


def _chunk_offsets(data: bytes, found: dict[bytes, list[tuple[int, int]]]) -> list[int] | None:
    for kind, fmt in ((b"stco", "I"), (b"co64", "Q")):
        if len(found.get(kind, ())) == 1:
            payload = found[kind][0][0]
            count = struct.unpack_from(">I", data, payload + 4)[0]
            return list(struct.unpack_from(f">{count}{fmt}", data, payload + 8))
    return None


def _edits_start_at_first_frame(data: bytes, found: dict[bytes, list[tuple[int, int]]]) -> bool:
    """Whether the edit list (if any) only shifts time so the first shown frame is the first decoded.

    The MP4 muxer writes one edit whose media time is the first frame's composition offset (0
    without B-frames); anything else (dropped leading frames, several edits) may make the demuxer
    leave frames out, so such chunks are decoded the ``av.open`` way.
    """
    edits = found.get(b"elst", [])
    if not edits:
        return True
    if len(edits) != 1:
        return False
    payload = edits[0][0]
    version = data[payload]
    fmt, width = (">QqI", 20) if version == 1 else (">IiI", 12)
    entries = _entries(data, payload, fmt, width)
    if len(entries) != 1:
        return False
    first_offset = 0
    if len(found.get(b"ctts", ())) == 1:
        ctts = found[b"ctts"][0][0]
        offsets = _entries(data, ctts, ">Ii" if data[ctts] == 1 else ">II", 8)
        first_offset = offsets[0][1] if offsets else 0
    return entries[0][1] == first_offset


class ReusedDecoder:
    """One H.264 decoder kept across chunks; a new one whenever the stream parameters change."""

    def __init__(self) -> None:
        self.params: StreamParams | None = None
        self.threads = 1
        self.context: av.codec.context.CodecContext | None = None
        # The chunk whose frames are being taken: a chunk started before the last one's generator
        # was closed must not see that chunk's queued frames, nor have them flushed later.
        self.owner: object | None = None

    def _context(self, params: StreamParams, threads: int) -> av.codec.context.CodecContext:
        if self.context is None or params != self.params or threads != self.threads:
            context = av.CodecContext.create("h264", "r")
            context.extradata = params.extradata
            context.width, context.height = params.width, params.height
            context.thread_count = threads
            if threads != 1:
                context.thread_type = "AUTO"
            context.open()
            self.context, self.params, self.threads = context, params, threads
        return self.context

    def decode(self, params: StreamParams, packets: list[bytes], threads: int = 1) -> Iterator[av.VideoFrame]:
        """The frames of one chunk's packets, in display order; the decoder is reset for the next chunk.

        Raises ``av.FFmpegError`` on corrupt data (and drops the decoder, whose state is then unknown).
        """
        context = self._context(params, threads)
        if self.owner is not None:
            context.flush_buffers()
        self.owner = token = object()
        try:
            for packet in [*packets, None]:
                if self.owner is not token:
                    raise RuntimeError("a chunk's frames were taken after the next chunk started decoding")
                yield from context.decode(None if packet is None else av.Packet(packet))
        except av.FFmpegError:
            self.context = None
            raise
        finally:
            # Also when the caller stops early: frames still queued belong to this chunk.
            if self.owner is token:
                self.owner = None
                if self.context is context:
                    context.flush_buffers()


_decoder: ReusedDecoder | None = None


def _keep_inherited() -> None:
    """In a forked child, start a decoder of its own and never free the one copied from the parent.

    A decoder opened with ``threads != 1`` owns FFmpeg frame threads that a fork does not copy;
    freeing its context in the child (``avcodec_free_context``) waits in ``pthread_cond_destroy``
    for those threads' condition waits to end, which never happens: the worker hangs. So the child
    takes an extra reference to the inherited context, never released (it is never touched, and a
    fork's pages are shared until written), and makes a fresh decoder on first use.
    """
    global _decoder
    if _decoder is not None and _decoder.context is not None:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(_decoder.context))
    _decoder = None


os.register_at_fork(after_in_child=_keep_inherited)


def process_decoder() -> ReusedDecoder:
    """This process's decoder; a forked worker (pool or DataLoader) makes its own, see ``_keep_inherited``."""
    global _decoder
    if _decoder is None:
        _decoder = ReusedDecoder()
    return _decoder
