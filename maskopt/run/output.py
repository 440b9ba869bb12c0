"""The output contract of every command that writes: check first, write beside, rename last.

    target = check_dir(out, overwrite, inputs=[model, calib, ...])   # before any work
    with atomic_dir(target, overwrite, inputs=...) as tmp:            # after the work
        ... write into tmp ...                                        # renamed onto ``out`` on success

The same for one file (``check_file`` / ``atomic_file``). A target is refused before any work when it is a
symbolic link (dangling or not), the input itself or inside an input (or above one), an existing file
(unless ``--overwrite`` names exactly that file), an existing folder without ``--overwrite``, a folder that
maskopt did not write, or under a parent that cannot be created or written. A folder counts as maskopt's only
when its marker ``.maskopt-output`` lists every file in it (name and size) and carries a random id that the
folder's own records (report, export info, results) repeat, so a copied report is not enough. Results are
written into a temporary sibling ``.NAME.tmp-PID-*`` and renamed into place at the end; temporaries that a
killed run left for the same output are removed when the next run starts.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

MARKER = ".maskopt-output"
# files in which a maskopt output repeats its id (the report, an export's info, a training run's results)
RECORDS = ("maskopt_report.json", "maskopt_export.json", "results.json")


class OutputError(OSError):
    """The output cannot be written, or may not be replaced."""


class OutputExistsError(OutputError, FileExistsError):
    pass


def _tmp_prefix(out: Path) -> str:
    return f".{out.name}.tmp-"


def _new_tmp_name(out: Path) -> str:
    return f"{_tmp_prefix(out)}{os.getpid()}-{uuid.uuid4().hex[:8]}"


# ---- checks -------------------------------------------------------------------------------
def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_common(out: str | Path | None, what: str, inputs: Iterable[str | Path | None]) -> Path:
    if out is None or str(out).strip() == "":
        raise OutputError(f"no output {what} given: pass --out")
    out = Path(out).expanduser()
    if out.is_symlink():
        target = os.readlink(out)
        raise OutputError(f"--out {out} is a symbolic link (to {target}{'' if out.exists() else ', which does not exist'});"
                          " maskopt neither writes through nor replaces a link: name the real path")
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or resolved == Path(resolved.anchor):
        raise OutputError(f"--out {out} is the current folder or one above it; name a new {what}, e.g. --out pruned")
    for inp in inputs:
        if inp is None or str(inp) == "":
            continue
        ip = Path(inp).expanduser()
        if not ip.exists():
            continue
        ip = ip.resolve()
        if _inside(resolved, ip):
            where = "is" if resolved == ip else "lies inside"
            raise OutputError(f"--out {out} {where} the input {inp}; write the result somewhere else")
        if _inside(ip, resolved):
            raise OutputError(f"--out {out} holds the input {inp}; replacing it would delete that input: "
                              "write the result somewhere else")
    return out


def _check_parent(out: Path) -> None:
    """The nearest existing ancestor must be a folder in which a file can be created (nothing is left)."""
    probe = out.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"cannot create {out}: {probe} is a file, not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=_tmp_prefix(out) + "probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise OutputError(f"cannot write into {probe} (for --out {out}): {e.strerror or e}") from None


def maskopt_wrote(folder: str | Path) -> tuple[bool, str]:
    """(True, "") when ``folder`` is exactly as a maskopt run left it, else (False, why not)."""
    folder = Path(folder)
    try:
        marker = json.loads((folder / MARKER).read_text())
        oid, listed = marker["id"], marker["files"]
        assert isinstance(oid, str) and isinstance(listed, dict)
    except FileNotFoundError:
        return False, f"it has no {MARKER} marker"
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return False, f"its {MARKER} marker is not one that maskopt wrote"
    present = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if not p.is_dir() or p.is_symlink()}
    present.pop(MARKER, None)
    foreign = sorted(n for n, p in present.items() if n not in listed or p.is_symlink()
                     or p.stat().st_size != listed[n])
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        return False, f"it holds files that maskopt did not write (or that changed since): {shown}"
    for rec in RECORDS:
        p = folder / rec
        if p.is_file():
            try:
                recorded = json.loads(p.read_text()).get("output_id")
            except (OSError, ValueError, AttributeError):
                recorded = None
            if recorded != oid:
                return False, f"its {rec} does not belong to this output (its output id differs from the marker's)"
    return True, ""


def check_dir(out: str | Path | None, overwrite: bool = False, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse, before any work, an output folder that cannot be written or may not be replaced."""
    out = _check_common(out, "folder", inputs)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is a file, not a folder")
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"output folder {out} exists; pass --overwrite to replace it")
        ok, why = maskopt_wrote(out)
        if not ok:
            raise OutputError(f"--overwrite refuses to replace {out}: it is not a maskopt output ({why}), so it may "
                              "hold your own files. "
                              "Remove it yourself or choose another --out")
    _check_parent(out)
    return out


