"""Give a pod process its termination message file, as a container runtime does, then exec it.

Run by the process kubelet, under ``unshare --mount`` (a mount namespace of the pod's own), as::

    python -I -S container_mounts.py HOST_FILE CONTAINER_PATH MIRROR_DIR -- ARGV...

A real kubelet creates one file per container on the node and the runtime bind-mounts it at the
container's ``terminationMessagePath`` (``/dev/termination-log`` by default), which need not exist
in the image. Here every pod sees the host's filesystem, so the file is bind-mounted over
``CONTAINER_PATH`` in the pod's mount namespace only; when the path does not exist, its nearest
existing parent directory is replaced (in that namespace only) by ``MIRROR_DIR``, a copy made of
bind mounts of everything the parent holds, plus the file. Nothing changes outside the namespace.

Standard library only; exits 127 (the message on stderr, i.e. in the pod's log) when it cannot.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import stat
import sys

MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]


def mount(source: str | None, target: str, flags: int) -> None:
    src = source.encode() if source is not None else None
    if _libc.mount(src, target.encode(), None, flags, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def bind(source: str, target: str) -> None:
    mount(source, target, MS_BIND | MS_REC)


def mirror(directory: str, copy: str) -> None:
    """Make ``copy`` show what ``directory`` holds: bind mounts of its entries, its symlinks copied."""
    os.makedirs(copy, exist_ok=True)
    for name in os.listdir(directory):
        source, target = os.path.join(directory, name), os.path.join(copy, name)
        try:
            mode = os.lstat(source).st_mode
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(source), target)
                continue
            if stat.S_ISDIR(mode):
                os.mkdir(target)
            else:
                open(target, "a").close()
            bind(source, target)
        except OSError:
            continue  # an entry that cannot be shown (gone, or not mountable) stays out of the copy


def setup(host_file: str, container_path: str, mirror_dir: str) -> None:
    mount(None, "/", MS_REC | MS_PRIVATE)
    if os.path.isfile(container_path):
        bind(host_file, container_path)
        return
    if os.path.lexists(container_path):
        raise OSError(f"{container_path} exists and is not a file")
    parent = os.path.dirname(container_path)
    missing = []
    while not os.path.isdir(parent):
        parent, name = os.path.dirname(parent), os.path.basename(parent)
        missing.insert(0, name)
    if parent == "/":
        raise OSError(f"cannot make {container_path}: this fake does not replace /")
    mirror(parent, mirror_dir)
    inner = os.path.join(mirror_dir, *missing)
    os.makedirs(inner, exist_ok=True)
    target = os.path.join(inner, os.path.basename(container_path))
    open(target, "a").close()
    bind(host_file, target)
    bind(mirror_dir, parent)


def main(argv: list[str]) -> None:
    if len(argv) < 5 or argv[3] != "--":
        sys.exit("usage: container_mounts.py HOST_FILE CONTAINER_PATH MIRROR_DIR -- ARGV...")
    host_file, container_path, mirror_dir, command = argv[0], argv[1], argv[2], argv[4:]
    try:
        setup(host_file, os.path.normpath(container_path), mirror_dir)
    except OSError as exc:
        print(f"fake kubelet: cannot mount the termination message file: {exc}", file=sys.stderr)
        sys.exit(127)
    os.execve(command[0], command, os.environ)


if __name__ == "__main__":
    main(sys.argv[1:])
