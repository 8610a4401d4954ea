"""Where a command may write: the users' files are sacred. Bottom of the import graph, beside `expclip.inputs`.

Every command that writes checks its output here BEFORE any work starts, and gets a one-line `OutputError` when the
output is refused:

- never an input, never inside an input folder (the next run would read the outputs as inputs), never a folder that
  holds an input;
- a folder output must be new, empty, or an earlier output of the same command: one whose marker file
  (`.expclip-output.json`, written at the end of every run) lists every file in it. Anything else (the current
  folder with files in it, an unrelated folder, a marked folder a user has added files to) is refused;
- commands that replace their output (convert, prepare, train) need `--overwrite` to replace such an earlier
  output, and then delete only the files it lists; commands that add to it (evaluate, predict's --annotate and
  timelines) reuse it;
- a file output (predict --output) is never an input, never a folder, and an existing file is replaced only with
  `--overwrite`.
"""

import json
import os
from contextlib import contextmanager
from pathlib import Path

MARKER = ".expclip-output.json"  # {"command": ..., "files": [relative paths this command wrote]}


class OutputError(ValueError):
    """An output the command must not write: the message is one line naming it and what to do instead."""


def _resolved(path) -> Path:
    # os.path.realpath, not Path.resolve: a looping symlink among the inputs must not raise (it is skipped later).
    return Path(os.path.realpath(Path(path).expanduser()))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _files(folder: Path) -> set[str]:
    """Every file and link under `folder` (links not followed), relative, the marker left out."""
    found = set()
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            found.add(Path(root, name).relative_to(folder).as_posix())
    found.discard(MARKER)
    return found


def own_files(folder, command: str) -> set[str] | None:
    """The files an earlier run of `command` wrote into `folder`, from its marker; None when it has no such marker."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
        return set(marker["files"]) if marker.get("command") == command else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _check_inputs(target: Path, name: str, inputs) -> None:
    for source in inputs or ():
        if source is None:
            continue
        source_path = _resolved(source)
        same = target.exists() and source_path.exists() and os.path.samefile(target, source_path)
        if target == source_path or same:
            raise OutputError(f"{name}: is an input of this command; choose another output")
        if source_path.is_dir() and _inside(target, source_path):
            raise OutputError(f"{name}: is inside the input folder {source}; choose an output outside it")
        if _inside(source_path, target):
            raise OutputError(f"{name}: holds the input {source}; choose another output")


def check_output_folder(folder, command: str, inputs=(), overwrite: bool = False, reuse: bool = False,
                        option: str = "--output") -> Path:
    """Refuse, with a one-line `OutputError`, a folder `command` must not write into; returns it resolved.

    `reuse`: the command adds to an earlier output of its own (evaluate, annotations), no `--overwrite` needed."""
    target, name = _resolved(folder), f"{option} {folder}"
    _check_inputs(target, name, inputs)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{name}: is a file, not a folder; choose a new or empty folder")
    if not target.exists() or not any(target.iterdir()):
        return target
    own = own_files(target, command)
    where = "is the current folder and holds files" if target == Path.cwd().resolve() else "is not empty"
    if own is None:
        raise OutputError(f"{name}: {where} and is not an earlier output of expclip {command}; "
                          "choose a new or empty folder")
    foreign = sorted(_files(target) - own)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(f"{name}: holds files expclip {command} did not write ({shown}); "
                          "choose a new or empty folder")
    if not (reuse or overwrite):
        raise OutputError(f"{name}: holds an earlier output of expclip {command}; pass --overwrite to replace it, "
                          "or choose another folder")
    return target


def check_output_file(path, inputs=(), overwrite: bool = False, option: str = "--output") -> Path:
    """Refuse, with a one-line `OutputError`, a file the command must not write: an input, a folder, or (without
    `overwrite`) an existing file. Returns it resolved."""
    target, name = _resolved(path), f"{option} {path}"
    if target.is_dir():
        raise OutputError(f"{name}: is a folder; give a file name")
    blocking = next((parent for parent in target.parents if parent.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise OutputError(f"{name}: {blocking} is a file, not a folder; choose another output")
    _check_inputs(target, name, [source for source in inputs or () if not _resolved(source).is_dir()])
    if any(_resolved(source).is_dir() and _inside(target, _resolved(source)) for source in inputs or ()):
        # new or not: the next run over that folder would read it as an input, or stop at it
        raise OutputError(f"{name}: is a file inside an input folder; choose another output")
    if target.exists() and not overwrite:
        raise OutputError(f"{name}: already exists; pass --overwrite to replace it, or choose another file")
    return target


def clear_output(folder, command: str) -> None:
    """Delete the files an earlier run of `command` wrote into `folder` (and the folders they leave empty), nothing
    else: call after `check_output_folder(..., overwrite=True)`."""
    folder = Path(folder)
    for relative in sorted(own_files(folder, command) or (), reverse=True):
        path = folder / relative
        if path.is_symlink() or path.is_file():
            path.unlink()
    for root, dirs, _ in os.walk(folder, topdown=False):
        for name in dirs:
            directory = Path(root, name)
            if not directory.is_symlink() and not any(directory.iterdir()):
                directory.rmdir()
    (folder / MARKER).unlink(missing_ok=True)


def mark_output(folder, command: str) -> None:
    """Record that every file now in `folder` was written by `command` (the folder was new, empty, or its own)."""
    folder = Path(folder)
    if folder.is_dir():
        marker = {"command": command, "files": sorted(_files(folder))}
        (folder / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")


def _holder(lock: Path) -> dict | None:
    """The {"pid", "command"} of a live process holding `lock`; None when the lock is stale (its process is gone, or
    the file is unreadable or half-written)."""
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
        pid = int(holder["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    return holder if pid != os.getpid() else None


@contextmanager
def output_lock(output: Path | str, command: str):
    """Hold `<output>.lock` while a run writes `output`: a second run writing the same output at once is refused with
    a one-line `OutputError` naming the first one's PID; a lock left by a process that is gone is taken over. The lock
    file holds {"pid": ..., "command": ...} and is removed on exit."""
    output = Path(output).expanduser()
    lock = output.with_name(output.name + ".lock") if output.name else Path(os.path.realpath(output) + ".lock")
    record = json.dumps({"pid": os.getpid(), "command": command}).encode("utf-8")
    for attempt in range(3):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder is not None:
                raise OutputError(f"{output} is being written by another `expclip {holder.get('command', command)}` "
                                  f"run (PID {holder['pid']}); wait for it to finish, or choose another output")
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        except FileNotFoundError:
            lock.parent.mkdir(parents=True, exist_ok=True)
            continue
        except OSError as error:
            raise OutputError(f"{output}: cannot create the lock file {lock} ({error.strerror or error})")
        with os.fdopen(descriptor, "wb") as file:
            file.write(record)
        break
    else:
        raise OutputError(f"{output}: cannot take the lock file {lock}; another run keeps taking it")
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def check_apart(folder, option: str, others: dict) -> None:
    """Refuse (one-line `OutputError`) a folder that is, lies inside, or holds one of `others` (option -> path, None
    skipped): e.g. a feature cache in the image folder or the output folder."""
    target = _resolved(folder)
    for other_option, other in others.items():
        if other is None:
            continue
        other_path = _resolved(other)
        if target == other_path or _inside(target, other_path) or _inside(other_path, target):
            where = "is" if target == other_path else "is inside" if _inside(target, other_path) else "holds"
            raise OutputError(f"{option} {folder}: {where} the {other_option} folder {other}; give it a folder of "
                              "its own")
