"""Atomic file writes: every output goes to a temporary name and is renamed into place."""
import contextlib
import errno
import os

from misc.errors import PipelineError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it onto `path` only on success.

    A crash, a full disk or an exception leaves `path` as it was (absent or old)
    and removes the partial temporary file.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    root, ext = os.path.splitext(path)
    # keep the extension last: libraries such as PIL pick the format from it
    tmp = f"{root}.{os.getpid()}.tmp{ext}"
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        if e.errno == errno.ENOSPC:
            raise PipelineError(f"{path}: no space left on device; free disk space and rerun "
                                f"(finished files are kept, the step resumes)") from e
        raise
    except BaseException:
        _remove(tmp)
        raise


def result_folder(name, result_dir):
    """A folder given as a name under result/ or as a path."""
    return name if os.path.isabs(name) or os.sep in name else os.path.join(result_dir, name)


def require_files(folder, ids, ext, what, producer):
    """Fail before any work, naming the first missing <id><ext> of `folder` and the step
    that writes it."""
    missing = [i for i in ids if not os.path.exists(os.path.join(folder, f"{i}{ext}"))]
    if missing:
        raise PipelineError(f"{folder}: {len(missing)} of {len(ids)} {what} missing (first: "
                            f"{missing[0]}); run step {producer} first")


def remove_stale_tmp(folder):
    """Delete temporary files that a killed run left in `folder` (their writer's pid is
    gone); files of live writers, such as other ranks, are left alone."""
    if not os.path.isdir(folder):
        return 0
    n = 0
    for f in os.listdir(folder):
        parts = f.split(".")
        if len(parts) >= 3 and "tmp" in parts and parts[parts.index("tmp") - 1].isdigit():
            pid = int(parts[parts.index("tmp") - 1])
            if pid != os.getpid() and not _alive(pid):
                _remove(os.path.join(folder, f))
                n += 1
    return n


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(p):
    with contextlib.suppress(FileNotFoundError):
        os.remove(p)
