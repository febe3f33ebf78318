"""An exclusive lock on a file that the OS releases when its holder dies: ``flock`` on POSIX.

The workspace's locks (:mod:`medflow.workspace`) need only this: take it without waiting or
waiting, release it, and never have it outlive a killed build. On POSIX that is one
``fcntl.flock`` on a descriptor of the lock file (not inherited by child processes, PEP 446);
the ``filelock`` package does the same there, and is used where ``flock`` is not: on a system
without ``fcntl`` (Windows) and on a file system that refuses ``flock`` (``ENOSYS``; filelock
then falls back to its own soft lock). Why not filelock everywhere: importing filelock 4
(with ``logging``) took 17-22 ms of a ~0.5 s ``medflow run`` start-up; ``fcntl`` takes 0.3 ms.

Both take the same ``flock``, so a medflow of either kind and filelock's ``FileLock`` exclude
one another on the same lock file. The lock file itself is created when missing (mode 0644
before the umask) and left in place on release, so every waiter locks the same inode.
"""

from __future__ import annotations

import errno
import os

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: errno values of a lock another holder has (some file systems say EACCES).
_BUSY = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES})


class FileLock:
    """An exclusive lock on the file ``path`` (see the module's docstring).

    Attributes:
        lock_file: the lock file's path, as given.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.lock_file = os.fspath(path)
        self._fd: int | None = None
        self._fallback = None  # a filelock.FileLock where flock is not available

    @property
    def is_locked(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None or (self._fallback is not None and self._fallback.is_locked)

    def acquire(self, wait: bool) -> bool:
        """Take the lock: ``True`` once held; ``False`` when another holder has it and ``wait`` is false.

        Holding it already is not an error (returns ``True``). ``wait``: block until it is free.

        Raises:
            OSError: the lock file cannot be created or opened, or the lock cannot be taken.
        """
        if self.is_locked:
            return True
        if fcntl is None or self._fallback is not None:
            return self._acquire_fallback(wait)
        fd, created = _open_lock_file(self.lock_file)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if exc.errno in _BUSY and not wait:
                return False
            if exc.errno == errno.ENOSYS:  # a file system without flock: filelock's soft lock
                if created:  # filelock's soft lock takes an existing file for a held lock
                    os.unlink(self.lock_file)
                return self._acquire_fallback(wait)
            raise
        except BaseException:  # an interrupt while waiting
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        """Release the lock if held (closing the descriptor releases the flock)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        elif self._fallback is not None and self._fallback.is_locked:
            self._fallback.release()

    def _acquire_fallback(self, wait: bool) -> bool:
        from filelock import FileLock as Fallback
        from filelock import Timeout

        if self._fallback is None:
            self._fallback = Fallback(self.lock_file, thread_local=False)
        try:
            self._fallback.acquire(timeout=-1 if wait else 0)
        except Timeout:
            return False
        return True


def _open_lock_file(path: str) -> tuple[int, bool]:
    """A read-write descriptor of ``path`` (never through a symlink) and whether this call created it."""
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        return os.open(path, flags), False