def check_file(out: str | Path | None, overwrite: bool = False, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse, before any work, an output file that cannot be written; an existing file is replaced only with
    ``overwrite`` (the user named that exact file)."""
    out = _check_common(out, "file", inputs)
    if out.is_dir():
        raise OutputError(f"--out {out} is a folder; name a file to write, e.g. {out / 'certificates.json'}")
    if out.exists() and not out.is_file():
        raise OutputError(f"--out {out} exists and is not a regular file")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output file {out} exists; pass --overwrite to replace it")
    _check_parent(out)
    return out


# ---- stale temporaries --------------------------------------------------------------------
_PID = re.compile(r"^(\d+)-")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(out: str | Path) -> list[Path]:
    """Remove the temporaries (``.NAME.tmp-*``, ``.NAME.old-*``) that killed runs of this output left, but
    never those of a run that is still going."""
    out = Path(out)
    if not out.parent.is_dir():
        return []
    stale = []
    for prefix in (_tmp_prefix(out), f".{out.name}.old-"):
        for p in out.parent.glob(glob_escape(prefix) + "*"):
            m = _PID.match(p.name[len(prefix):] + "-")
            if m and _alive(int(m.group(1))):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            stale.append(p)
    return stale


def glob_escape(s: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", s)


# ---- writing ------------------------------------------------------------------------------
def new_output_id() -> str:
    return uuid.uuid4().hex


def output_id(folder: str | Path) -> str | None:
    """The id of the output being written in (or already written to) ``folder``."""
    try:
        return json.loads((Path(folder) / MARKER).read_text())["id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_marker(folder: Path, oid: str, files: dict[str, int]) -> None:
    (folder / MARKER).write_text(json.dumps({"id": oid, "files": files, "note": "written by maskopt; "
                                             "--overwrite may replace this folder while it holds only these files"},
                                            indent=1, sort_keys=True) + "\n")


def seal(folder: Path) -> None:
    """Record every file now in ``folder`` in its marker (the id stays)."""
    oid = output_id(folder) or new_output_id()
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    files.pop(MARKER, None)
    _write_marker(folder, oid, files)


def start_dir(out: Path) -> Path:
    """A fresh temporary sibling of ``out`` (usual permissions, not mkdtemp's 0700) with a new id."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(_new_tmp_name(out))
    tmp.mkdir()
    _write_marker(tmp, new_output_id(), {})
    return tmp


def publish_dir(tmp: Path, out: Path) -> None:
    """Seal ``tmp`` and rename it onto ``out`` (an earlier maskopt output there is replaced)."""
    seal(tmp)
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


@contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False, inputs: Iterable[str | Path | None] = ()) -> Iterator[Path]:
    """Yield a temporary folder next to ``out``; on success it replaces ``out`` in one rename.

    A failed or interrupted run leaves ``out`` as it was (or absent), never half-written."""
    out = check_dir(out, overwrite, inputs)
    tmp = start_dir(out)
    try:
        yield tmp
        check_dir(out, overwrite, inputs)  # nothing changed the target while the work ran
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(out: str | Path, overwrite: bool = False, inputs: Iterable[str | Path | None] = ()) -> Iterator[Path]:
    """Yield a temporary file path next to ``out``; on success it replaces ``out`` in one rename."""
    out = check_file(out, overwrite, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(_new_tmp_name(out))
    try:
        yield tmp
        check_file(out, overwrite, inputs)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_output(out: str | Path, text: str, overwrite: bool = False,
                      inputs: Iterable[str | Path | None] = ()) -> Path:
    with atomic_file(out, overwrite, inputs) as tmp:
        tmp.write_text(text)
    return Path(out)
