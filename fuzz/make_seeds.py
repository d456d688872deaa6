#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/: small, real inputs for every fuzz target.

Run from anywhere: python3 fuzz/make_seeds.py (needs GNU tar and Python 3; rewrites
the seeds deterministically). Sources:
- tests/fixtures/qdrant-1.18.3: the small Qdrant archives whole, the first entries of
  the larger ones (carved at entry boundaries, then an end-of-archive marker), their
  sparse and long-name header blocks, the partial manifest, the checksums (in the
  `unpack` seeds, the long trailing holes of Qdrant's preallocated files are cut to
  4 KiB, header checksums fixed, so a run takes milliseconds, not seconds);
- hand-made snapfs-style archives (GNU tar of plain, sparse and long-named files and a
  snapfs-manifest.json with their digests, full and partial forms) and hostile ones
  (Python's tarfile: links, devices, `..`, absolute paths), as tests/integration/restore.rs makes;
- literal Range headers, manifests and sidecars.
The `unpack` seeds start with the target's mode byte (0: fix header checksums).
"""
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests/fixtures/qdrant-1.18.3")
OUT = os.path.join(ROOT, "fuzz/seeds")
BLOCK = 512


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def number(field):
    if field[0] & 0x80:
        v = field[0] & 0x7F
        for b in field[1:]:
            v = v * 256 + b
        return v
    t = field.decode("ascii", "replace").strip("\0 ")
    return int(t, 8) if t else 0


def entries(buf):
    """(start, headers_end, end, type, name) of each entry; `start` includes the
    long-name/pax pseudo-entries before it."""
    at, start = 0, 0
    while at + BLOCK <= len(buf):
        h = buf[at:at + BLOCK]
        if h == bytes(BLOCK):
            return
        kind, size = h[156:157], number(h[124:136])
        nxt = at + BLOCK
        if kind in (b"L", b"K", b"x", b"g"):
            at = nxt + -(-size // BLOCK) * BLOCK
            continue
        if kind == b"S" and h[482]:
            while True:
                more = buf[nxt + 504]
                nxt += BLOCK
                if not more:
                    break
        end = nxt + -(-size // BLOCK) * BLOCK
        yield start, nxt, end, kind, h[:100].split(b"\0")[0].decode()
        at = start = end


def carve(buf, limit, max_span=None):
    """The entries of an archive, in order, that fit `limit` bytes (leaving out any of
    more than `max_span`, e.g. a large nested segment archive), then two zero blocks."""
    out = b""
    for start, _, end, _, _ in entries(buf):
        if max_span is not None and end - start > max_span:
            continue
        if len(out) + end - start > limit:
            break
        out += buf[start:end]
    return out + bytes(2 * BLOCK)


def octal(field_len, value):
    return b"%0*o\0" % (field_len - 1, value)


def big(field_len, value):
    """A numeric field: octal when it fits, else GNU base-256."""
    if value < 8 ** (field_len - 1):
        return octal(field_len, value)
    return bytes([0x80]) + value.to_bytes(field_len - 1, "big")


def checksum(header):
    h = bytearray(header)
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def shrink_holes(buf, keep=4096):
    """The same archive with each sparse entry's trailing hole cut to `keep` bytes
    (Qdrant preallocates 32 MiB files holding some KiB: reading those holes back
    would make every run of the `unpack` target take seconds)."""
    buf = bytearray(buf)
    for start, hend, end, kind, name in entries(bytes(buf)):
        if name.endswith(".tar"):
            # A nested segment archive: the same, in place (same length).
            size = number(buf[hend - BLOCK + 124:hend - BLOCK + 136])
            buf[hend:hend + size] = shrink_holes(bytes(buf[hend:hend + size]), keep)
            continue
        h = hend - BLOCK
        if kind != b"S" or buf[h + 482]:
            continue  # only main headers without extension blocks
        pairs = [(number(buf[h + 386 + i * 24:h + 398 + i * 24]), number(buf[h + 398 + i * 24:h + 410 + i * 24]))
                 for i in range(4)]
        used = [p for p in pairs if p != (0, 0)]
        real = number(buf[h + 483:h + 495])
        if not used or used[-1] != (real, 0) or len(used) < 2:
            continue
        data_end = used[-2][0] + used[-2][1]
        new = min(real, data_end + keep)
        i = len(used) - 1
        buf[h + 386 + i * 24:h + 398 + i * 24] = octal(12, new)
        buf[h + 483:h + 495] = octal(12, new)
        buf[h:h + BLOCK] = checksum(buf[h:h + BLOCK])
    return bytes(buf)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def gnu_tar(directory, names, *flags):
    return subprocess.run(
        ["tar", "--format=gnu", "--owner=0", "--group=0", "--numeric-owner",
         "--mtime=@1764000000", "-C", directory, *flags, "-cf", "-", *names],
        check=True, capture_output=True).stdout


def sha(data):
    return hashlib.sha256(data).hexdigest()


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    sparse_headers = {}

    # Qdrant's archives.
    docs = read(os.path.join(FIX, "qdrant-docs.snapshot"))
    write("unpack", "qdrant-docs", b"\0" + shrink_holes(docs))
    for name, limit, max_span in [("qdrant-multi-shard-1.snapshot", 200_000, None),
                                  ("qdrant-multi-shard-2-streamed.snapshot", 120_000, None),
                                  ("partial/base.snapshot", 120_000, 50_000),
                                  ("partial/partial.snapshot", 120_000, None),
                                  ("qdrant-hybrid.snapshot", 120_000, 50_000)]:
        buf = read(os.path.join(FIX, name))
        write("unpack", "carved-" + name.replace("/", "-").replace(".snapshot", ""),
              b"\0" + shrink_holes(carve(buf, limit, max_span)))
        for start, hend, _, kind, entry in entries(buf):
            if kind in (b"S", b"L") or start != hend - BLOCK:
                key = (kind, hend - start)
                sparse_headers.setdefault(key, buf[start:hend])
    # The whole-file checksum.
    write("sidecar", "qdrant-docs.checksum", read(os.path.join(FIX, "qdrant-docs.snapshot.checksum")))

    # Hand-made archives with GNU tar: plain, sparse (few and many extents), long names.
    with tempfile.TemporaryDirectory() as d:
        files = {}
        os.makedirs(os.path.join(d, "segments/seg-1/files"))
        files["edge_config.json"] = b'{"vectors":{}}\n'
        files["segments/seg-1/files/segment.json"] = b'{"version":3}'
        files["wal/open-1"] = b"w" * 700
        long = "segments/seg-1/files/" + "deep/" * 20 + "name.dat"
        files[long] = b"long"
        for path, data in files.items():
            os.makedirs(os.path.dirname(os.path.join(d, path)) or d, exist_ok=True)
            with open(os.path.join(d, path), "wb") as f:
                f.write(data)
        # Sparse files: 3 extents and a trailing hole; 30 extents (extension blocks).
        sparse = {"segments/seg-1/files/chunk_0.mmap": [(4096, b"a" * 100), (65536, b"b" * 5000), (200000, b"c")],
                  "segments/seg-1/files/page_0.dat": [(i * 16384, bytes([i + 1]) * 700) for i in range(6)]}
        for path, pieces in sparse.items():
            with open(os.path.join(d, path), "wb") as f:
                for off, data in pieces:
                    f.seek(off)
                    f.write(data)
                f.truncate(300_000 if "chunk" in path else 6 * 16384 + 4096)
        for path in sparse:
            files[path] = read(os.path.join(d, path))
        names = sorted(["edge_config.json", "segments", "wal"])
        plain = gnu_tar(d, names, "--sparse")
        manifest = {"format": "snapfs-manifest", "version": 1, "entries": [
            {"path": p, "size": len(files[p]), "sha256": sha(files[p])} for p in sorted(files)]}
        with open(os.path.join(d, "snapfs-manifest.json"), "w") as f:
            f.write(json.dumps(manifest) + "\n")
        snapfs = gnu_tar(d, names + ["snapfs-manifest.json"], "--sparse")
        write("unpack", "gnu-sparse-longname", b"\0" + plain)
        write("unpack", "snapfs-full", b"\0" + snapfs)
        # A partial manifest: one file carried, one copied from the receiver, one not carried.
        part = {"format": "snapfs-manifest", "version": 1, "partial": True, "entries": [
            {"path": "edge_config.json", "size": len(files["edge_config.json"]), "sha256": sha(files["edge_config.json"])},
            {"path": "wal/open-1", "size": 700, "sha256": sha(files["wal/open-1"]),
             "copies": [[0, "wal/open-0", 0, 512]]},
            {"path": "segments/seg-1/files/segment.json", "size": 13, "sha256": "0" * 64}]}
        with open(os.path.join(d, "snapfs-manifest.json"), "w") as f:
            f.write(json.dumps(part) + "\n")
        write("unpack", "snapfs-partial", b"\0" + gnu_tar(d, ["edge_config.json", "wal", "snapfs-manifest.json"]))
        pax = subprocess.run(
            ["tar", "--format=pax", "--sparse", "--mtime=@1764000000", "-C", d, "-cf", "-", "segments"],
            check=True, capture_output=True).stdout
        write("unpack", "pax", b"\0" + pax)
        # Only for the header seeds: a map of 30 extents (two extension blocks).
        many = os.path.join(d, "many")
        with open(many, "wb") as f:
            for i in range(30):
                f.seek(i * 16384)
                f.write(b"m")
            f.truncate(30 * 16384 + 4096)
        for buf in (plain, snapfs, pax, gnu_tar(d, ["many"], "--sparse")):
            for start, hend, _, kind, entry in entries(buf):
                sparse_headers.setdefault((kind, hend - start), buf[start:hend])

    # Hostile archives (as tests/integration/restore.rs makes them).
    def py_tar(name, build):
        b = io.BytesIO()
        with tarfile.open(fileobj=b, mode="w", format=tarfile.GNU_FORMAT) as t:
            def add(n, data=b"x", **kw):
                i = tarfile.TarInfo(n)
                i.size = len(data)
                for k, v in kw.items():
                    setattr(i, k, v)
                t.addfile(i, io.BytesIO(data) if i.isreg() else None)
            build(add)
        write("unpack", name, b"\0" + b.getvalue())
    py_tar("hostile-symlink", lambda add: add("link", type=tarfile.SYMTYPE, linkname="/etc/passwd"))
    py_tar("hostile-hardlink", lambda add: (add("a"), add("b", type=tarfile.LNKTYPE, linkname="a")))
    py_tar("hostile-dotdot", lambda add: add("../escape"))
    py_tar("hostile-absolute", lambda add: add("/tmp/escape"))
    py_tar("hostile-device", lambda add: add("dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3))
    py_tar("hostile-duplicate", lambda add: (add("a"), add("a")))
    py_tar("nested-segment-dir-clash", lambda add: (add("segments/x/files/a"), add("segments/x.tar", b"\0" * 1024)))

    # Archives that declare more than they hold (issue 20): sparse entries of huge
    # logical size (outer, nested in a segment archive, as the manifest) and a
    # partial manifest whose copies name sources outside the shard.
    def gnu_sparse(name, real_size, data):
        h = bytearray(BLOCK)
        h[0:len(name)] = name.encode()
        h[100:108] = octal(8, 0o644)
        h[108:116] = octal(8, 0)
        h[116:124] = octal(8, 0)
        h[124:136] = octal(12, len(data))
        h[136:148] = octal(12, 0)
        h[156:157] = b"S"
        h[257:265] = b"ustar  \0"
        for i, (off, ln) in enumerate([(0, len(data)), (real_size, 0)]):
            h[386 + i * 24:398 + i * 24] = big(12, off)
            h[398 + i * 24:410 + i * 24] = big(12, ln)
        h[483:495] = big(12, real_size)
        return checksum(h) + data + bytes(-len(data) % BLOCK)

    def plain(name, data):
        b = io.BytesIO()
        with tarfile.open(fileobj=b, mode="w", format=tarfile.GNU_FORMAT) as t:
            i = tarfile.TarInfo(name)
            i.size = len(data)
            t.addfile(i, io.BytesIO(data))
        return b.getvalue()[:BLOCK + len(data) + (-len(data) % BLOCK)]  # no end marker

    end = bytes(2 * BLOCK)
    write("unpack", "huge-sparse-outer", b"\0" + gnu_sparse("0/x", 1 << 62, b"x" * 512) + end)
    write("unpack", "huge-sparse-manifest", b"\0" + gnu_sparse("snapfs-manifest.json", 1 << 40, b"{" * 512) + end)
    inner = gnu_sparse("snapshot/files/big", 10 << 40, b"y" * 512) + end
    write("unpack", "huge-sparse-nested", b"\0" + plain("0/segments/abc.tar", inner) + end)
    copies_manifest = json.dumps({"format": "snapfs-manifest", "version": 1, "partial": True, "entries": [
        {"path": "segments/s/files/a", "size": 65536, "sha256": "0" * 64,
         "copies": [[0, "/etc/passwd", 0, 10], [32768, "../../x", 0, 32768]]},
        {"path": "segments/s/files/b", "size": 10, "sha256": "0" * 64, "copies": [[0, "segments/s/files/a", 0, 10]]},
    ]}).encode()
    write("unpack", "partial-copies", b"\0" + plain("segments/s/files/a", bytes(65536))
          + plain("snapfs-manifest.json", copies_manifest) + end)

    # sparse_map: raw header blocks of single entries (what data_layout reads).
    for i, ((kind, n), raw) in enumerate(sorted(sparse_headers.items())):
        write("sparse_map", f"{kind.decode()}-{n}-{i}", raw)
    write("sparse_map", "round-trip-sparse", bytes([2, 10]) + bytes(8) + struct.pack("<QQQQ", 4096, 99, 10, 4095))

    # range: 8 bytes of size (little-endian), then the header.
    for size, header in [(100, "bytes=0-99"), (100, "bytes=-5"), (100, "bytes=10-"), (10, "bytes=5-2"),
                         (10, "bytes=0-1,4-5"), (0, "bytes=0-0"), (2**64 - 1, "bytes=0-18446744073709551614"),
                         (1000, " bytes = 1 - 2 ")]:
        write("range", header.strip().replace("=", "_").replace(",", "+").replace(" ", "") + f"-{size}",
              struct.pack("<Q", size) + header.encode())

    # manifest: version form (Qdrant's), content form, and a pair (NUL-separated).
    base = read(os.path.join(FIX, "partial/base.manifest.json"))
    write("manifest", "empty", b"{}")
    write("manifest", "qdrant-base", base)
    newer = json.loads(base)
    for seg in newer.values():
        seg["segment_version"] += 7
        for f in list(seg["file_versions"])[:3]:
            seg["file_versions"][f] = None
    write("manifest", "qdrant-pair", base + b"\0" + json.dumps(newer).encode())
    content = {"block_size": 32768, "files": [
        {"path": "segments/s/files/segment.json", "hash": "a" * 64, "size": 235},
        {"path": "segments/s/files/chunk_0.mmap", "hash": "b" * 64, "size": 3 * 32768 + 1,
         "blocks": "0123abcd" + "0" * 16 + ".." + "ffffffff" + "1" * 16}]}
    write("manifest", "content", json.dumps(content).encode())

    # sidecar.
    h = sha(b"snapfs")
    write("sidecar", "sha256sum-line", f"{h}  demo.snapshot\n".encode())
    write("sidecar", "bare-upper", h.upper().encode())
    write("sidecar", "short", b"abc  x\n")


if __name__ == "__main__":
    main()
